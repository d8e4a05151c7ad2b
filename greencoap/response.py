"""What users hold: :class:`Response` and :class:`Request` (layer 4).

A :class:`Response` is both what a client call returns and what a server
handler may return; a :class:`Request` is what a server handler receives.
Both are thin views over a codec :class:`~greencoap.message.Message`.
"""

from __future__ import annotations

import json as _json
from typing import Any

from .codes import CODES, Code, Type, is_success
from .dtls_channel import secure_identity
from .endpoint import display_peer
from .errors import ResponseError
from .message import Message
from .options import Block, ContentFormat, OptionList, OptionNumber, encode_uint

JSON = int(ContentFormat.JSON)
CBOR = int(ContentFormat.CBOR)


TEXT = int(ContentFormat.TEXT_PLAIN)
_ACK = Type.ACK


class Response:
    """A CoAP response: ``code``, ``payload`` and ``options``.

    As a handler's return value: ``Response(Code.CONTENT, "text")`` (a str
    payload is UTF-8 with content format text/plain unless given).  As a
    client result it also carries ``peer`` (who answered), ``mtype``,
    ``token`` and the raw ``message``.
    """

    __slots__ = ("code", "payload", "_options", "_peer", "message", "validated")

    def __init__(
        self,
        code: int = Code.CONTENT,
        payload: bytes | str = b"",
        *,
        content_format: int | None = None,
        options: list[tuple[int, bytes]] | None = None,
        max_age: int | None = None,
        etag: bytes | None = None,
        location_path: str | list[str] | None = None,
        location_query: str | list[str] | None = None,
    ) -> None:
        self.code = CODES[code] if code.__class__ is int or code.__class__ is Code else Code(code)
        if payload.__class__ is not bytes:
            if isinstance(payload, str):
                payload = payload.encode()
                if content_format is None:
                    content_format = TEXT
            else:
                payload = bytes(payload)
        self.payload = payload
        opts = self._options = OptionList(options) if options else OptionList()
        self._peer: tuple | None = None
        self.message: Message | None = None
        #: a client's cached representation that the server confirmed with
        #: 2.03 Valid (``Client.get(uri, validate=True)``)
        self.validated = False
        if content_format is not None:
            if opts:
                self._set(OptionNumber.CONTENT_FORMAT, content_format)
            else:
                opts.append((12, encode_uint(content_format)))
        if max_age is not None:
            self._set(OptionNumber.MAX_AGE, max_age)
        if etag is not None:
            self.options.append((OptionNumber.ETAG, etag))
        if location_path is not None:
            if isinstance(location_path, str):
                location_path = [p for p in location_path.strip("/").split("/") if p]
            self.options += [(OptionNumber.LOCATION_PATH, p.encode()) for p in location_path]
        if location_query is not None:
            if isinstance(location_query, str):
                location_query = [q for q in location_query.split("&") if q]
            self.options += [(OptionNumber.LOCATION_QUERY, q.encode()) for q in location_query]

    def _set(self, number: int, value: int) -> None:
        self._options = OptionList(o for o in self._options if o[0] != number)
        self.options.append((number, encode_uint(value)))

    @classmethod
    def from_message(cls, msg: Message, peer: tuple | None = None) -> Response:
        """Wrap a received response message."""
        r = cls.__new__(cls)
        r.code = msg.code
        r.payload = msg.payload
        r._options = OptionList(msg.options)
        r._peer = peer
        r.message = msg
        r.validated = False
        return r

    @property
    def peer(self) -> tuple[str, int] | None:
        """Who answered, as ``(host, port)`` (IPv4-mapped addresses unmapped)."""
        return display_peer(self._peer) if self._peer else None

    def to_message(self) -> Message:
        """The message a server sends for this response (type/MID/token set later)."""
        return Message(_ACK, self.code, 0, b"", self._options, self.payload)

    @property
    def options(self) -> OptionList:
        """The raw ``[(number, value), ...]`` list, also readable by name
        (``options.etag``, ``options.get(number)``: :class:`OptionList`); a
        list assigned here becomes one."""
        return self._options

    @options.setter
    def options(self, value: list) -> None:
        self._options = value if value.__class__ is OptionList else OptionList(value)

    @property
    def content_format(self) -> int | None:
        """The Content-Format option as an int, or None when absent."""
        return self._options.content_format

    @property
    def max_age(self) -> int | None:
        return self._options.max_age

    @property
    def etag(self) -> bytes | None:
        """The ETag option, or None."""
        return self._options.etag

    @property
    def location_path(self) -> list[str]:
        """Location-Path segments (a 2.01 Created says where)."""
        return self._options.location_path

    @property
    def location_query(self) -> list[str]:
        """Location-Query items."""
        return self._options.location_query

    @property
    def location(self) -> str:
        """Location-Path and Location-Query as a relative reference
        (``"/a/b?x=1"``), ``""`` when there is none."""
        path, query = self.location_path, self.location_query
        if not path and not query:
            return ""
        return "/" + "/".join(path) + ("?" + "&".join(query) if query else "")

    @property
    def block2(self) -> Block | None:
        """The Block2 option (on a block of a block-wise body), or None."""
        return self._options.block2

    @property
    def observe(self) -> int | None:
        """The Observe option (a notification's sequence number), or None."""
        return self._options.observe

    @property
    def size2(self) -> int | None:
        """The Size2 option (the whole body's size), or None."""
        return self._options.size2

    @property
    def text(self) -> str:
        """The payload decoded as UTF-8 (invalid bytes replaced)."""
        return self.payload.decode("utf-8", "replace")

    def json(self) -> Any:
        """The payload parsed as JSON."""
        return _json.loads(self.payload)

    @property
    def ok(self) -> bool:
        """True for a 2.xx response."""
        return is_success(self.code)

    def raise_for_status(self) -> Response:
        """Raise :class:`ResponseError` for 4.xx/5.xx; return self otherwise."""
        if self.code >= 128:
            raise ResponseError(self)
        return self

    @property
    def mtype(self) -> Type | None:
        return self.message.mtype if self.message is not None else None

    @property
    def token(self) -> bytes | None:
        return self.message.token if self.message is not None else None

    def __repr__(self) -> str:
        return f"<Response {self.code} {len(self.payload)}B>"


class Request:
    """What a server handler receives.

    ``method`` (a :class:`Code`), ``path`` (``"/a/b"``), ``params`` (from
    ``:name`` route segments), ``query`` (a dict of ``k=v`` items; a bare
    ``k`` maps to ``""``), ``payload``, ``options``, ``peer``,
    ``content_format``, ``accept``, the raw ``message`` and, over DTLS, the
    PSK ``identity`` that authenticated it.  For an observable resource,
    ``observing`` tells why the handler runs: ``"register"`` (an Observe
    registration), ``"notify"`` (a re-render for an observer after
    ``Server.notify``) or None (a plain request).
    """

    __slots__ = ("message", "peer", "params", "_path", "_query", "observing")

    def __init__(self, message: Message, peer: tuple, params: dict | None = None) -> None:
        self.message = message
        self.peer = peer
        self.params = params or {}
        self._path: str | None = None
        self._query: dict | None = None
        self.observing: str | None = None

    @property
    def method(self) -> Code:
        return Code(self.message.code)

    @property
    def path(self) -> str:
        if self._path is None:
            self._path = "/" + "/".join(self.message.uri_path)
        return self._path

    @property
    def query(self) -> dict[str, str]:
        if self._query is None:
            q = {}
            for item in self.message.uri_query:
                k, _, v = item.partition("=")
                q[k] = v
            self._query = q
        return self._query

    @property
    def payload(self) -> bytes:
        return self.message.payload

    @property
    def text(self) -> str:
        return self.message.payload.decode("utf-8", "replace")

    def json(self) -> Any:
        return _json.loads(self.message.payload)

    @property
    def options(self) -> list[tuple[int, bytes]]:
        return self.message.options

    @property
    def content_format(self) -> int | None:
        return self.message.content_format

    @property
    def accept(self) -> int | None:
        """The Content-Format the client wants (Accept), or None."""
        return self.message.accept

    @property
    def etags(self) -> list[bytes]:
        """The ETags the client holds (a GET asks: is one of them still
        current?  Then 2.03 Valid)."""
        return self.message.opts(OptionNumber.ETAG)

    @property
    def etag(self) -> bytes | None:
        """The first ETag of the request, or None."""
        return self.message.etag

    @property
    def if_match(self) -> list[bytes] | None:
        """If-Match values (None: no If-Match; ``[b""]``: "if it exists")."""
        values = self.message.opts(OptionNumber.IF_MATCH)
        return values or None

    @property
    def if_none_match(self) -> bool:
        """True for If-None-Match ("only if it does not exist yet")."""
        return self.message.if_none_match

    @property
    def block1(self) -> Block | None:
        return self.message.block1

    @property
    def block2(self) -> Block | None:
        return self.message.block2

    @property
    def observe(self) -> int | None:
        """Observe (0 registers, 1 deregisters), or None."""
        return self.message.observe

    @property
    def size1(self) -> int | None:
        return self.message.size1

    @property
    def confirmable(self) -> bool:
        return self.message.mtype == Type.CON

    @property
    def identity(self) -> str | None:
        """The PSK identity that authenticated this request over DTLS
        (``coaps://``); None for plain CoAP."""
        return secure_identity(self.peer)

    @property
    def remote(self) -> tuple[str, int]:
        """The peer as ``(host, port)`` with IPv4-mapped addresses unmapped."""
        return display_peer(self.peer)

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.path} from {self.remote}>"


def cbor_available() -> bool:
    """True when ``cbor2`` can be imported (CBOR representations of JSON
    results are then served to clients that ask for them)."""
    global _cbor
    if _cbor is None:
        try:
            import cbor2
        except ImportError:
            _cbor = False
        else:
            _cbor = cbor2
    return _cbor is not False


_cbor: Any = None


def first_value(gen: Any) -> Any:
    """The first value of an observable (generator) handler's generator,
    which is closed (a request that does not register reads it once)."""
    try:
        first = next(gen)
    except StopIteration as stop:
        first = stop.value
    gen.close()
    return first


def as_response(result: Any, method: int, accept: int | None = None) -> Response:
    """Turn a handler's return value into a :class:`Response`.

    ``Response`` as is; ``bytes``/``str`` → 2.05 (GET/FETCH) or the method's
    success code; ``dict``/``list`` → JSON, or CBOR (RFC 8949, content format
    60) when ``accept`` asks for it and ``cbor2`` is installed; ``None`` →
    the method's default success code with no payload.
    """
    if result.__class__ is Response:
        return result
    code = DEFAULT_SUCCESS.get(method, Code.CONTENT)
    if result is None:
        return Response(code)
    if isinstance(result, (bytes, bytearray, memoryview)):
        return Response(code, bytes(result))
    if isinstance(result, str):
        return Response(code, result)
    if isinstance(result, (dict, list)):
        if accept == CBOR and cbor_available():
            return Response(code, _cbor.dumps(result), content_format=CBOR)
        return Response(code, _json.dumps(result).encode(), content_format=JSON)
    if isinstance(result, Response):
        return result
    raise TypeError(f"a handler returned {type(result).__name__}; return Response/bytes/str/dict")


DEFAULT_SUCCESS = {
    Code.GET: Code.CONTENT,
    Code.FETCH: Code.CONTENT,
    Code.POST: Code.CHANGED,
    Code.PUT: Code.CHANGED,
    Code.DELETE: Code.DELETED,
    Code.PATCH: Code.CHANGED,
    Code.IPATCH: Code.CHANGED,
}
