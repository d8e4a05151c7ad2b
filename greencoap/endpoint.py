"""An endpoint: one UDP socket + the hub + the message layer (layer 3).

The endpoint is the glue between the sans-I/O :class:`MessageLayer` and the
hub: datagrams from the backend go into ``layer.receive``; what the engine
wants sent goes out through the backend's channel; the engine's next deadline
becomes one hub timer.  Greenlets that wait for a response park on a
:class:`~greencoap.hub.Waiter` stored in the exchange and are resumed from
the hub when the engine reports the exchange finished.

Both the client and the server build on this class; the server passes an
``on_request`` callback, called with ``(endpoint, message, peer)`` on a
worker greenlet (it may block; the requests of one received batch share a
worker until one of them blocks), and may set ``admit`` (admission control,
whose verdicts the endpoint carries out itself: nothing calls back up from
the batch).
"""

from __future__ import annotations

import _socket  # the C socket type: never gevent-patched, no wrapper overhead
import socket
from collections import deque
from collections.abc import Callable
from random import Random
from time import monotonic
from typing import Any

from . import pktinfo
from .backends import DatagramChannel
from .errors import ClientClosedError, RequestTimeoutError, ResetError
from .hub import DeadlineTimer, Waiter, get_hub
from .message import Message
from .options import OptionNumber
from .protocol.events import NotificationReceived, RequestReceived
from .protocol.exchange import Outcome, ReplyExchange, RequestExchange
from .protocol.messaging import ACK, CON, MessageLayer, TransmissionParameters

DEFAULT_SOCKET_BUFFER = 4 * 1024 * 1024
_MAX_AGE = int(OptionNumber.MAX_AGE)
_RESPONSE = Outcome.RESPONSE  # a global: an Enum member lookup costs a Python hook on 3.11


def make_udp_socket(
    host: str | None,
    port: int = 0,
    *,
    reuse_port: bool = False,
    buffer_size: int | None = DEFAULT_SOCKET_BUFFER,
    reuse_addr: bool = False,
) -> socket.socket:
    """Create and bind a non-blocking UDP socket.

    ``host=None`` gives a dual-stack IPv6 socket on an ephemeral port (IPv4
    when the machine has no IPv6).  ``host="::"`` is dual-stack too.  Send and
    receive buffers are enlarged to ``buffer_size`` (the kernel default drops
    datagrams under load); ``None`` keeps the kernel's.  An explicit wildcard
    ``host`` (``"::"``, ``"0.0.0.0"``: a server's) also asks for each
    datagram's destination address, so that replies leave from the address the
    peer wrote to (:mod:`greencoap.pktinfo`); ``host=None`` does not.
    """
    wildcard = False
    if host is None or host == "":
        family, addr = (socket.AF_INET6, ("::", port)) if socket.has_ipv6 else (0, None)
        try:
            sock = _socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        except OSError:
            family, addr = socket.AF_INET, ("0.0.0.0", port)
            sock = _socket.socket(family, socket.SOCK_DGRAM)
    else:
        family, addr = _literal(host, port) or _resolve(host, port)
        sock = _socket.socket(family, socket.SOCK_DGRAM)
        wildcard = addr[0] in ("::", "0.0.0.0")
    try:
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            if addr is None:
                addr = ("::", port)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if reuse_addr:  # a multicast group socket shares the port (bound to the group)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if buffer_size:
            set_buffer_sizes(sock, buffer_size)
        if wildcard:
            pktinfo.request(sock)
        sock.bind(addr)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _literal(host: str, port: int) -> tuple[int, tuple] | None:
    """``(family, address)`` when ``host`` is a numeric IPv4 or IPv6 address
    (no resolver round trip: a fleet binds thousands of sockets), else None."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except (OSError, ValueError):
            continue
        return family, (host, port) if family == socket.AF_INET else (host, port, 0, 0)
    return None


def _resolve(host: str, port: int) -> tuple[int, tuple]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
    family, _, _, _, addr = infos[0]
    return family, addr


def set_buffer_sizes(sock: socket.socket, size: int) -> None:
    """Ask for ``size``-byte send/receive buffers (forced when privileged)."""
    for force, plain in ((33, socket.SO_RCVBUF), (32, socket.SO_SNDBUF)):  # SO_*BUFFORCE
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        except OSError:
            try:
                sock.setsockopt(socket.SOL_SOCKET, plain, size)
            except OSError:
                pass


def peer_key(sock_family: int, addr: tuple) -> tuple:
    """The address tuple the socket uses for ``addr`` (IPv4 mapped on IPv6 sockets)."""
    if sock_family == socket.AF_INET6 and len(addr) == 2:
        host = addr[0]
        if ":" not in host:
            host = "::ffff:" + host
        return (host, addr[1], 0, 0)
    return addr


def display_peer(addr: tuple) -> tuple[str, int]:
    """``(host, port)`` for humans: IPv4-mapped IPv6 addresses unmapped."""
    host = addr[0]
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return (host, addr[1])


class Endpoint:
    """A UDP socket driven by the hub through a :class:`MessageLayer`."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        params: TransmissionParameters | None = None,
        token_length: int = 4,
        on_request: Callable[[Endpoint, Message, Any], None] | None = None,
        hub: Any = None,
        rng: Random | None = None,
        separate_delay: float | None = None,
        channel: Callable | None = None,
    ) -> None:
        self.hub = hub or get_hub()
        self.sock = sock
        self.family = sock.family
        self.layer = MessageLayer(params, rng=rng or Random(), token_length=token_length)
        self.on_request = on_request
        self.separate_delay = separate_delay
        self._requests: deque = deque()
        self._current: tuple | None = None
        self._queued = False  # in the hub's request runner's queue
        #: ``trace(direction, datagram, peer)`` hears of every message sent
        #: ("out") and received ("in"); None (the default) costs nothing
        self.trace: Callable[[str, bytes, Any], None] | None = None
        self._separate: dict[int, Any] = {}  # id(request) -> its separate-ACK timer
        self.accepting = True  # False while draining: new requests are ignored
        #: admission control: ``admit(load)`` returns None (serve everything)
        #: or a ``check(msg, peer, now)`` to apply to each new request, whose
        #: verdict is None (serve it) or a response code to refuse it with
        #: (a CON gets that code with Max-Age 1 from here; a NON nothing)
        self.admit: Callable | None = None
        self.busy = 0  # handlers running (blocked ones included)
        self.closed = False
        #: exceptions caught on this endpoint's receive and timer paths (bugs)
        self.internal_errors = 0
        #: a simulated bad network (:class:`~greencoap.protocol.impairment.Impairment`)
        #: that both directions pass through; None (the default) costs nothing
        self.impairment: Any = None
        self._deadline = DeadlineTimer(self.hub, self._on_timer)
        # ``channel(sock, on_batch)`` wraps the socket (DTLS); the backend's by default
        self.channel: DatagramChannel = (channel or self.hub.io.open_channel)(sock, self._on_batch)
        if hasattr(self.channel, "on_failure"):
            self.channel.on_failure = self.fail_peer

    @property
    def address(self) -> tuple:
        """The local ``(host, port, ...)`` the socket is bound to."""
        return self.sock.getsockname()

    @property
    def stats(self) -> dict[str, int]:
        """Counters from the message layer and the socket channel."""
        s = dict(self.layer.stats)
        s.update(self.channel.stats)
        s["internal_errors"] = self.internal_errors + s.get("internal_errors", 0)
        if self.impairment is not None:
            s.update(self.impairment.stats)
        return s

    def table_sizes(self) -> dict[str, int]:
        """Sizes of the message layer's tables and of this endpoint's own
        (requests queued, separate-response timers; DTLS sessions)."""
        out = self.layer.table_sizes()
        out["requests_queued"] = len(self._requests)
        out["separate_timers"] = len(self._separate)
        sizes = getattr(self.channel, "table_sizes", None)
        if sizes is not None:
            out.update(sizes())
        return out

    # -- hub side ------------------------------------------------------
    def _on_batch(self, batch: list) -> None:
        """The backend's datagrams for this socket (in the hub).

        A bug anywhere below (the message layer, admission, an Observe sink)
        costs only the datagram that hit it: it is reported through the hub's
        error handler, counted as ``internal_errors``, and the batch goes on.
        """
        impairment = self.impairment
        if impairment is not None:
            batch = impairment.inbound(batch)
            if not batch:
                return
        layer = self.layer
        receive = layer.receive
        requests = self._requests
        now = monotonic()
        admit = self.admit
        if admit is not None:
            try:
                admit = admit(self.busy + len(requests))  # None: serve all (normal load)
            except Exception:  # noqa: BLE001
                self._internal_error(admit)
                admit = None
        trace = self.trace
        for data, addr in batch:
            ev = None
            try:
                if trace is not None:
                    trace("in", data, addr)
                ev = receive(data, addr, now)
                if ev is not None:
                    kind = type(ev)
                    if kind is RequestReceived:
                        msg, peer = ev
                        if self.on_request is not None and self.accepting:
                            refusal = None if admit is None else admit(msg, peer, now)
                            if refusal is None:
                                requests.append(ev)
                            elif msg.mtype == CON:
                                self._refuse(msg, peer, refusal)
                        ev = None
                    elif kind is NotificationReceived:
                        sink = ev.exchange.sink
                        if sink is not None:
                            sink(ev.message)
                    else:
                        ex = ev[0]
                        w = ex.waiter
                        if w is not None:
                            w.switch(ex)
                if layer.outbox:
                    self._drain()
            except Exception:  # noqa: BLE001 - one datagram's bug must not cost the rest
                self._internal_error(receive)
                if type(ev) is RequestReceived:
                    # accepted but never queued: its retransmission must count as new
                    layer.forget_request(ev.message, ev.peer)
        if layer.outbox:
            self._drain()
        self._arm()
        if requests:
            runner_of(self.hub).add(self)

    def _internal_error(self, where: Any) -> None:
        """A bug caught on the receive path: count it and report it."""
        self.internal_errors += 1
        self.hub.handle_error(where)

    def _parked(self) -> None:
        """The handler of :attr:`_current` parked its worker: it is slow.  A CON
        request gets a timer: if the handler is still running after
        ``separate_delay`` seconds, the request is acknowledged with an empty
        ACK and its response will go as a separate CON (RFC 7252 §5.2.2)."""
        self._send_queued()  # the replies of the requests before it
        item = self._current
        if item is not None and self.separate_delay is not None:
            msg, peer = item
            if msg.mtype == CON and id(msg) not in self._separate:
                self._separate[id(msg)] = self.hub.call_later(
                    self.separate_delay, self._acknowledge, msg, peer
                )

    def _work(self, requests: deque, runner: _Runner) -> bool:
        """On a worker greenlet (see :class:`_Runner`): handle requests until
        none is left, or until a handler has parked the worker.  True when
        one did: the worker was resumed later, from the hub rather than from
        ``runner``, so it must stop here — were it to take the next request
        and park on that one, nothing would call :meth:`_parked` for it (no
        separate-ACK timer, the replies before it left queued)."""
        popleft = requests.popleft
        layer = self.layer
        handler = self.on_request
        parked = False
        while requests and not parked:
            msg, peer = item = popleft()
            if self.closed:
                return False
            self._current = item
            layer.started(msg, peer)
            self.busy += 1
            parks = runner.parks
            try:
                handler(self, msg, peer)
            except Exception:  # noqa: BLE001 - one bad handler must not drop the rest
                self.hub.handle_error(handler)
            finally:
                self.busy -= 1
                if self._current is item:
                    self._current = None
                if self._separate:
                    t = self._separate.pop(id(msg), None)
                    if t is not None:
                        t.cancel()
            parked = runner.parks != parks
        self._send_queued()
        return parked

    def _send_queued(self) -> None:
        """Send what :meth:`queue_response` left in the outbox (at the end of a
        worker's run of requests, and when a handler parks it)."""
        layer = self.layer
        if layer.outbox and not self.closed:
            try:
                self._drain()
            except Exception:  # noqa: BLE001 - a refused datagram costs only itself
                self.hub.handle_error(self._drain)
        self._arm()  # a separate CON response is retransmitted until ACKed

    def _acknowledge(self, msg: Message, peer: Any) -> None:
        """Timer: a slow handler's CON request gets its empty ACK now."""
        self._separate.pop(id(msg), None)
        if not self.closed:
            self.layer.acknowledge(msg, peer)
            if self.layer.outbox:
                self._drain()

    def _drain(self) -> None:
        """Hand what the message layer queued to the channel.  A datagram the
        channel refuses (a DTLS peer with no key, an address it cannot use)
        does not hold back the others; the first such error is raised after."""
        layer = self.layer
        out, layer.outbox = layer.outbox, []
        if self.impairment is not None:
            out = self.impairment.outbound(out)
        send = self.channel.sendto
        trace = self.trace
        error = None
        for data, peer in out:
            try:
                if trace is not None:
                    trace("out", data, peer)
                send(data, peer)
            except Exception as e:  # noqa: BLE001
                if error is None:
                    error = e
        if error is not None:
            raise error

    def _arm(self) -> None:
        """Re-arm the endpoint's one timer if the engine scheduled something earlier."""
        layer = self.layer
        d = layer.new_due
        if d < self._deadline.at:
            layer.new_due = float("inf")
            self._deadline.arm(d)

    def _on_timer(self) -> None:
        if self.closed:
            return
        layer = self.layer
        try:
            events = layer.expire(monotonic())
        except Exception:  # noqa: BLE001 - the timer must outlive a bug
            self._internal_error(layer.expire)
            events = ()
        layer.new_due = float("inf")
        d = layer.next_deadline()
        if d is not None:
            self._deadline.arm(d)
        for (ex,) in events:
            w = ex.waiter
            if w is not None:
                try:
                    w.switch(ex)
                except Exception:  # noqa: BLE001
                    self._internal_error(w.switch)
        if layer.outbox:
            self._drain()
        self._arm()

    # -- greenlet side ---------------------------------------------------
    def request(self, msg: Message, peer: tuple, timeout: float, mid: int | None = None) -> Message:
        """Send request ``msg`` to ``peer`` and park until its response.

        Raises :class:`RequestTimeoutError` after ``timeout`` seconds (which
        covers NSTART queueing, retransmissions and a separate response) and
        :class:`ResetError` when the peer answers RST.  The token is
        ``msg.token`` when set (else a fresh one); ``mid`` is the message ID
        to send it with (else a fresh one).
        """
        ex = self._exchange(msg, peer, timeout, False, None, mid=mid)
        result = ex.result
        # the engine's timer buckets keep finished exchanges for a while: let
        # them hold nothing big (fewer live objects for the cyclic GC)
        ex.result = ex.datagram = None
        return result

    def observe(
        self,
        msg: Message,
        peer: tuple,
        timeout: float,
        sink: Callable[[Message], None],
        replace: bool = False,
    ) -> RequestExchange:
        """Send an Observe registration; park until its first response.

        Returns the exchange: ``exchange.result`` is the first response, and
        while ``exchange.observing`` every notification is passed to
        ``sink(message)`` in the hub.  End it with :meth:`forget`.
        ``replace``: a re-registration with the token of an observation
        still observing (it takes that exchange's place).
        """
        return self._exchange(msg, peer, timeout, True, sink, replace)

    def forget(self, ex: RequestExchange) -> None:
        """Drop an observation locally (a later notification then gets RST)."""
        if not ex.done:
            self.layer.cancel(ex, monotonic())
            if self.layer.outbox:
                self._drain()
            self._arm()

    def _exchange(
        self,
        msg: Message,
        peer: tuple,
        timeout: float,
        observe: bool,
        sink: Any,
        replace: bool = False,
        mid: int | None = None,
    ) -> RequestExchange:
        if self.closed:
            raise ClientClosedError("the endpoint is closed")
        layer = self.layer
        ex = layer.request(msg, peer, monotonic(), timeout, observe, replace, mid)
        ex.sink = sink
        # one Waiter per wait: only this exchange can resume this call, and a
        # late event for it (after it gave up) wakes nothing
        w = ex.waiter = Waiter(self.hub)
        try:
            if layer.outbox:
                self._drain()  # may raise (a DTLS peer without a key, a bad address)
            self._arm()
            w.get()
        finally:
            ex.waiter = None
            if ex.awaiting:  # left early: an exception, a kill, a Timeout
                layer.cancel(ex, monotonic())
                if layer.outbox:
                    self._drain()
                self._arm()
        outcome = ex.outcome
        if outcome is _RESPONSE or outcome is None:  # None: observing
            return ex
        if outcome is Outcome.TIMEOUT:
            stale = getattr(self.channel, "peer_timed_out", None)
            if stale is not None:  # DTLS: maybe the peer lost our session (restarted)
                stale(peer, monotonic() - timeout)
            who = display_peer(peer)
            raise RequestTimeoutError(f"no response from {who} within {timeout:.3g} s")
        if outcome is Outcome.RESET:
            raise ResetError(f"{display_peer(peer)} answered with RST")
        if ex.error is not None:  # e.g. the peer's DTLS handshake failed
            raise ex.error
        raise ClientClosedError("the endpoint was closed while waiting")

    def _refuse(self, msg: Message, peer: Any, code: int) -> None:
        """Admission refused a CON (in the batch): ``code`` with Max-Age 1 (retry later)."""
        self.respond(msg, peer, Message(ACK, code, 0, b"", [(_MAX_AGE, b"\x01")]))

    def queue_response(self, request: Message, peer: Any, response: Message) -> None:
        """:meth:`respond` from a handler's worker (the ``on_request``
        callback): the datagram goes out with the others of this run of
        requests, when the worker is done with them or parks (a channel
        sends a turn's datagrams together anyway)."""
        if not self.closed:
            self.layer.respond(request, peer, response, monotonic())

    def respond(self, request: Message, peer: Any, response: Message) -> None:
        """Answer ``request`` (see :meth:`MessageLayer.respond`)."""
        if self.closed:
            return
        layer = self.layer
        layer.respond(request, peer, response, monotonic())
        self._drain()
        if layer.new_due < self._deadline.at:
            self._arm()  # a separate CON response is retransmitted until ACKed

    def notify(self, peer: Any, msg: Message, confirmable: bool, waiter: Any) -> ReplyExchange:
        """Send an Observe notification; ``waiter.switch(exchange)`` hears of its
        failure (RST, or a CON never ACKed)."""
        ex = self.layer.notify(peer, msg, confirmable, monotonic())
        ex.waiter = waiter
        if self.layer.outbox:
            self._drain()
        self._arm()
        return ex

    def replace_notification(self, ex: ReplyExchange, msg: Message) -> None:
        """Put ``msg`` in place of the CON notification ``ex`` in flight (see
        :meth:`MessageLayer.replace_notification`)."""
        self.layer.replace_notification(ex, msg, monotonic())

    def fail_peer(self, peer: Any, error: Exception) -> None:
        """End every exchange with ``peer`` now, raising ``error`` in its caller
        (the secure channel's session with that peer failed)."""
        layer = self.layer
        for ex, observing in layer.cancel_peer(peer, monotonic(), error):
            if observing and ex.sink is not None:
                ex.sink(error)  # the observation ends with this error
            if ex.waiter is not None:
                self.hub.run_callback(ex.waiter.switch, ex)
        if layer.outbox:
            self._drain()
        self._arm()

    def send(self, msg: Message, peer: Any, keep_mid: bool = False) -> None:
        """Send ``msg`` once, as it is, and keep no exchange for it (fire and
        forget: a NON with No-Response, an empty ACK or RST of the caller's
        own).  It gets a fresh message ID unless ``keep_mid``."""
        if self.closed:
            raise ClientClosedError("the endpoint is closed")
        if not keep_mid:
            msg.mid = self.layer.next_mid(peer)
        self.send_raw(msg.encode(), peer)

    def send_raw(self, data: bytes, peer: Any) -> None:
        """Send a datagram as is (tests and tools), through the same outbox,
        impairment and trace as everything else."""
        self.layer.outbox.append((data, peer))
        self._drain()

    def close(self) -> None:
        """Stop receiving, fail waiting requests with ClientClosedError, close the socket."""
        if self.closed:
            return
        self.closed = True
        self._deadline.cancel()
        layer = self.layer
        for ex in layer.cancel_all(monotonic(), Outcome.CLOSED):
            if ex.waiter is not None:
                self.hub.run_callback(ex.waiter.switch, ex)  # resumed from the hub
        layer.outbox.clear()
        self.channel.close()
        self.sock.close()


class _Runner:
    """One per hub: the endpoints with requests waiting, handled on as few
    worker greenlets as possible.

    An endpoint's receive path queues its requests and the endpoint here;
    after the hub's I/O of this turn (a callback), one worker takes the
    endpoints in turn and handles their requests one after another.  Only
    when a handler blocks (parks its worker) does the next worker take the
    rest, so a turn whose handlers never block costs two greenlet switches
    in all, however many sockets its datagrams came in on (a fleet of
    devices: one datagram per socket).  Not thread-safe: the hub's own.
    """

    def __init__(self, hub: Any) -> None:
        self.hub = hub
        self.queue: deque[Endpoint] = deque()
        self.scheduled = False
        self.working: Endpoint | None = None
        #: how many times a worker parked; a worker compares it across its
        #: handler to know whether it was the one (nothing else runs unless it
        #: parks)
        self.parks = 0

    def add(self, ep: Endpoint) -> None:
        if not ep._queued:
            ep._queued = True
            self.queue.append(ep)
        if not self.scheduled:
            self.scheduled = True
            self.hub.run_callback(self.run)

    def run(self) -> None:
        """A hub callback: hand the queue to workers until it is empty."""
        self.scheduled = False
        queue = self.queue
        run = self.hub.run_in_worker
        while queue:
            self.working = None
            run(self._work, queue)
            ep = self.working  # set: a handler of that endpoint parked the worker
            if ep is not None:
                self.working = None
                self.parks += 1
                ep._parked()

    def _work(self, queue: deque) -> None:
        """On a worker: the endpoints' requests, first come first served.  A
        worker whose handler parked stops after that request: the queue was
        handed to the next worker when it parked, and every request queued
        since has scheduled :meth:`run` again."""
        while queue:
            ep = queue[0]
            if ep._requests and not ep.closed:
                self.working = ep
                if ep._work(ep._requests, self):
                    return
            if queue and queue[0] is ep and (ep.closed or not ep._requests):
                queue.popleft()
                ep._queued = False
        self.working = None


def runner_of(hub: Any) -> _Runner:
    """The hub's :class:`_Runner` (made on first use)."""
    runner = getattr(hub, "_request_runner", None)
    if runner is None:
        runner = hub._request_runner = _Runner(hub)
    return runner
