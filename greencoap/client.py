"""The blocking CoAP client (layer 4).

``Client.get(uri)`` parks only the calling greenlet: any number of greenlets
can share one client and their requests run concurrently over one socket.
The module-level :func:`get`, :func:`post`, :func:`put`, :func:`delete`,
:func:`fetch`, :func:`patch`, :func:`ipatch`, :func:`ping` and
:func:`observe` use a default client per thread.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from functools import partial
from time import monotonic
from typing import Any

from .codes import Code, Type, is_success
from .dtls_channel import DtlsChannel, client_credentials
from .endpoint import DEFAULT_SOCKET_BUFFER, Endpoint, make_udp_socket, peer_key
from .errors import ClientClosedError, CoapError, RequestTimeoutError, ResetError, UriError
from .hub import (
    HubThread,
    Timeout,
    acquire_hub_thread,
    get_hub,
    os_lock,
    os_thread_ident,
    os_thread_local,
    release_hub_thread,
)
from .linkformat import Link, filter_links, parse_link_format
from .message import Message
from .observation import Observation
from .options import Block, OptionNumber, content_format_number, encode_uint
from .protocol.blockwise import Block1Uploader, Block2Assembler, BlockwiseError, szx_for
from .protocol.messaging import TransmissionParameters
from .response import Response
from .uri import URI, compose_uri, is_ip_literal, parse_uri

_URI_CACHE_SIZE = 512
#: Seconds a thread waits beyond its call's own timeout for the hub thread.
_REMOTE_MARGIN = 10.0
_remote_lock = os_lock()
DEFAULT_MAX_BODY = 8 * 1024 * 1024
_BLOCK_OPTIONS = frozenset(
    (OptionNumber.BLOCK1, OptionNumber.BLOCK2, OptionNumber.SIZE1, OptionNumber.ECHO)
)


def _send(ep: Endpoint, msg: Message, peer: tuple, timeout: float) -> Message:
    """One exchange, with an Echo challenge answered (see :func:`_answer_echo`)."""
    t0 = monotonic()
    reply = ep.request(msg, peer, timeout)
    if reply.code == Code.UNAUTHORIZED:
        reply = _answer_echo(ep, msg, reply, peer, timeout - (monotonic() - t0))
    return reply


def _answer_echo(ep: Endpoint, msg: Message, reply: Message, peer: tuple, left: float) -> Message:
    """A 4.01 carrying an Echo option (RFC 9175 §2.4: the server wants proof of
    freshness) is answered once by repeating the request with that Echo value."""
    echo = reply.opt(OptionNumber.ECHO)
    if echo is None:
        return reply
    if left <= 0:
        raise RequestTimeoutError("the call's timeout expired before the Echo round trip")
    options = [o for o in msg.options if o[0] != OptionNumber.ECHO]
    retry = Message(msg.mtype, msg.code, 0, b"", options + [(OptionNumber.ECHO, echo)], msg.payload)
    return ep.request(retry, peer, left)


def _left(deadline: float) -> float:
    """Seconds left before ``deadline``; a timeout error when none are."""
    left = deadline - monotonic()
    if left <= 0:
        raise RequestTimeoutError("the call's timeout expired during a block-wise transfer")
    return left


_CON, _NON = Type.CON, Type.NON
# globals for the per-request path: on Python 3.11 each ``Code.NAME`` lookup
# goes through the enum metaclass's __getattr__ hook (about 0.13 µs)
_GET, _POST, _PUT, _DELETE = Code.GET, Code.POST, Code.PUT, Code.DELETE
_UNAUTHORIZED = Code.UNAUTHORIZED


def _template(link: Link) -> bool:
    """Does ``link`` name a route template rather than a resource (a
    ``:param`` or ``*rest`` segment, or an RFC 6570 ``{var}``)?  Such links
    are never returned by :meth:`Client.discover`."""
    path = link.target.split("?", 1)[0]
    return "{" in path or any(seg[:1] in (":", "*") for seg in path.split("/")[1:])


def _method(method: int | str) -> Code:
    """A request method from a :class:`Code`, an int or a name like ``"get"``."""
    if isinstance(method, str):
        try:
            code = Code[method.upper()]
        except KeyError:
            raise ValueError(f"unknown CoAP method {method!r}") from None
    else:
        code = Code(method)
    if not 1 <= code < 32:
        raise ValueError(f"{method!r} is not a request method")
    return code


_DNS_TTL = 60.0


def check_timeout(timeout: float) -> float:
    """``timeout`` as a float; ValueError when it is negative or not a number."""
    try:
        value = float(timeout)
    except (TypeError, ValueError):
        raise TypeError(f"a timeout is a number of seconds, not {timeout!r}") from None
    if not value >= 0:  # also NaN
        raise ValueError(f"a timeout cannot be negative: {timeout!r}")
    return value


def request_body(payload: Any, content_format: int | str | None) -> tuple[bytes, int | None]:
    """A request payload as bytes and its Content-Format: ``str`` is UTF-8
    (text/plain unless given), bytes-like is sent as it is, a dict, list,
    number or bool is JSON (application/json unless given); anything else
    is a TypeError (``bytes(5)`` would have sent five NUL bytes)."""
    if content_format is not None and content_format.__class__ is not int:
        content_format = content_format_number(content_format)
    if isinstance(payload, str):
        return payload.encode(), 0 if content_format is None else content_format
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload), content_format
    if isinstance(payload, (dict, list, tuple, int, float)):  # bool is an int
        try:
            body = json.dumps(payload, separators=(",", ":")).encode()
        except (TypeError, ValueError) as e:
            raise TypeError(f"payload cannot be sent as JSON: {e}") from None
        return body, 50 if content_format is None else content_format
    raise TypeError(
        "payload is bytes, str or a JSON value (dict, list, number, bool), "
        f"not {type(payload).__name__}"
    )


class Client:
    """A CoAP client: blocking calls, concurrent across greenlets.

    ``timeout`` bounds every call (a per-call ``timeout=`` overrides it);
    ``None`` means the RFC 7252 schedule, MAX_TRANSMIT_WAIT (93 s with the
    default parameters).  ``ack_timeout``, ``ack_random_factor`` and
    ``max_retransmit`` are the §4.8 transmission parameters; ``nstart`` is the
    number of requests in flight per peer (excess requests wait their turn;
    ``nstart=1`` is strict RFC 7252 §4.7).  The socket is created on first use
    and released by :meth:`close` (or leaving a ``with`` block).

    Block-wise transfer (RFC 7959) is automatic: a payload larger than
    ``block_size`` (default 1,024) is uploaded with Block1, and a Block2
    response is fetched block by block and returned whole, up to
    ``max_body_size`` bytes.  Setting ``block_size`` also asks servers for
    blocks of that size (early negotiation).

    ``coaps://`` URIs go over DTLS 1.2 with a pre-shared key (RFC 7252
    §9.1.3.1, TLS_PSK_WITH_AES_128_CCM_8): ``psk=("identity", b"key")``, or a
    callable ``host -> (identity, key)`` for per-device keys.  One session per
    peer is set up on first use, reused by later requests, and closed with
    close_notify by :meth:`close`.  A failed handshake (wrong key, unknown
    identity, no answer) raises :class:`~greencoap.errors.HandshakeError`.

    ``trace(direction, datagram, peer)`` (``"out"`` or ``"in"``) hears of
    every CoAP message the client sends and receives, after DTLS decryption
    (the command line's ``-v``); it runs on the hub and must not block.
    """

    def __init__(
        self,
        timeout: float | None = None,
        *,
        ack_timeout: float = 2.0,
        ack_random_factor: float = 1.5,
        max_retransmit: int = 4,
        nstart: int = 1024,
        token_length: int = 4,
        bind: tuple[str, int] | None = None,
        buffer_size: int | None = DEFAULT_SOCKET_BUFFER,
        block_size: int | None = None,
        max_body_size: int = DEFAULT_MAX_BODY,
        psk: tuple[str | bytes, str | bytes] | Callable[[str], tuple] | None = None,
        trace: Callable[[str, bytes, Any], None] | None = None,
    ) -> None:
        self.params = TransmissionParameters(
            ack_timeout=ack_timeout,
            ack_random_factor=ack_random_factor,
            max_retransmit=max_retransmit,
            nstart=nstart,
        )
        self.timeout = self.params.max_transmit_wait if timeout is None else check_timeout(timeout)
        self.token_length = token_length
        self.block_size = block_size
        if block_size is not None:
            szx_for(block_size)  # validate early: 16..1024, a power of two
        self.max_body_size = max_body_size
        self.bind = bind
        self.buffer_size = buffer_size
        # the sockets of the thread that made the client (its "home"), and of the
        # hub thread that carries out the calls made from every other thread
        self._home = os_thread_ident()
        self._endpoint: Endpoint | None = None
        self._secure: Endpoint | None = None
        self._remote: HubThread | None = None
        self._remote_endpoint: Endpoint | None = None
        self._remote_secure: Endpoint | None = None
        if psk is not None and not callable(psk):
            client_credentials(psk)  # validate early
        self.psk = psk
        self.trace = trace
        self._closed = False
        self._uris: dict[str, tuple[URI, list]] = {}
        #: representations kept for ``validate=True`` (least recently fetched first)
        self._validators: dict[str, Response] = {}
        self._literal_peers: dict[str, tuple] = {}
        self._dns: dict[tuple[str, int], tuple[float, tuple]] = {}

    # -- plumbing ------------------------------------------------------
    @property
    def endpoint(self) -> Endpoint:
        """The endpoint (socket + message layer) of the calling thread's side
        of the client (see :class:`Client` on threads), created on first use."""
        home = os_thread_ident() == self._home
        ep = self._endpoint if home else self._remote_endpoint
        if ep is None:
            if self._closed:
                raise ClientClosedError("the client is closed")
            host, port = self.bind if self.bind else (None, 0)
            if not home:
                port = 0  # the home socket has the port asked for
            sock = make_udp_socket(host, port, buffer_size=self.buffer_size)
            ep = Endpoint(sock, params=self.params, token_length=self.token_length, hub=get_hub())
            ep.trace = self.trace
            if home:
                self._endpoint = ep
            else:
                self._remote_endpoint = ep
        return ep

    @property
    def secure_endpoint(self) -> Endpoint:
        """The endpoint for ``coaps://`` (its own socket, DTLS), created on first use."""
        home = os_thread_ident() == self._home
        ep = self._secure if home else self._remote_secure
        if ep is None:
            if self._closed:
                raise ClientClosedError("the client is closed")
            if self.psk is None:
                raise UriError("coaps:// needs a pre-shared key: Client(psk=(identity, key))")
            host = self.bind[0] if self.bind else None
            sock = make_udp_socket(host, 0, buffer_size=self.buffer_size)
            hub = get_hub()
            channel = partial(
                DtlsChannel, hub, role="client", psk=None if callable(self.psk) else self.psk
            )
            ep = Endpoint(
                sock, params=self.params, token_length=self.token_length, hub=hub, channel=channel
            )
            ep.trace = self.trace
            if home:
                self._secure = ep
            else:
                self._remote_secure = ep
        return ep

    def endpoint_for(self, uri: URI) -> Endpoint:
        """The endpoint that carries requests for ``uri`` (plain or DTLS)."""
        if uri.scheme == "coaps":
            return self.secure_endpoint
        return self.endpoint

    # -- other threads ---------------------------------------------------
    def _elsewhere(self, fn: Callable, *args: Any, timeout: float | None = None) -> Any:
        """Carry out ``fn(*args)`` for a thread that is not the client's home:
        on the shared hub thread (started on first use), where this client has
        sockets of its own; the calling thread blocks until it is done."""
        remote = self._remote
        if remote is None:
            if self._closed:
                raise ClientClosedError("the client is closed")
            with _remote_lock:
                if self._remote is None:
                    self._remote = acquire_hub_thread()
                remote = self._remote
        wait = (self.timeout if timeout is None else timeout) + _REMOTE_MARGIN
        try:
            return remote.call(fn, *args, timeout=wait)
        except Timeout:
            raise RequestTimeoutError(
                f"the client's hub thread did not answer within {wait:.3g} s"
            ) from None

    def run(self, fn: Callable, *args: Any, timeout: float | None = None) -> Any:
        """Call ``fn(*args)`` where this client's calls for the calling thread
        run (its home hub, or its hub thread for other threads) and return the
        result: for code that uses :attr:`endpoint` directly (raw messages,
        preset MIDs and tokens) from any thread."""
        if os_thread_ident() == self._home or self._on_remote():
            return fn(*args)
        return self._elsewhere(fn, *args, timeout=timeout)

    def _on_remote(self) -> bool:
        """True on the shared hub thread (the client's calls from other threads)."""
        remote = self._remote
        return remote is not None and os_thread_ident() == remote.ident

    def _credentials(self, ep: Endpoint, host: str, peer: tuple) -> None:
        """A per-host PSK (``psk`` is a callable): handed to the DTLS channel."""
        creds = ep.channel.credentials
        if peer not in creds:
            if len(creds) >= _URI_CACHE_SIZE:
                creds.clear()
            creds[peer] = client_credentials(self.psk(host))

    @property
    def stats(self) -> dict[str, int]:
        """Message-layer counters (requests, retransmissions, timeouts, …), plain
        and DTLS endpoints summed; ``dtls_*`` counters come from DTLS."""
        s: dict[str, int] = {}
        for ep in (self._endpoint, self._secure, self._remote_endpoint, self._remote_secure):
            if ep is not None:
                for k, v in ep.stats.items():
                    s[k] = s.get(k, 0) + v
        return s

    def close(self) -> None:
        """Release the sockets (DTLS sessions get close_notify); calls still
        waiting raise :class:`ClientClosedError`, in every thread.  May be
        called from any thread; the hub thread the client used for other
        threads is released (it stops with its last user)."""
        self._closed = True
        home = [ep for ep in (self._endpoint, self._secure) if ep is not None]
        self._endpoint = self._secure = None
        if home:
            if os_thread_ident() == self._home:
                for ep in home:
                    ep.close()
            else:  # the home hub closes them on its next turn
                hub = home[0].hub
                for ep in home:
                    hub.run_callback_threadsafe(ep.close)
        remote = self._remote
        if remote is not None:
            eps = [ep for ep in (self._remote_endpoint, self._remote_secure) if ep is not None]
            self._remote_endpoint = self._remote_secure = None
            self._remote = None
            for ep in eps:
                try:
                    remote.call(ep.close, timeout=5.0)
                except Exception:  # noqa: BLE001 - closing must not raise
                    pass
            release_hub_thread(remote)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _parse(self, uri: str) -> tuple[URI, list]:
        hit = self._uris.get(uri)
        if hit is None:
            u = parse_uri(uri)
            hit = (u, u.options(include_host=not is_ip_literal(u.host)))
            if len(self._uris) >= _URI_CACHE_SIZE:
                self._uris.clear()
            self._uris[uri] = hit
        return hit

    def resolve(
        self, host: str, port: int, timeout: float | None = None, ep: Endpoint | None = None
    ) -> tuple:
        """The socket address for ``host``/``port`` (name lookups off the hub)."""
        ep = ep or self.endpoint
        key = (host, port)
        hit = self._dns.get(key)
        if hit is not None and hit[0] > monotonic():
            return hit[1]
        if is_ip_literal(host):
            if ":" in host:
                if ep.family != socket.AF_INET6:
                    raise UriError("IPv6 destination but the client socket is IPv4-only")
                addr = socket.getaddrinfo(
                    host, port, socket.AF_INET6, socket.SOCK_DGRAM, 0, socket.AI_NUMERICHOST
                )[0][4]
            else:
                addr = peer_key(ep.family, (host, port))
            self._dns[key] = (float("inf"), addr)
            return addr
        fam = 0 if ep.family == socket.AF_INET6 else socket.AF_INET
        try:
            infos = ep.hub.run_in_thread(
                socket.getaddrinfo, host, port, fam, socket.SOCK_DGRAM, timeout=timeout
            )
        except socket.gaierror as e:
            raise UriError(f"cannot resolve {host!r}: {e}") from None
        except Timeout:
            raise RequestTimeoutError(
                f"resolving {host!r} took longer than {timeout:.3g} s"
            ) from None
        infos.sort(key=lambda i: i[0] != socket.AF_INET6)  # prefer IPv6 like getaddrinfo
        addr = peer_key(ep.family, infos[0][4])
        self._dns[key] = (monotonic() + _DNS_TTL, addr)
        return addr

    # -- requests ------------------------------------------------------
    def request(
        self,
        method: int | str,
        uri: str,
        payload: bytes | str | None = None,
        *,
        content_format: int | None = None,
        accept: int | None = None,
        confirmable: bool = True,
        timeout: float | None = None,
        options: list[tuple[int, bytes | str | int]] | None = None,
        block_size: int | None = None,
        etag: bytes | list[bytes] | None = None,
        if_match: bytes | list[bytes] | None = None,
        if_none_match: bool = False,
        validate: bool = False,
    ) -> Response:
        """Send one request and return its :class:`Response` (blocks this greenlet).

        ``method`` is a :class:`Code` or a name (``"GET"``); ``options`` adds
        raw ``(number, value)`` options.  Conditional requests (RFC 7252
        §5.10.6-9): ``etag`` names the representations the caller holds (a
        2.03 Valid says one is current), ``if_match`` / ``if_none_match``
        make the request conditional (4.12 when the condition fails).
        ``validate=True`` does the ETag bookkeeping itself: the client keeps
        the last representation of each URI it fetched with an ETag, asks
        with that ETag, and on 2.03 returns the kept representation (with
        ``validated`` set) instead of an empty 2.03.

        Raises :class:`RequestTimeoutError` (also a ``TimeoutError``),
        :class:`ResetError` or :class:`ClientClosedError`; a 4.xx/5.xx answer
        is returned, not raised (see :meth:`Response.raise_for_status`).
        """
        if etag is not None or if_match is not None or if_none_match or validate:
            return self._conditional(
                method,
                uri,
                payload,
                etag,
                if_match,
                if_none_match,
                validate,
                content_format=content_format,
                accept=accept,
                confirmable=confirmable,
                timeout=timeout,
                options=options,
                block_size=block_size,
            )
        if os_thread_ident() == self._home:
            ep = self._endpoint
        elif self._on_remote():
            ep = self._remote_endpoint
        else:  # another thread: carried out on the client's hub thread
            call = partial(
                self.request,
                method,
                uri,
                payload,
                content_format=content_format,
                accept=accept,
                confirmable=confirmable,
                timeout=timeout,
                options=options,
                block_size=block_size,
            )
            return self._elsewhere(call, timeout=timeout)
        if method.__class__ is not Code:
            method = _method(method)
        timeout = self.timeout if timeout is None else check_timeout(timeout)
        u, uri_opts = self._parse(uri)
        if ep is None or u.scheme != "coap":
            ep = self.endpoint_for(u)
        peer = self._literal_peers.get(uri)  # IP-literal URIs: no lookup, ever
        remaining = timeout
        if peer is None:
            hit = self._dns.get((u.host, u.port))
            if hit is not None and hit[0] > monotonic():
                peer = hit[1]
            else:  # a name lookup (off the hub) counts against the call's timeout
                t0 = monotonic()
                peer = self.resolve(u.host, u.port, timeout, ep)
                remaining = timeout - (monotonic() - t0)
                if remaining <= 0:
                    raise RequestTimeoutError(f"no time left for {uri} after name resolution")
            if is_ip_literal(u.host):
                if len(self._literal_peers) >= _URI_CACHE_SIZE:
                    self._literal_peers.clear()
                self._literal_peers[uri] = peer
        if u.scheme == "coaps" and callable(self.psk):
            self._credentials(ep, u.host, peer)
        if payload is None:
            payload = b""
        elif payload.__class__ is not bytes:
            payload, content_format = request_body(payload, content_format)
        elif content_format is not None and content_format.__class__ is not int:
            content_format = content_format_number(content_format)
        if accept is not None and accept.__class__ is not int:
            accept = content_format_number(accept)
        if content_format is None and accept is None and not options:
            opts = uri_opts  # shared, never mutated below the API
        else:
            opts = list(uri_opts)
            if content_format is not None:
                opts.append((OptionNumber.CONTENT_FORMAT, encode_uint(int(content_format))))
            if accept is not None:
                opts.append((OptionNumber.ACCEPT, encode_uint(int(accept))))
            if options:
                for number, value in options:
                    if isinstance(value, str):
                        value = value.encode()
                    elif isinstance(value, int):
                        value = encode_uint(value)
                    opts.append((int(number), bytes(value)))
        mtype = _CON if confirmable else _NON
        block_size = block_size or self.block_size
        if block_size is not None or len(payload) > 1024:
            reply = self._blockwise(ep, mtype, method, opts, payload, peer, remaining, block_size)
        else:
            msg = Message(mtype, method, 0, b"", opts, payload)
            reply = ep.request(msg, peer, remaining)
            if reply.code == _UNAUTHORIZED:  # maybe an Echo challenge (RFC 9175)
                reply = _answer_echo(ep, msg, reply, peer, remaining)
            for number, _ in reply.options:
                if number == 23:  # Block2: fetch the rest of the body
                    reply = self._fetch_rest(ep, mtype, method, opts, reply, peer, remaining)
                    break
        return Response.from_message(reply, peer)

    def _conditional(
        self,
        method: Any,
        uri: str,
        payload: Any,
        etag: Any,
        if_match: Any,
        if_none_match: bool,
        validate: bool,
        **kwargs: Any,
    ) -> Response:
        """:meth:`request` with the conditional options (see there)."""
        extra: list = list(kwargs.pop("options") or ())
        etags = [etag] if isinstance(etag, bytes) else list(etag or ())
        kept = self._validators.get(uri) if validate else None
        if kept is not None and kept.etag is not None and kept.etag not in etags:
            etags.append(kept.etag)
        extra += [(OptionNumber.ETAG, e) for e in etags]
        matches = [if_match] if isinstance(if_match, bytes) else list(if_match or ())
        extra += [(OptionNumber.IF_MATCH, m) for m in matches]
        if if_none_match:
            extra.append((OptionNumber.IF_NONE_MATCH, b""))
        r = self.request(method, uri, payload, options=extra, **kwargs)
        if not validate:
            return r
        if r.code == Code.VALID and kept is not None and r.etag in (None, kept.etag):
            fresh = [o for o in kept.options if o[0] not in (OptionNumber.MAX_AGE,)]
            fresh += [o for o in r.options if o[0] == OptionNumber.MAX_AGE]
            out = Response(Code.CONTENT, kept.payload, options=fresh)
            out._peer, out.message, out.validated = kept._peer, r.message, True
            return out
        if r.code == Code.CONTENT and r.etag is not None:
            cache = self._validators
            cache.pop(uri, None)
            if len(cache) >= _URI_CACHE_SIZE:
                del cache[next(iter(cache))]
            cache[uri] = r
        return r

    # -- block-wise (RFC 7959) -------------------------------------------
    def _blockwise(
        self,
        ep: Endpoint,
        mtype: int,
        method: int,
        opts: list,
        payload: bytes,
        peer: tuple,
        timeout: float,
        block_size: int | None,
    ) -> Message:
        """A request whose body goes in Block1 blocks and/or whose answer may be Block2."""
        deadline = monotonic() + timeout
        szx = szx_for(block_size or 1024)
        tag = b""
        if len(payload) <= (1 << (szx + 4)):
            extra = [(OptionNumber.BLOCK2, encode_uint(Block(0, False, szx).encode()))]
            if block_size is None:
                extra = []
            reply = _send(ep, Message(mtype, method, 0, b"", opts + extra, payload), peer, timeout)
        else:
            up = Block1Uploader(payload, szx)
            tag = (ep.layer.rng.getrandbits(32)).to_bytes(4, "big")  # RFC 9175 Request-Tag
            while True:
                block, chunk = up.current()
                extra = [
                    (OptionNumber.BLOCK1, encode_uint(block.encode())),
                    (OptionNumber.REQUEST_TAG, tag),
                ]
                if block.num == 0:
                    extra.append((OptionNumber.SIZE1, encode_uint(len(payload))))
                msg = Message(mtype, method, 0, b"", opts + extra, chunk)
                reply = _send(ep, msg, peer, _left(deadline))
                if not up.feed(reply):
                    break
        if reply.block2 is not None:
            # RFC 9175 §3.4: the Block2 phase of the same operation keeps its Request-Tag
            tagged = opts + [(OptionNumber.REQUEST_TAG, tag)] if tag else opts
            reply = self._fetch_rest(ep, mtype, method, tagged, reply, peer, _left(deadline))
        return reply

    def _fetch_rest(
        self,
        ep: Endpoint,
        mtype: int,
        method: int,
        opts: list,
        first: Message,
        peer: tuple,
        timeout: float,
    ) -> Message:
        """Fetch the remaining Block2 blocks of ``first``; return one whole message."""
        deadline = monotonic() + timeout
        asm = Block2Assembler(self.max_body_size)
        nxt = asm.feed(first)
        base = [o for o in opts if o[0] not in _BLOCK_OPTIONS]
        while nxt is not None:
            extra = [(OptionNumber.BLOCK2, encode_uint(nxt.encode()))]
            msg = Message(mtype, method, 0, b"", base + extra)
            reply = _send(ep, msg, peer, _left(deadline))
            if not is_success(reply.code):
                raise BlockwiseError(f"block {nxt.num} of the response failed: {reply.code}")
            nxt = asm.feed(reply)
        whole = Message(
            first.mtype,
            first.code,
            first.mid,
            first.token,
            [o for o in first.options if o[0] != OptionNumber.BLOCK2],
            bytes(asm.body),
        )
        return whole

    def observe(
        self,
        uri: str,
        *,
        timeout: float | None = None,
        confirmable: bool = True,
        options: list[tuple[int, bytes]] | None = None,
        reregister: bool = True,
        max_reregistrations: int = 3,
    ) -> Observation:
        """Observe ``uri`` (RFC 7641): returns an :class:`Observation` to iterate
        (from any thread: one made in another thread than the client's lives
        on the client's hub thread, and its iteration is carried out there).

        Nothing is sent until iteration starts; ``timeout`` bounds the
        registration and each block-wise fetch.  Use it as a context manager
        so that leaving the block deregisters.  When a notification's
        Max-Age passes with no newer one, the observation re-registers by
        itself (``reregister=False`` turns that off); ``max_reregistrations``
        failed attempts in a row end it with :class:`RequestTimeoutError`.
        """
        if timeout is not None:
            check_timeout(timeout)
        return Observation(
            self,
            uri,
            timeout=timeout,
            confirmable=confirmable,
            options=options,
            reregister=reregister,
            max_reregistrations=max_reregistrations,
        )

    def discover(self, base: str, *, timeout: float | None = None, **filters: Any) -> list[Link]:
        """Resource discovery (RFC 6690): the links of ``base``'s ``/.well-known/core``.

        A multicast ``base`` (``coap://224.0.1.187``, ``coap://[ff02::fd%eth0]``)
        asks every server of the group (see :meth:`multicast`; ``timeout``,
        default 2 s, is the window) and returns all their links.

        Keyword arguments are §4.1 query filters (``rt="temp*"``, ``if_="sensor"``,
        ``ct=40``, ``obs=""``, ``href="/s*"``, any attribute, ``*`` for a
        prefix): sent to the server and applied again here, since a server
        may ignore them.  Each returned :class:`Link` has its target resolved
        to an absolute URI against ``base``; its attributes are as the server
        wrote them.  Route templates some servers list (``</sensors/:id>``)
        are not resources and are left out.
        """
        u = parse_uri(base)
        root = compose_uri(u.scheme, u.host, u.port, (), ())
        query = [(k[:-1] if k.endswith("_") else k, str(v)) for k, v in filters.items()]
        uri = root.rstrip("/") + "/.well-known/core"
        if query:
            uri += "?" + "&".join(f"{k}={v}" for k, v in query)
        from .multicast import is_multicast

        if is_multicast(u.host):  # every server of the group: links resolved against each
            found = []
            for r in self.multicast("GET", uri, timeout=2.0 if timeout is None else timeout):
                host, port = r.peer
                there = compose_uri("coap", host, port, (), ())
                links = filter_links(parse_link_format(r.payload), query)
                found += [Link(k.resolve(there), k.params) for k in links if not _template(k)]
            return found
        r = self.get(uri, timeout=timeout)
        r.raise_for_status()
        links = filter_links(parse_link_format(r.payload), query)
        return [Link(link.resolve(root), link.params) for link in links if not _template(link)]

    def multicast(
        self,
        method: int | str,
        uri: str,
        payload: Any = None,
        *,
        timeout: float = 2.0,
        interface: str | int | None = None,
        content_format: int | str | None = None,
        accept: int | str | None = None,
        options: list[tuple[int, bytes | str | int]] | None = None,
        hops: int = 1,
    ) -> Iterator[Response]:
        """A request to a multicast group (RFC 7252 §8): ``uri``'s host is a
        group address (``coap://224.0.1.187/...``, ``coap://[ff02::fd%eth0]/...``;
        the ``%zone`` or ``interface=`` picks the link of a link-local group).
        The request goes as NON, once; the iterator yields a
        :class:`Response` (with :attr:`~Response.peer`) from each server that
        answers within ``timeout`` seconds, as they come, and ends when the
        window closes.  ``hops`` is the multicast TTL / hop limit.  Servers
        stay silent for errors (§8.2), so no answer is not an error here.
        Call it from the client's own thread (it has a socket of its own)."""
        from .multicast import MulticastRequest, is_multicast

        check_timeout(timeout)
        if method.__class__ is not Code:
            method = _method(method)
        u = parse_uri(uri)
        if not is_multicast(u.host):
            raise UriError(f"{u.host} is not a multicast group address")
        if u.scheme != "coap":
            raise UriError("multicast is coap:// only (DTLS has no group keys)")
        body, content_format = (
            request_body(payload, content_format)
            if payload is not None
            else (
                b"",
                content_format_number(content_format) if content_format is not None else None,
            )
        )
        opts: list = list(u.options(include_host=False))
        if content_format is not None:
            opts.append((OptionNumber.CONTENT_FORMAT, encode_uint(int(content_format))))
        if accept is not None:
            opts.append((OptionNumber.ACCEPT, encode_uint(content_format_number(accept))))
        for number, value in options or ():
            if isinstance(value, str):
                value = value.encode()
            elif isinstance(value, int):
                value = encode_uint(value)
            opts.append((number, value))
        msg = Message(Type.NON, method, 0, b"", opts, body)
        request = MulticastRequest(u.host, u.port, msg, timeout, interface=interface, hops=hops)
        return (Response.from_message(m, peer) for m, peer in request)

    def ping(self, uri: str, timeout: float | None = None) -> float:
        """Send a CoAP ping (empty CON) and return the round-trip time in seconds.

        A live CoAP endpoint answers RST (RFC 7252 §4.3); no answer raises
        :class:`RequestTimeoutError`.
        """
        if os_thread_ident() != self._home and not self._on_remote():
            return self._elsewhere(self.ping, uri, timeout, timeout=timeout)
        u, _ = self._parse(uri)
        timeout = self.timeout if timeout is None else check_timeout(timeout)
        ep, peer = self.connect(u, timeout)
        t0 = monotonic()
        try:
            ep.request(Message(_CON, Code.EMPTY, 0, b""), peer, timeout)
        except ResetError:
            return monotonic() - t0
        raise CoapError("the peer answered a ping with something other than RST")

    def connect(self, u: URI, timeout: float | None = None) -> tuple[Endpoint, tuple]:
        """The endpoint and the peer address for ``u`` (resolved, PSK chosen)."""
        ep = self.endpoint_for(u)
        peer = self.resolve(u.host, u.port, timeout, ep)
        if u.scheme == "coaps" and callable(self.psk):
            self._credentials(ep, u.host, peer)
        return ep, peer

    def get(self, uri: str, **kwargs: Any) -> Response:
        """GET ``uri``; see :meth:`request` for the keyword arguments."""
        return self.request(_GET, uri, **kwargs)

    def post(self, uri: str, payload: bytes | str | None = None, **kwargs: Any) -> Response:
        """POST ``payload`` to ``uri``."""
        return self.request(_POST, uri, payload, **kwargs)

    def put(self, uri: str, payload: bytes | str | None = None, **kwargs: Any) -> Response:
        """PUT ``payload`` to ``uri``."""
        return self.request(_PUT, uri, payload, **kwargs)

    def delete(self, uri: str, **kwargs: Any) -> Response:
        """DELETE ``uri``."""
        return self.request(_DELETE, uri, **kwargs)

    def fetch(self, uri: str, payload: bytes | str | None = None, **kwargs: Any) -> Response:
        """FETCH (RFC 8132) ``uri`` with ``payload`` as the query body."""
        return self.request(Code.FETCH, uri, payload, **kwargs)

    def patch(self, uri: str, payload: bytes | str | None = None, **kwargs: Any) -> Response:
        """PATCH (RFC 8132) ``uri``."""
        return self.request(Code.PATCH, uri, payload, **kwargs)

    def ipatch(self, uri: str, payload: bytes | str | None = None, **kwargs: Any) -> Response:
        """iPATCH (RFC 8132) ``uri``."""
        return self.request(Code.IPATCH, uri, payload, **kwargs)


_default = os_thread_local()


def default_client() -> Client:
    """This thread's shared client, used by the module-level functions."""
    c = getattr(_default, "client", None)
    if c is None or c._closed:
        c = _default.client = Client()
    return c


def request(method: int | str, uri: str, payload: Any = None, **kwargs: Any) -> Response:
    """``Client.request`` on the default client."""
    return default_client().request(method, uri, payload, **kwargs)


def get(uri: str, **kwargs: Any) -> Response:
    """GET ``uri`` with the default client: ``greencoap.get("coap://h/x", timeout=5)``."""
    return default_client().get(uri, **kwargs)


def post(uri: str, payload: Any = None, **kwargs: Any) -> Response:
    """POST with the default client."""
    return default_client().post(uri, payload, **kwargs)


def put(uri: str, payload: Any = None, **kwargs: Any) -> Response:
    """PUT with the default client."""
    return default_client().put(uri, payload, **kwargs)


def delete(uri: str, **kwargs: Any) -> Response:
    """DELETE with the default client."""
    return default_client().delete(uri, **kwargs)


def fetch(uri: str, payload: Any = None, **kwargs: Any) -> Response:
    """FETCH (RFC 8132) with the default client."""
    return default_client().fetch(uri, payload, **kwargs)


def patch(uri: str, payload: Any = None, **kwargs: Any) -> Response:
    """PATCH (RFC 8132) with the default client."""
    return default_client().patch(uri, payload, **kwargs)


def ipatch(uri: str, payload: Any = None, **kwargs: Any) -> Response:
    """iPATCH (RFC 8132) with the default client."""
    return default_client().ipatch(uri, payload, **kwargs)


def ping(uri: str, timeout: float | None = None) -> float:
    """CoAP ping with the default client: the round-trip time in seconds."""
    return default_client().ping(uri, timeout)


def observe(uri: str, **kwargs: Any) -> Observation:
    """Observe ``uri`` with the default client (see :meth:`Client.observe`)."""
    return default_client().observe(uri, **kwargs)
