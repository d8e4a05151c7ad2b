"""What a server decides about each request, as a sans-I/O engine (layer 2).

Before anything is queued, :meth:`ServerPipeline.admission` decides per
received batch whether the server is loaded enough to throttle (4.29 for a
peer over its rate) or shed (5.03 for all) and returns the per-request
check that says so.  Then each admitted request passes through the
pipeline in three steps; between them the server runs only what is not the
RFCs' to decide -- the application's code:

1. :meth:`ServerPipeline.begin` takes the request message and returns a
   :class:`Job` whose ``action`` says what comes next.  ``ANSWER``: the
   reply is decided already (``job.reply``): 4.02 for an unrecognised
   critical option (RFC 7252 §5.4.1), 4.04/4.05 from the router, 4.06 when
   the route cannot produce the Accept format (§5.10.4), a Block1
   2.31 Continue / 4.08 / 4.13 / 5.03 (RFC 7959 §2.3, §2.9), a Block2
   follow-up served from the cache of the first block's body (§2.4).
   ``HANDLE``: run ``job.route``'s handler on ``job.message`` (the Block1
   body assembled) with ``job.params``; ``REGISTER``: the request is an
   Observe registration (RFC 7641 §2, Observe=0 on an observable route) to
   be registered.  ``job.deregister`` says that an Observe=1 asks to end
   the requester's observation first.  When the route declares its current
   ETag (``route.etag_of``) the server asks it and passes the value to
   :meth:`ServerPipeline.preconditions` (§5.10.8-9: 4.12, or 2.03 without
   running the handler).
2. The server runs the handler (or registers the observer) and turns what
   it returned into a message.
3. :meth:`ServerPipeline.finish` shapes that message into the reply: 4.06
   when the handler answered in another format than Accept asked for,
   2.03 Valid when the request named the representation's ETag (§5.10.6),
   block 0 of a body too large for one datagram with the rest cached for
   its follow-ups (RFC 7959 §2.4), the last Block1 option of an assembled
   upload.

For a server that verifies addresses (RFC 9175 §2.4, amplification
mitigation) :meth:`~ServerPipeline.vouch` runs before step 1 (the repetition
of a challenged request gets the reply held for it) and
:meth:`~ServerPipeline.guard` after step 3 (a reply much larger than the
request to an unverified address becomes a 4.01 challenge with an Echo
option; the reply is held for the repetition, or an Observe registration
is to be undone).

The pipeline never reads a clock, never touches a socket and never runs a
handler: ``now`` is an argument of every step, the router is a pure lookup
handed in, the caches are the sans-I/O ones of :mod:`.blockwise_server`
and :mod:`.echo`.  Every refusal is counted in ``stats``.  Not thread-safe:
it belongs to one server's hub.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from .._ext import speedups
from ..codes import Code, Type
from ..message import Message
from ..options import Block, encode_uint
from ..options import OptionNumber as O
from .blockwise_server import (
    BUSY,
    CONTINUE,
    INCOMPLETE,
    TOO_LARGE,
    Block1Assembler,
    Block2Cache,
    block2_options,
    block_of,
    follow_up_options,
)
from .echo import EchoVerifier
from .limits import NORMAL, THROTTLED, LoadLevels, TokenBuckets
from .validation import UNDERSTOOD_OPTIONS, inspect_request

ANSWER = "answer"  # Job.action: job.reply is the reply; nothing runs
HANDLE = "handle"  # run the route's handler
REGISTER = "register"  # register the requester as an observer of the route

_ACK = Type.ACK
_GET, _FETCH = int(Code.GET), int(Code.FETCH)
_CONTENT, _VALID = int(Code.CONTENT), int(Code.VALID)
_ETAG, _MAX_AGE, _OBSERVE = int(O.ETAG), int(O.MAX_AGE), int(O.OBSERVE)
_BLOCK1, _SIZE1, _ECHO = int(O.BLOCK1), int(O.SIZE1), int(O.ECHO)
_CONTENT_FORMAT = int(O.CONTENT_FORMAT)
_URI_PATH = int(O.URI_PATH)
#: the options of a plain request (see ServerPipeline.plain)
_PLAIN_OPTIONS = frozenset(
    int(n) for n in (O.URI_HOST, O.URI_PORT, O.URI_PATH, O.URI_QUERY, _CONTENT_FORMAT)
)
_PLAIN_SINGLE = frozenset({int(O.URI_HOST), int(O.URI_PORT)})  # critical, not repeatable
_JSON, _CBOR = 50, 60


def plain_path_py(msg: Message) -> tuple[bytes, ...] | None:
    """The raw Uri-Path values of a request whose only options are Uri-Host,
    Uri-Port, Uri-Path, Uri-Query and Content-Format (none malformed,
    Uri-Host and Uri-Port not repeated), else None.  (:data:`plain_path` is
    this, or its C twin ``_speedups.plain_path`` when built.)"""
    if msg.bad_options:
        return None
    raw = []
    prev = -1
    for number, value in msg.options:
        if number == _URI_PATH:
            raw.append(value)
        elif number not in _PLAIN_OPTIONS or (number == prev and number in _PLAIN_SINGLE):
            return None
        prev = number
    return tuple(raw)


_c = speedups()
#: the plain-request check in use (C when built; the same result)
plain_path: Callable[[Message], tuple | None] = plain_path_py if _c is None else _c.plain_path
del _c


class Route(Protocol):
    """What the pipeline reads of a route (the router's :class:`~greencoap.router.Route`)."""

    formats: Any  # the Content-Formats it produces, or None (any)
    observable: bool
    attrs: dict
    etag_of: Any  # None, or a callable giving the resource's current ETag


def reply_message(code: int, diagnostic: str = "", options: list | None = None) -> Message:
    """A reply with ``code``, ``options`` and a diagnostic payload (RFC 7252
    §5.5.2; UTF-8 text, marked text/plain as a handler's str is)."""
    opts = options or []
    if diagnostic:
        opts = [(_CONTENT_FORMAT, b""), *opts]
    return Message(_ACK, code, 0, b"", opts, diagnostic.encode())


class Job:
    """One request between :meth:`ServerPipeline.begin` and
    :meth:`~ServerPipeline.finish`: the action decided for it and what the
    later steps need.  Not thread-safe (the server's hub)."""

    __slots__ = (
        "action",
        "reply",
        "request",
        "message",
        "peer",
        "route",
        "params",
        "accept",
        "raw_key",
        "blockwise",
        "block1",
        "deregister",
    )

    def __init__(self, request: Message, peer: Any) -> None:
        self.action = ANSWER
        self.reply: Message | None = None  # decided already (ANSWER)
        self.request = request  # as it came
        self.message = request  # as the handler sees it (a Block1 body assembled)
        self.peer = peer
        self.route: Any = None
        self.params: dict = {}
        self.accept: int | None = None
        self.raw_key: tuple = ()
        self.blockwise = False  # it carries Block1/Block2
        self.block1: Block | None = None  # the last block of an assembled upload
        self.deregister = False  # Observe=1: end the requester's observation first

    def __repr__(self) -> str:
        return f"<Job {self.action} {Code(self.request.code).name} {self.raw_key!r}>"


class ServerPipeline:
    """RFC 7252 / 7959 / 7641 / 9175 decisions for one server's requests
    (see the module docstring)."""

    def __init__(
        self,
        resolve: Callable[[int, tuple], tuple[Any, dict]],
        *,
        block_size: int,
        block_szx: int,
        block1: Block1Assembler,
        block2: Block2Cache,
        echo: EchoVerifier | None,
        stats: dict[str, int],
        load: LoadLevels | None = None,
        buckets: TokenBuckets | None = None,
        cbor_available: Callable[[], bool] = lambda: False,
        understood: frozenset = UNDERSTOOD_OPTIONS,
    ) -> None:
        #: ``resolve(method, raw_path)`` → ``(route, params)``; raises
        #: ``LookupError(code)`` (4.04/4.05) or ``UnicodeDecodeError``
        self.resolve = resolve
        self.block_size = block_size
        self.block_szx = block_szx
        self.block1 = block1
        self.block2 = block2
        self.echo = echo
        self.stats = stats
        self.cbor_available = cbor_available
        self.understood = understood
        #: plain() needs the critical plain options understood (it is off otherwise)
        self._plain = all(n in understood for n in _PLAIN_OPTIONS if n & 1)
        #: admission control: the load levels and the per-peer rate buckets
        self.load = load if load is not None else LoadLevels()
        self.buckets = buckets if buckets is not None else TokenBuckets()

    # -- step 0: admission (per received batch, before any request is queued) --
    def admission(self, load: int) -> Callable[[Message, Any, float], int | None] | None:
        """The verdict for a batch that finds ``load`` requests waiting or
        running: None (normal load: serve everything), or a per-request check
        ``check(msg, peer, now)`` returning None (serve it) or the code to
        refuse it with -- 4.29 for a peer over its rate while throttled, 5.03
        for every request while shedding (the endpoint answers a refused CON
        with it and Max-Age 1, and drops a refused NON).  Level changes are
        counted in ``stats`` (``load_level``, ``load_level_changes``)."""
        level = self.load.update(load)
        stats = self.stats
        if level != stats["load_level"]:
            stats["load_level"] = level
            stats["load_level_changes"] += 1
        if level == NORMAL:
            return None
        return self._throttle if level == THROTTLED else self._shed

    def _throttle(self, msg: Message, peer: Any, now: float) -> int | None:
        if self.buckets.allow(peer, now):
            return None
        self.stats["throttled"] += 1
        return Code.TOO_MANY_REQUESTS

    def _shed(self, msg: Message, peer: Any, now: float) -> int | None:
        self.stats["shed"] += 1
        return Code.SERVICE_UNAVAILABLE

    # -- step 1 ------------------------------------------------------------
    def begin(self, msg: Message, peer: Any, now: float) -> Job:
        """Decide what ``msg`` needs: an answer now, or the handler (see the module docstring)."""
        job = Job(msg, peer)
        stats = self.stats
        raw_key, blockwise, accept, refusal = inspect_request(msg, self.understood)
        if refusal is not None:
            code, why = refusal
            stats["bad_option" if code == Code.BAD_OPTION else "bad_request"] += 1
            job.reply = reply_message(code, why)
            return job
        method = msg.code
        try:
            route, params = self.resolve(method, raw_key)
        except LookupError as e:
            stats["not_found"] += 1
            job.reply = reply_message(e.args[0])
            return job
        except UnicodeDecodeError:
            stats["bad_request"] += 1
            job.reply = reply_message(Code.BAD_REQUEST, "Uri-Path is not valid UTF-8")
            return job
        if accept is not None and route.formats is not None and not self._produces(route, accept):
            stats["not_acceptable"] += 1
            job.reply = reply_message(
                Code.NOT_ACCEPTABLE, "no representation in the format asked for"
            )
            return job
        job.route, job.params, job.accept, job.raw_key = route, params, accept, raw_key
        if blockwise:
            job.blockwise = True
            if not self._blockwise_request(job, now):
                return job  # answered: a Block1 step, or a cached Block2 block
        if method == _GET and (route.observable or route.attrs.get("observable")):
            observe = job.message.uint_opt(_OBSERVE)
            if observe == 0:
                job.action = REGISTER
                return job
            if observe == 1:  # other values mean nothing in a request (RFC 7641 §2)
                job.deregister = True
        job.action = HANDLE
        return job

    def plain(self, msg: Message) -> tuple[Any, dict, tuple] | None:
        """``(route, params, raw Uri-Path)`` for a request that needs none of
        this pipeline's decisions, else None (then :meth:`begin` decides).

        Plain: its only options are Uri-Host, Uri-Port, Uri-Path, Uri-Query
        and Content-Format, none malformed and the critical single ones not
        repeated; the router finds its route; the route declares no ETag
        hook.  For such a request :meth:`begin` would return ``HANDLE`` with
        nothing else to do, and :meth:`finish` would only split a reply too
        large for one datagram: :meth:`finish_plain`.
        """
        key = plain_path(msg) if self._plain else None
        if key is None:
            return None
        try:
            route, params = self.resolve(msg.code, key)
        except (LookupError, UnicodeDecodeError):
            return None  # begin() answers it (4.04, 4.05, 4.00)
        if route.etag_of is not None:
            return None
        return route, params, key

    def finish_plain(
        self, msg: Message, peer: Any, raw_key: tuple, reply: Message, now: float
    ) -> Message:
        """:meth:`finish` for a request :meth:`plain` found plain."""
        if len(reply.payload) <= self.block_size:
            return reply
        job = Job(msg, peer)
        job.raw_key = raw_key
        return self._blockwise_reply(job, reply, now)

    def _produces(self, route: Route, accept: int) -> bool:
        """Can ``route`` answer in Content-Format ``accept``?  Its declared
        formats (``ct=``), or CBOR when it declares JSON and the CBOR codec
        is there (JSON results are then converted)."""
        formats = route.formats
        return accept in formats or (accept == _CBOR and _JSON in formats and self.cbor_available())

    def _blockwise_request(self, job: Job, now: float) -> bool:
        """RFC 7959 before the handler: feed a Block1 upload (True once it is
        complete: ``job.message`` then carries the whole body) and serve a
        Block2 follow-up from the cache.  False: ``job.reply`` is set."""
        msg = job.message
        b1 = msg.block1
        if b1 is not None:
            key = (job.peer, msg.code, job.raw_key, msg.opt(O.REQUEST_TAG))
            status, value = self.block1.feed(key, b1, msg.payload, msg.size1, now)
            if status is CONTINUE or status is INCOMPLETE or status is TOO_LARGE or status is BUSY:
                job.reply = self._block1_step(status, value)
                return False
            job.block1 = Block(b1.num, False, b1.szx)
            job.message = Message(
                msg.mtype,
                msg.code,
                msg.mid,
                msg.token,
                [o for o in msg.options if o[0] != _BLOCK1 and o[0] != _SIZE1],
                value,
            )
        b2 = job.message.block2
        if b2 is None or b2.num == 0:
            return True
        szx = min(b2.szx, self.block_szx)
        # a smaller block than asked for keeps the offset asked for (RFC 7959 §2.4)
        num = b2.num << (b2.szx - szx)
        cached = self.block2.get(self._block2_key(job.peer, job.message, job.raw_key), now)
        if cached is None:
            return True  # gone (or never made): the handler renders it again
        body, etag, (code, options, own_etag) = cached
        kept = Message(_ACK, code, 0, b"", options, body)
        job.reply = self._block(kept, own_etag or etag, num, szx, job.block1)
        return False

    def _block1_step(self, status: str, value: Any) -> Message:
        """The reply to a Block1 block that does not complete an upload."""
        stats = self.stats
        if status == CONTINUE:
            return reply_message(Code.CONTINUE, options=[(_BLOCK1, encode_uint(value.encode()))])
        if status == INCOMPLETE:
            stats["block1_incomplete"] += 1
            return reply_message(Code.REQUEST_ENTITY_INCOMPLETE, "block out of sequence")
        if status == TOO_LARGE:
            stats["block1_too_large"] += 1
            size1 = [(_SIZE1, encode_uint(value))]
            return reply_message(Code.REQUEST_ENTITY_TOO_LARGE, options=size1)
        stats["block1_busy"] += 1
        return reply_message(Code.SERVICE_UNAVAILABLE, "too many uploads in progress")

    # -- between the steps ----------------------------------------------------
    def preconditions(self, job: Job, current: bytes | None) -> Message | None:
        """RFC 7252 §5.10.8-9 for a route whose current ETag is ``current``:
        If-Match that matches no current ETag, or If-None-Match on a resource
        that exists → 4.12 Precondition Failed; a GET/FETCH naming the current
        ETag → 2.03 Valid.  None: run the handler."""
        msg = job.message
        if msg.has_option(O.IF_MATCH):
            if_match = msg.opts(O.IF_MATCH)
            if current is None or (b"" not in if_match and current not in if_match):
                why = "If-Match: the resource's ETag differs"
                return reply_message(Code.PRECONDITION_FAILED, why)
        if current is not None and msg.has_option(O.IF_NONE_MATCH):
            return reply_message(Code.PRECONDITION_FAILED, "If-None-Match: the resource exists")
        if current is not None and msg.code in (_GET, _FETCH) and current in msg.opts(_ETAG):
            return reply_message(_VALID, options=[(_ETAG, current)])
        return None

    # -- step 3 ------------------------------------------------------------
    def finish(self, job: Job, reply: Message, now: float, handled: bool = True) -> Message:
        """Shape what the handler gave (``handled``; False for a registration's
        or precondition's reply) into the reply (see the module docstring)."""
        if handled:
            accept = job.accept
            if accept is not None and reply.code < 128 and reply.payload:
                ct = reply.content_format
                if ct is not None and ct != accept:
                    self.stats["not_acceptable"] += 1
                    why = "the representation is in another format"
                    return reply_message(Code.NOT_ACCEPTABLE, why)
            method = job.message.code
            if (method == _GET or method == _FETCH) and reply.code == _CONTENT:
                if job.message.has_option(_ETAG):
                    reply = self._validated(job.message, reply)
        if job.blockwise:
            return self._blockwise_reply(job, reply, now)
        if len(reply.payload) > self.block_size:  # too large for one datagram
            return self._blockwise_reply(job, reply, now)
        return reply

    @staticmethod
    def _validated(request: Message, reply: Message) -> Message:
        """2.03 Valid (ETag and Max-Age kept, no body) when ``request`` names the
        ETag of ``reply``; ``reply`` itself otherwise (RFC 7252 §5.10.6)."""
        etag = reply.etag
        if etag is None or etag not in request.opts(_ETAG):
            return reply
        keep = [o for o in reply.options if o[0] == _ETAG or o[0] == _MAX_AGE]
        return Message(_ACK, _VALID, 0, b"", keep)

    def _blockwise_reply(self, job: Job, reply: Message, now: float) -> Message:
        """Block 0 (or the block asked for) of a reply, its body cached for the
        follow-ups; the reply itself when it fits and no block was asked for."""
        b2 = job.message.block2
        szx = self.block_szx if b2 is None else min(b2.szx, self.block_szx)
        body = reply.payload
        if b2 is None and len(body) <= 1 << (szx + 4):
            if job.block1 is not None:
                reply.options.append((_BLOCK1, encode_uint(job.block1.encode())))
            return reply
        num = 0 if b2 is None else b2.num << (b2.szx - szx)
        etag = self._cache_body(self._block2_key(job.peer, job.message, job.raw_key), reply, now)
        return self._block(reply, etag, num, szx, job.block1)

    def _block(
        self, reply: Message, etag: bytes, num: int, szx: int, block1: Block | None
    ) -> Message:
        """Block ``num`` (of size ``szx``) of ``reply``'s body, with its options."""
        body = reply.payload
        piece = block_of(body, num, szx)
        if piece is None:
            return reply_message(Code.BAD_OPTION, "Block2 past the end of the body")
        payload, block = piece
        opts = block2_options(reply.options, etag, block, len(body))
        if block1 is not None:
            opts.append((_BLOCK1, encode_uint(block1.encode())))
        self.stats["block2_served"] += 1
        return Message(_ACK, reply.code, 0, b"", opts, payload)

    def first_block(self, peer: Any, request: Message, reply: Message, now: float) -> Message:
        """Block 0 of a reply too large for one datagram (an Observe
        notification: the rest is cached for the client's Block2 requests);
        ``reply`` itself when it fits."""
        if len(reply.payload) <= self.block_size:
            return reply
        etag = self._cache_body(self._block2_key(peer, request), reply, now)
        return self._block(reply, etag, 0, self.block_szx, None)

    @staticmethod
    def _block2_key(peer: Any, msg: Message, raw_key: tuple | None = None) -> tuple:
        """What identifies one representation for its Block2 follow-up requests."""
        if raw_key is None:
            raw_key = tuple(msg.opts(O.URI_PATH))
        return (peer, msg.code, raw_key, tuple(msg.opts(O.URI_QUERY)), msg.accept)

    def _cache_body(self, key: tuple, reply: Message, now: float) -> bytes:
        """Keep ``reply``'s body for its later blocks; its ETag (the handler's
        own when it gave one, else the cache's)."""
        own = reply.etag
        kept = (reply.code, follow_up_options(reply.options), own)
        return self.block2.put(key, reply.payload, kept, now, own)

    # -- address verification (RFC 9175 §2.4) -------------------------------
    def vouch(self, msg: Message, peer: Any, now: float) -> tuple[bool, Message | None]:
        """Before :meth:`begin`: is ``peer``'s address verified, and is ``msg``
        the repetition of a challenged request whose reply is held (then it
        is the reply)?"""
        echo = self.echo
        if echo is None:
            return True, None
        if not echo.check(msg, peer, now):
            return False, None
        if msg.has_option(_ECHO):
            return True, echo.release(self._held_key(msg, peer), now)
        return True, None

    def guard(
        self, request: Message, peer: Any, reply: Message, now: float
    ) -> tuple[Message, bool]:
        """After :meth:`finish`, for an address :meth:`vouch` did not verify:
        a reply that would amplify becomes a 4.01 with an Echo challenge.  The
        reply waits for the repetition (the handler runs once), except an
        Observe registration's, which must be undone: the second value of
        the pair says so (no notifications go to an unverified address; the
        repetition registers again)."""
        echo = self.echo
        if echo is None or not echo.amplifies(request, reply):
            return reply, False
        undo = reply.has_option(_OBSERVE)
        if not undo:
            echo.hold(self._held_key(request, peer), reply, now)
        value = echo.challenge(peer, now)
        return reply_message(Code.UNAUTHORIZED, options=[(_MAX_AGE, b""), (_ECHO, value)]), undo

    @staticmethod
    def _held_key(msg: Message, peer: Any) -> tuple:
        """What identifies a request and its repetition with an Echo value."""
        opts = tuple(o for o in msg.options if o[0] != _ECHO)
        return (peer, msg.code, opts, msg.payload)


__all__ = ["ServerPipeline", "Job", "Route", "ANSWER", "HANDLE", "REGISTER", "reply_message"]
