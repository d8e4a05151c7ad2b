"""The CoAP server (layer 4): a router served on a UDP socket.

Handlers are plain blocking functions; each request runs on a parked,
reusable worker greenlet of the hub, so a handler may ``sleep()`` or call
another device without holding up other requests.  Bad input never takes
the server down: malformed CON → RST, malformed NON → dropped, unrecognised
critical option → 4.02, handler exception → 5.00 with its traceback logged;
each is counted in :attr:`Server.stats`.
"""

from __future__ import annotations

import logging
import random
import types
from functools import partial
from time import monotonic
from typing import Any

from . import pktinfo
from .codes import Code, Type
from .dtls_channel import DtlsChannel, psk_lookup_from
from .endpoint import DEFAULT_SOCKET_BUFFER, Endpoint, make_udp_socket, set_buffer_sizes
from .errors import CoapError, MessageFormatError
from .hub import LogThrottle, get_hub, sleep
from .linkformat import filter_links, format_link_format
from .message import Message
from .observers import ObserverRegistry
from .protocol.blockwise import szx_for
from .protocol.blockwise_server import Block1Assembler, Block2Cache
from .protocol.echo import DEFAULT_FACTOR, EchoVerifier
from .protocol.limits import SHED_TRIGGER, LoadLevels, TokenBuckets
from .protocol.messaging import TransmissionParameters
from .protocol.pipeline import ANSWER, REGISTER, Job, ServerPipeline
from .protocol.validation import UNDERSTOOD_OPTIONS
from .response import Request, Response, as_response, cbor_available, first_value
from .router import Router

log = logging.getLogger("greencoap.server")

__all__ = ["Server", "UNDERSTOOD_OPTIONS"]

#: How often a running server lets abandoned state go (see ``_housekeeping``).
HOUSEKEEPING_INTERVAL = 1.0


class Server:
    """Serve ``router`` on ``host``:``port`` (``"::"`` is dual-stack IPv6+IPv4).

    ``start()`` binds and returns at once (the hub serves while the caller's
    greenlets block); ``serve_forever()`` starts and parks until ``stop()``
    or Ctrl-C.  ``port=0`` picks a free port (see :attr:`port`).

    A handler that blocks and is still running ``separate_delay`` seconds
    (default 0.5, well below ACK_TIMEOUT) after it started makes the server
    acknowledge its CON request with an empty ACK; the response then goes as
    a separate CON, retransmitted until the client ACKs it.  ``None``
    disables this.

    Under load the server protects itself (three levels with hysteresis,
    from handlers running plus requests queued): below ``throttle_at`` it
    serves everyone; from there each peer is held to a token bucket of
    ``rate`` requests/s (``burst`` at most), excess CON requests getting 4.29
    Too Many Requests; from ``shed_at`` new NON requests are dropped and new
    CON requests get 5.03 with Max-Age 1.  Retransmissions are still
    answered from the deduplication cache.  All of it is counted in
    :attr:`stats`.

    Observe (RFC 7641) is automatic for generator handlers and routes with
    ``observable=True`` (see :mod:`greencoap.observers`): one CON
    notification in flight per observer (newer states replace it), NON
    notifications paced to about one per round trip, a CON every
    ``con_every``-th notification (a route may say ``con_every=`` or
    ``notifications="con"``), and at most ``max_observers`` observers (of
    which ``max_observers_per_peer`` per client; registrations beyond are
    served without Observe).

    A flood from one source costs little even when each request is fast:
    when ``shed_trigger`` or more datagrams are found queued on the socket
    at once, early shedding engages and holds every source (address and
    port) to the same ``rate``/``burst`` bucket *before* any protocol work
    (in C on the io_uring hub), dropping the excess silently
    (``shed_early`` in :attr:`stats`); it disengages a second after the
    last shed.  A benchmark's 4 × 64 requests in flight stay below the
    default trigger; ``shed_trigger=None`` turns this off.

    Block-wise (RFC 7959) is automatic: Block1 uploads are assembled (2.31
    Continue, 4.08 on a gap, 4.13 with Size1 over ``max_body_size``, stale
    uploads dropped after ``upload_timeout``, all partial bodies together
    capped by ``blockwise_memory``) and the handler sees the whole body once;
    a response larger than ``block_size`` (or than the client's Block2 size)
    is served block by block with an ETag and Size2, the body kept for the
    following block requests so the handler runs once per transfer.

    ``sock`` serves on a UDP socket the caller already bound (legacy code,
    socket activation) instead of binding ``host``:``port``; it is closed
    when the server stops.

    ``multicast=True`` also listens to the All-CoAP-Nodes groups
    (224.0.1.187, ff02::fd, ff05::fd; or the list of groups given) on
    ``multicast_interface`` (a name or an index; None: the kernel's choice)
    at the server's port (RFC 7252 §8.2): a NON request to a group is
    answered as NON, from the server's own address, after a random leisure
    of up to ``multicast_leisure`` seconds (default 5, §8.2's
    DEFAULT_LEISURE); errors (4.xx, 5.xx) are not answered at all, and
    nothing a group receives gets an RST or ACK.  Serve on a wildcard
    ``host`` (``"::"``, ``"0.0.0.0"``) so that answers can reach the link.

    With ``dtls_port`` the same router is also served over DTLS 1.2 with
    pre-shared keys (``coaps://``, TLS_PSK_WITH_AES_128_CCM_8): ``psk`` is a
    dict ``{identity: key}`` or a callable ``identity -> key or None``;
    ``psk_hint`` is sent to clients that ask which key to use.  A handler sees
    the authenticated identity as :attr:`Request.identity` (None for plain
    CoAP).  ``dtls_sessions`` caps the sessions kept (least recently used
    evicted), ``dtls_idle_timeout`` drops silent ones.
    """

    #: seconds between two sweeps of the expiring tables (Block1/Block2
    #: state, rate buckets, Echo): how late abandoned state may be let go;
    #: None: no timer of its own, the owner calls :meth:`housekeep` (a fleet
    #: sweeps its devices from one timer)
    housekeeping_interval: float | None = HOUSEKEEPING_INTERVAL

    def __init__(
        self,
        router: Router,
        host: str = "::",
        port: int = 5683,
        *,
        ack_timeout: float = 2.0,
        ack_random_factor: float = 1.5,
        max_retransmit: int = 4,
        buffer_size: int | None = DEFAULT_SOCKET_BUFFER,
        reuse_port: bool = False,
        separate_delay: float | None = 0.5,
        con_every: int = 20,
        max_observers: int = 65536,
        max_observers_per_peer: int = 64,
        workers: int = 1,
        throttle_at: int = 2048,
        shed_at: int = 8192,
        rate: float = 100.0,
        burst: float = 200.0,
        shed_trigger: int | None = SHED_TRIGGER,
        echo_factor: float | None = DEFAULT_FACTOR,
        max_body_size: int = 1 << 20,
        block_size: int = 1024,
        upload_timeout: float = 60.0,
        blockwise_memory: int = 64 << 20,
        dtls_port: int | None = None,
        psk: dict | Any = None,
        psk_hint: str | bytes = b"",
        dtls_sessions: int = 10_000,
        dtls_idle_timeout: float = 300.0,
        sock: Any = None,
        multicast: bool | list[str] = False,
        multicast_interface: str | int | None = None,
        multicast_leisure: float = 5.0,
    ) -> None:
        self.router = router
        #: an already bound UDP socket to serve on instead of binding host:port
        self._sock = sock
        if sock is not None:
            host, port = sock.getsockname()[:2]
        if not any(r.path == "/.well-known/core" for r in router.routes):
            router.add(Code.GET, "/.well-known/core", self._well_known_core, ct=40)
        self.host = host
        self._port = port
        self.params = TransmissionParameters(
            ack_timeout=ack_timeout,
            ack_random_factor=ack_random_factor,
            max_retransmit=max_retransmit,
        )
        self.buffer_size = buffer_size
        self.reuse_port = reuse_port
        self.separate_delay = separate_delay
        self.workers = workers
        if workers > 1:
            self.reuse_port = True
        self.endpoint: Endpoint | None = None
        #: the DTLS endpoint when ``dtls_port`` is set and the server runs
        self.secure_endpoint: Endpoint | None = None
        if dtls_port is not None:
            if psk is None:
                raise ValueError("dtls_port needs psk={identity: key} (or a callable)")
            psk_lookup_from(psk)  # validate early
        self._dtls_port = dtls_port
        self.psk = psk
        self.psk_hint = psk_hint
        self.dtls_sessions = dtls_sessions
        self.dtls_idle_timeout = dtls_idle_timeout
        from .multicast import ALL_COAP_NODES

        #: the groups listened to (``multicast=``) and their endpoints once started
        self.multicast_groups: tuple[str, ...] = (
            ALL_COAP_NODES if multicast is True else tuple(multicast or ())
        )
        self.multicast_interface = multicast_interface
        self.multicast_leisure = multicast_leisure
        self.group_endpoints: list[Endpoint] = []
        self.hub = None
        self._stopped = None
        #: the live counters the server's parts increment (the pipeline, the
        #: observers); :attr:`stats` is the snapshot to read
        self.counters: dict[str, int] = {
            "handler_errors": 0,
            "bad_option": 0,
            "not_found": 0,
            "bad_request": 0,
            "observers": 0,
            "observe_registrations": 0,
            "observe_refused": 0,
            "not_acceptable": 0,
            "block1_incomplete": 0,
            "block1_too_large": 0,
            "block1_busy": 0,
            "block2_served": 0,
            "load_level": 0,
            "load_level_changes": 0,
            "throttled": 0,
            "shed": 0,
            "multicast_requests": 0,
            "multicast_answered": 0,
            "multicast_suppressed": 0,
            "multicast_ignored": 0,
        }
        self._rng = random.Random()  # the multicast leisure
        self.observers = ObserverRegistry(self, con_every, max_observers, max_observers_per_peer)
        self._housekeeper: Any = None
        self._handler_log = LogThrottle()
        self.load = LoadLevels(throttle_at, shed_at)
        self.buckets = TokenBuckets(rate, burst)
        self.shed_trigger = shed_trigger
        self.block_szx = szx_for(block_size)
        self.block1 = Block1Assembler(max_body_size, blockwise_memory, upload_timeout)
        self.block2 = Block2Cache(upload_timeout, blockwise_memory)
        #: the RFC decisions about each request (sans-I/O; see its module)
        self.pipeline = ServerPipeline(
            router.resolve_raw,
            block_size=block_size,
            block_szx=self.block_szx,
            block1=self.block1,
            block2=self.block2,
            echo=EchoVerifier(echo_factor) if echo_factor is not None else None,
            stats=self.counters,
            load=self.load,
            buckets=self.buckets,
            cbor_available=cbor_available,
        )
        self._last_stats: dict[str, int] = {}
        #: plain requests skip handle_request (a subclass overriding it gets all)
        self._plain_path = type(self).handle_request is Server.handle_request

    @property
    def echo(self) -> EchoVerifier | None:
        """Amplification mitigation (RFC 9175 §2.4); None when turned off
        (settable: None turns it off for the requests that follow)."""
        return self.pipeline.echo

    @echo.setter
    def echo(self, value: EchoVerifier | None) -> None:
        self.pipeline.echo = value

    @property
    def port(self) -> int:
        """The bound port (useful with ``port=0``)."""
        return self._port

    @property
    def dtls_port(self) -> int | None:
        """The bound DTLS port (None without DTLS)."""
        return self._dtls_port

    @property
    def stats(self) -> dict[str, int]:
        """Counters: requests, duplicates, malformed, pings, handler errors, …

        With DTLS, the secure endpoint's counters are added in (message-layer
        ones summed with the plain endpoint's; ``dtls_*`` from the engine:
        handshakes, bad records, authentication failures, replays, alerts).
        """
        s = dict(self.counters)
        if self.echo is not None:
            s.update(self.echo.stats)
        if self.endpoint is None:
            s.update(self._last_stats)
            return s
        s.update(self.endpoint.stats)
        if self.secure_endpoint is not None:
            for k, v in self.secure_endpoint.stats.items():
                s[k] = s.get(k, 0) + v
        return s

    def table_sizes(self) -> dict[str, int]:
        """Sizes of every table the server keeps (for soak tests and leak
        checks): observers, block-wise state, rate buckets, and each
        endpoint's message layer (prefixed ``dtls_`` for the secure one) and
        DTLS sessions.  Everything returns to its idle size when the traffic
        stops and the entries' lifetimes pass."""
        out = {
            **self.observers.table_sizes(),
            "block1_uploads": len(self.block1),
            "block1_bytes": self.block1.memory,
            "block2_bodies": len(self.block2),
            "block2_bytes": self.block2.memory,
            "rate_buckets": len(self.buckets),
        }
        if self.echo is not None:
            out.update(self.echo.table_sizes())
        for prefix, ep in (("", self.endpoint), ("dtls_", self.secure_endpoint)):
            if ep is None:
                continue
            for k, v in ep.table_sizes().items():
                out[prefix + k] = v
        return out

    def start(self) -> Server:
        """Bind the socket and start serving on this thread's hub."""
        if self.endpoint is not None:
            return self
        from .sync import Event

        self.hub = get_hub()
        sock = self._sock
        if sock is None:
            sock = make_udp_socket(
                self.host,
                self._port,
                reuse_port=self.reuse_port,
                buffer_size=self.buffer_size,
                reuse_addr=bool(self.multicast_groups),  # the group sockets share its port
            )
        else:
            self._sock = None  # served once: a stopped server closed it
            if self.buffer_size:
                set_buffer_sizes(sock, self.buffer_size)
            if sock.getsockname()[0] in ("::", "0.0.0.0"):
                pktinfo.request(sock)  # answer from the address asked
        self.endpoint = Endpoint(
            sock,
            params=self.params,
            on_request=self._handle,
            hub=self.hub,
            separate_delay=self.separate_delay,
        )
        self.endpoint.admit = self.pipeline.admission
        self._limit_sources(self.endpoint)
        self._port = self.endpoint.address[1]
        if self._dtls_port is not None:
            sock = make_udp_socket(
                self.host, self._dtls_port, reuse_port=self.reuse_port, buffer_size=self.buffer_size
            )
            channel = partial(
                DtlsChannel,
                self.hub,
                role="server",
                psk=self.psk,
                hint=self.psk_hint,
                max_sessions=self.dtls_sessions,
                idle_timeout=self.dtls_idle_timeout,
            )
            ep = self.secure_endpoint = Endpoint(
                sock,
                params=self.params,
                on_request=self._handle,
                hub=self.hub,
                separate_delay=self.separate_delay,
                channel=channel,
            )
            ep.admit = self.pipeline.admission
            self._limit_sources(ep)
            self._dtls_port = ep.address[1]
        if self.multicast_groups:
            self._listen_to_groups()
        self._stopped = Event()
        if self.housekeeping_interval is not None:
            self._housekeeper = self.hub.call_later(self.housekeeping_interval, self._housekeeping)
        return self

    def _listen_to_groups(self) -> None:
        """A receive-only endpoint per group (see the class docstring)."""
        from .multicast import ReceiveOnly, group_socket, no_group_traffic

        no_group_traffic(self.endpoint.sock)  # the unicast socket: its own datagrams only
        try:
            for group in self.multicast_groups:
                gsock = group_socket(group, self._port, self.multicast_interface)
                ep = Endpoint(
                    gsock, params=self.params, on_request=self._handle_group, hub=self.hub
                )
                ep.impairment = ReceiveOnly()
                self.group_endpoints.append(ep)
        except BaseException:
            self.stop()
            raise

    def _handle_group(self, group_ep: Endpoint, msg: Message, peer: tuple) -> None:
        """A request that came to a group (on a worker): answered as NON after
        the leisure, from the unicast socket; errors and CONs get nothing."""
        stats = self.counters
        if msg.mtype != Type.NON or msg.code == 0:
            stats["multicast_ignored"] += 1  # §8.1: multicast requests are NON
            return
        stats["multicast_requests"] += 1
        # an observer registered by a group request notifies from the unicast socket
        reply = self.handle_request(msg, peer, self.endpoint)
        if reply.code >= 128:
            stats["multicast_suppressed"] += 1  # §8.2: no error responses to a group
            return
        leisure = self.multicast_leisure
        if leisure > 0:
            sleep(self._rng.uniform(0.0, leisure))
        ep = self.endpoint
        if ep is None:
            return
        from .multicast import unicast_peer

        reply.mtype = Type.NON
        reply.token = msg.token
        ep.send(reply, unicast_peer(peer, ep.family))
        stats["multicast_answered"] += 1

    def housekeep(self, now: float) -> None:
        """Let the tables of abandoned state go -- Block1 uploads and Block2
        bodies past their lifetime, rate buckets that are full again, Echo
        verifications past theirs -- whether or not more requests come.  The
        server's timer calls it every :attr:`housekeeping_interval` s (in
        the hub); an owner that set the interval to None calls it itself."""
        if self.endpoint is None:
            return
        self.block1.expire(now)
        self.block2.expire(now)
        self.buckets.expire(now)
        if self.echo is not None:
            self.echo.expire(now)

    def _housekeeping(self) -> None:
        """Timer: :meth:`housekeep`, then again after the interval."""
        try:
            self.housekeep(monotonic())
        finally:
            if self.endpoint is not None and self.housekeeping_interval is not None:
                self._housekeeper = self.hub.call_later(
                    self.housekeeping_interval, self._housekeeping
                )

    def _limit_sources(self, ep: Endpoint) -> None:
        """Early shedding on ``ep``'s socket (see the class docstring)."""
        limit = getattr(ep.channel, "limit_sources", None)
        if limit is not None and self.shed_trigger:
            limit(self.buckets.rate, self.buckets.burst, self.shed_trigger)

    def serve_forever(self, timeout: float | None = None) -> None:
        """Start, then park this greenlet until :meth:`stop` (or ``timeout`` s).

        With ``workers=N`` (N > 1) this forks N processes sharing the port
        (SO_REUSEPORT), each with its own hub, and waits for them; SIGINT or
        SIGTERM shuts them all down gracefully.
        """
        if self.workers > 1:
            from .workers import serve_workers

            serve_workers(self, timeout)
            return
        self.start()
        try:
            self._stopped.wait(timeout)
        finally:
            self.stop()

    def shutdown(self, grace: float = 5.0) -> None:
        """Graceful stop: ignore new requests, let running handlers finish (at
        most ``grace`` seconds), end observations with 5.03, then close."""
        eps = [ep for ep in (self.endpoint, self.secure_endpoint) if ep is not None]
        for ep in eps:
            ep.accepting = False
        deadline = monotonic() + grace
        while any(ep.busy for ep in eps) and monotonic() < deadline:
            sleep(0.01)
        self.stop()

    def notify(self, path: str) -> None:
        """Re-render ``path`` for all its observers (push-style resources).

        Callable from any OS thread; the handlers run on the server's hub.
        """
        hub = self.hub
        if hub is None:
            return
        hub.run_callback_threadsafe(self.observers.notify, "/" + path.strip("/"))

    def stop(self, final: bool = True) -> None:
        """End observations (a final 5.03 each), stop serving, close the socket.

        ``final=False`` sends nothing to observers (a device losing power, as
        simulated by :mod:`greencoap.fleet`)."""
        if self._housekeeper is not None:
            self._housekeeper.cancel()
            self._housekeeper = None
        if self.endpoint is not None:
            self.observers.close(final)
            self._last_stats = self.stats
            if self.secure_endpoint is not None:
                self.secure_endpoint.close()
                self.secure_endpoint = None
            for ep in self.group_endpoints:
                ep.close()
            self.group_endpoints = []
            self.endpoint.close()
            self.endpoint = None
        if self._stopped is not None:
            self._stopped.set()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _well_known_core(self, request: Request) -> Response:
        """RFC 6690 discovery: the router's links, filtered by the query (§4.1)."""
        links = self.router.links()
        query = list(request.query.items())
        if query:
            links = filter_links(links, query)
        return Response(Code.CONTENT, format_link_format(links).encode(), content_format=40)

    # -- request handling (on worker greenlets) ------------------------
    def _handle(self, ep: Endpoint, msg: Message, peer: tuple) -> None:
        """On a worker: answer one request that came to ``ep``.

        A request :meth:`ServerPipeline.plain` finds plain (the common case)
        gets the same reply as the full path (:meth:`_handle_full`) with
        fewer steps: no :class:`Job`, address verification only looked up
        (as a request without Echo needs)."""
        pipeline = self.pipeline
        plan = pipeline.plain(msg) if self._plain_path else None
        if plan is None:
            self._handle_full(ep, msg, peer)
            return
        route, params, raw = plan
        echo = pipeline.echo
        now = monotonic()
        verified = echo is None or ep is self.secure_endpoint or echo.verified(peer, now)
        try:
            result = route.handler(Request(msg, peer, params), **params)
            if result.__class__ is Response:
                reply = result.to_message()
            else:
                reply = self._reply_of(result, msg.code, None)
        except Exception as e:  # noqa: BLE001 - every failure becomes a reply
            reply = self._failure(e, msg.code, route)
        if len(reply.payload) > pipeline.block_size:  # (a call less for the common reply)
            reply = pipeline.finish_plain(msg, peer, raw, reply, now)
        if not verified and echo.amplifies(msg, reply):  # nothing much larger goes to it
            reply = self._guard(msg, peer, reply, now)
        ep.queue_response(msg, peer, reply)

    def _handle_full(self, ep: Endpoint, msg: Message, peer: tuple) -> None:
        """:meth:`_handle` for a request that needs the pipeline's decisions."""
        pipeline = self.pipeline
        if pipeline.echo is None or ep is self.secure_endpoint:  # DTLS proved the address
            ep.respond(msg, peer, self.handle_request(msg, peer, ep))
            return
        verified, held = pipeline.vouch(msg, peer, monotonic())
        if held is not None:  # the repetition of a challenged request: its reply waited
            ep.respond(msg, peer, held)
            return
        reply = self.handle_request(msg, peer, ep)
        if not verified:  # nothing much larger than the request goes to it
            reply = self._guard(msg, peer, reply, monotonic())
        ep.respond(msg, peer, reply)

    def _guard(self, msg: Message, peer: tuple, reply: Message, now: float) -> Message:
        """:meth:`ServerPipeline.guard` for an unverified address: the reply,
        or the challenge in its place (an Observe registration it undoes is
        dropped: no notifications to an unverified address; the repetition
        registers)."""
        reply, undo = self.pipeline.guard(msg, peer, reply, now)
        if undo:
            self.observers.drop((peer, msg.token), "unverified")
        return reply

    def handle_request(self, msg: Message, peer: tuple, via: Endpoint) -> Message:
        """Answer one request message: the pipeline's decisions around the
        route's handler (see :mod:`greencoap.protocol.pipeline`); returns the
        reply message (its type, MID and token are the message layer's).
        ``via`` is the endpoint it came to: an observer registered by it
        notifies from there."""
        pipeline = self.pipeline
        job = pipeline.begin(msg, peer, monotonic())
        if job.action is ANSWER:
            return job.reply
        reply, handled = self._run(job, via)
        return pipeline.finish(job, reply, monotonic(), handled)

    def _run(self, job: Job, via: Endpoint) -> tuple[Message, bool]:
        """Run the application's part of ``job``: register an observer, or ask
        the route for its current ETag (the pipeline checks the preconditions)
        and run its handler.  Returns the reply and whether the handler made it
        (False: the registration's, a precondition's, an error's)."""
        msg, peer, route, params = job.message, job.peer, job.route, job.params
        try:
            request = Request(msg, peer, params)
            if job.action is REGISTER:
                return self.observers.register(request, route, params, via).to_message(), False
            if job.deregister:
                self.observers.drop((peer, msg.token), "deregistered")
            if route.etag_of is not None:
                current = route.etag_of(request, **params)
                refused = self.pipeline.preconditions(job, current)
                if refused is not None:
                    return refused, False
            return self._reply_of(route.handler(request, **params), msg.code, job.accept), True
        except Exception as e:  # noqa: BLE001 - every failure becomes a reply
            return self._failure(e, msg.code, route), False

    @staticmethod
    def _reply_of(result: Any, method: int, accept: int | None) -> Message:
        """The message for what a handler returned (a Response, or a value
        :func:`as_response` turns into one)."""
        if result.__class__ is not Response:
            if isinstance(result, types.GeneratorType):
                result = first_value(result)  # an observable resource read without Observe
            result = as_response(result, method, accept)
        return result.to_message()

    def _failure(self, e: Exception, method: int, route: Any) -> Message:
        """The reply to a request whose handling raised ``e`` (called in its
        ``except`` block: an unexpected error is logged with its traceback)."""
        if isinstance(e, CoapError):
            code = e.code if e.code is not None else Code.INTERNAL_SERVER_ERROR
            return Response(code, e.message).to_message()
        if isinstance(e, MessageFormatError):  # e.g. a Uri-Query that is not UTF-8
            self.counters["bad_request"] += 1
            return Response(Code.BAD_REQUEST, str(e)).to_message()
        self.counters["handler_errors"] += 1
        self.log_handler_error("handler for %s %s failed", Code(method), route.path)
        return Response(Code.INTERNAL_SERVER_ERROR).to_message()

    def log_handler_error(self, text: str, *args: Any) -> None:
        """Log the exception being handled with its traceback (a handler
        failed: the client got 5.00), at most :data:`~greencoap.hub.ERROR_LOG_BURST`
        per :data:`~greencoap.hub.ERROR_LOG_WINDOW` seconds."""
        note = self._handler_log.allow(monotonic())
        if note is not None:
            log.exception(text + "%s", *args, note)
