"""Observe (RFC 7641), server side: the registry of observers (layer 4).

Two kinds of observable resources:

* a handler that is a **generator function**: each value it yields is a
  notification, the first being the registration's response.  Per observer
  it runs in its own greenlet and may block (``sleep``) between yields.
* a handler registered with ``observable=True``: every
  :meth:`Server.notify` of its path re-runs it for each observer (push
  style; ``notify`` may be called from any OS thread).  The handler can tell
  a registration from a re-render by ``request.observing`` (``"register"``
  or ``"notify"``) and sees the registration's Accept; a handler that sets
  ``request.observing = None`` at registration declines it (its answer goes
  as a plain response, without Observe).

Transmission (RFC 7641 §4.5), per observer:

* **One CON in flight.**  The first notification after the registration is
  a CON (its ACK proves the observer is there and gives a round-trip time),
  and so is every ``con_every``-th (the server's, or the route's
  ``con_every=``; a route's ``notifications="con"`` makes all of them CON).
  While a CON notification is being retransmitted, a newer state replaces
  it in place (same retransmission schedule, a new Observe value, §4.5.2):
  never two CONs in flight, never a stale retransmission after a newer one.
  An observer that never ACKs it is dropped when it times out (or at once
  on RST).
* **NON pacing.**  NON notifications to one observer go at most about one
  per round trip (measured from the ACKs of its CON notifications; 3 s
  until there is a measurement, as §4.5.1 says); a state that comes sooner
  waits, and a newer one replaces it (observers want the latest state, not
  every state).  So a fast resource is no amplifier and no memory sink.
* **Caps.**  ``max_observers`` in all and ``max_observers_per_peer`` per
  client; a registration beyond them is served as a plain GET (no Observe
  option: the client knows it is not registered, §4.1).

Notifications carry a 24-bit sequence number per observer.  One larger than
the server's block size goes as its first Block2 block (the rest answer the
client's plain follow-up GETs, without an Observe option, §3.1).  A state
whose Content-Format the observer's Accept does not allow ends the
observation with 4.06.  A GET with Observe=1 deregisters; a new
registration from the same (peer, token) replaces the old one; a route's
``on_observer_dropped=callable(request, reason)`` hears of every drop.
Stopping the server ends every observation with a final 5.03.
"""

from __future__ import annotations

import types
from time import monotonic
from typing import TYPE_CHECKING, Any

from .codes import Code, is_success
from .dtls_channel import SecurePeer
from .hub import Greenlet, GreenletExit, getcurrent, spawn
from .options import OptionNumber, encode_uint
from .protocol.exchange import Outcome
from .response import Request, Response, as_response, first_value

if TYPE_CHECKING:
    from .router import Route
    from .server import Server

#: NON notifications per observer before a round-trip time is known: one per
#: this many seconds (RFC 7641 §4.5.1).
DEFAULT_PACE = 3.0


class Observer:
    """One client observing one resource, and its notifications' transmission."""

    __slots__ = (
        "registry",
        "endpoint",
        "format",
        "peer",
        "token",
        "path",
        "request",
        "route",
        "params",
        "seq",
        "sent",
        "gen",
        "greenlet",
        "active",
        "inflight",
        "pending",
        "next_non",
        "rtt",
        "timer",
        "con_every",
        "all_con",
    )

    def __init__(
        self,
        registry: ObserverRegistry,
        request: Request,
        route: Route,
        params: dict,
        endpoint: Any,
    ) -> None:
        self.registry = registry
        self.endpoint = endpoint  # the one the registration came to: notifications leave it
        self.peer = request.peer
        self.token = request.message.token
        self.path = request.path
        self.request = request
        self.route = route
        self.params = params
        self.seq = 0
        self.sent = 0  # notifications sent after the registration's response
        self.gen: types.GeneratorType | None = None
        self.greenlet: Greenlet | None = None
        self.active = True
        self.inflight: Any = None  # the CON notification being retransmitted, if any
        self.pending: Response | None = None  # a newer state waiting for its turn
        self.next_non = 0.0  # the earliest time for the next NON notification
        #: the Content-Format notifications must keep (RFC 7641 §4.2): the
        #: Accept asked for, else that of the registration's response
        self.format: int | None = request.message.accept
        self.rtt: float | None = None  # smoothed round-trip time, from CON ACKs
        self.timer: Any = None  # fires when a paced state may go
        attrs = route.attrs
        self.con_every = max(1, int(attrs.get("con_every", registry.con_every)))
        self.all_con = attrs.get("notifications") == "con"

    def with_observe(self, response: Response) -> Response:
        """``response`` with this observer's next Observe number (2.xx only)."""
        if is_success(response.code):
            self.seq = (self.seq + 1) & 0xFFFFFF
            opts = [o for o in response.options if o[0] != OptionNumber.OBSERVE]
            opts.append((OptionNumber.OBSERVE, encode_uint(self.seq)))
            r = Response(response.code, response.payload, options=opts)
            return r
        return response

    def send(self, response: Response) -> None:
        """Hand over a new state (a final one when it is not 2.xx): sent now,
        put in place of the CON in flight, or kept until its pacing turn."""
        if not self.active:
            return
        server = self.registry.server
        ep = self.endpoint
        if ep is None or ep.closed:
            return
        tag = self.peer[-1]
        if tag.__class__ is SecurePeer and not tag.alive():
            self.registry.remove(self, "session_closed")  # its DTLS session is gone
            return
        fmt = self.format
        if fmt is not None and is_success(response.code) and response.content_format != fmt:
            # §4.2: a notification keeps the registration's format; the
            # observation ends with 4.06 (sent without Observe, as final)
            response = Response(Code.NOT_ACCEPTABLE, "the representation changed format")
        final = not is_success(response.code)
        inflight = self.inflight
        if inflight is not None and not inflight.done:
            # one CON in flight: the newer state rides its retransmissions
            ep.replace_notification(inflight, self._message(response))
            if final:
                self.registry.remove(self, "final")
            return
        con = final or self.all_con or self.sent == 0 or (self.sent + 1) % self.con_every == 0
        if not con:
            now = monotonic()
            if now < self.next_non:
                self._wait(response)
                return
            self.next_non = now + (self.rtt if self.rtt is not None else DEFAULT_PACE)
        self.pending = None
        msg = self._message(response)
        ex = ep.notify(self.peer, msg, con, self)
        self.sent += 1
        if con:
            self.inflight = ex
        hook = self.registry.on_sent
        if hook is not None:
            try:
                hook(self.path, con, len(msg.payload))
            except Exception:  # noqa: BLE001 - a listener's bug must not stop notifications
                server.hub.handle_error(hook)
        if final:
            self.registry.remove(self, "final")

    def _message(self, response: Response) -> Any:
        msg = self.with_observe(response).to_message()
        # a large notification goes block-wise: block 0 now, the rest on request
        pipeline = self.registry.server.pipeline
        msg = pipeline.first_block(self.peer, self.request.message, msg, monotonic())
        msg.token = self.token
        return msg

    def _wait(self, response: Response) -> None:
        """Keep ``response`` (the newest state) until the pacing allows a NON."""
        self.pending = response
        if self.timer is None:
            self.timer = self.registry.server.hub.call_at(self.next_non, self._pending_due)

    def _pending_due(self) -> None:
        self.timer = None
        pending, self.pending = self.pending, None
        if pending is not None and self.active:
            self.send(pending)

    def switch(self, exchange: Any) -> None:
        """Engine events for our notifications: an ACK (the observer is there:
        its round-trip time, a verified address, the next state may go), an
        RST or an unACKed CON (it is gone)."""
        outcome = exchange.outcome
        if outcome is Outcome.RESET:
            self.registry.remove(self, "rst")
        elif outcome is Outcome.TIMEOUT and exchange.con:
            self.registry.remove(self, "timeout")
        elif outcome is Outcome.ACKNOWLEDGED:
            if exchange is self.inflight:
                self.inflight = None
                now = monotonic()
                if exchange.retransmits == 0:  # Karn: only unambiguous samples
                    sample = now - exchange.sent_at
                    self.rtt = sample if self.rtt is None else 0.875 * self.rtt + 0.125 * sample
                    self.next_non = min(self.next_non, now + self.rtt)
                echo = self.registry.server.echo
                if echo is not None and self.peer[-1].__class__ is not SecurePeer:
                    echo.verify(self.peer, now)  # it answered us: the address is real
                if self.pending is not None and self.active:
                    if self.timer is not None:
                        self.timer.cancel()
                        self.timer = None
                    self._pending_due()

    def run_generator(self) -> None:
        """Greenlet body: turn each further yielded value into a notification."""
        gen = self.gen
        method = self.request.message.code
        server = self.registry.server
        try:
            while self.active:
                try:
                    value = next(gen)
                except StopIteration:
                    self.send(Response(Code.SERVICE_UNAVAILABLE, "observation ended"))
                    return
                self.send(as_response(value, method, self.request.message.accept))
        except GreenletExit:
            pass
        except Exception:  # noqa: BLE001 - an observable handler failed
            server.counters["handler_errors"] += 1
            server.log_handler_error("observable handler for %s failed", self.path)
            self.send(Response(Code.INTERNAL_SERVER_ERROR))
        finally:
            gen.close()

    def stop(self) -> None:
        """End this observer's generator greenlet (if any) and its timer."""
        self.active = False
        self.pending = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        g = self.greenlet
        if g is not None and not g.dead and g is not getcurrent():
            g.kill(block=False)


class ObserverRegistry:
    """All observers of one server, by (peer, token), by path and by peer."""

    def __init__(
        self,
        server: Server,
        con_every: int = 20,
        max_observers: int = 65536,
        max_per_peer: int = 64,
    ) -> None:
        self.server = server
        self.con_every = max(1, con_every)
        self.max_observers = max_observers
        self.max_per_peer = max_per_peer
        self.by_key: dict[tuple, Observer] = {}
        self.by_path: dict[str, dict[tuple, Observer]] = {}
        self.per_peer: dict[Any, int] = {}
        #: ``on_sent(path, confirmable, size)`` after each notification goes out
        #: (device fleets report them to Locust); None costs nothing
        self.on_sent: Any = None
        #: ``on_observed(flag)`` when the first observer comes (True) and the
        #: last goes (False): a fleet visits only observed devices; None costs nothing
        self.on_observed: Any = None

    def __len__(self) -> int:
        return len(self.by_key)

    def _room_for(self, peer: Any) -> bool:
        return len(self.by_key) < self.max_observers and (
            self.per_peer.get(peer, 0) < self.max_per_peer
        )

    def register(self, request: Request, route: Route, params: dict, via: Any) -> Response:
        """A GET with Observe=0 to an observable route: the registration's response
        (a plain one, without Observe, when the caps are reached).  ``via`` is
        the endpoint it came to, which the notifications leave from."""
        key = (request.peer, request.message.token)
        self.drop(key, "replaced")
        method = request.message.code
        accept = request.message.accept
        if not self._room_for(request.peer):
            self.server.counters["observe_refused"] += 1
            return plain_response(route, request, params)
        obs = Observer(self, request, route, params, via)
        request.observing = "register"
        result = route.handler(request, **params)
        if request.observing is None:  # the handler declined: a plain answer
            if isinstance(result, types.GeneratorType):
                result = first_value(result)
            return as_response(result, method, accept)
        if isinstance(result, types.GeneratorType):
            try:
                first = next(result)
            except StopIteration as stop:
                return as_response(stop.value, method, accept)
            response = as_response(first, method, accept)
            if not is_success(response.code):
                result.close()
                return response
            obs.gen = result
        else:
            response = as_response(result, method, accept)
            if not is_success(response.code):
                return response
        if obs.format is None:
            obs.format = response.content_format
        self.by_key[key] = obs
        if len(self.by_key) == 1 and self.on_observed is not None:
            self.on_observed(True)
        self.by_path.setdefault(obs.path, {})[key] = obs
        self.per_peer[obs.peer] = self.per_peer.get(obs.peer, 0) + 1
        self.server.counters["observers"] = len(self.by_key)
        self.server.counters["observe_registrations"] += 1
        if obs.gen is not None:
            obs.greenlet = spawn(obs.run_generator)
        return obs.with_observe(response)

    def drop(self, key: tuple, why: str) -> bool:
        """Forget the observer at ``key`` (deregistration, replacement)."""
        obs = self.by_key.get(key)
        if obs is None:
            return False
        self.remove(obs, why)
        return True

    def remove(self, obs: Observer, why: str) -> None:
        """Remove ``obs`` and stop its generator; tell the route's
        ``on_observer_dropped`` (on a worker greenlet)."""
        key = (obs.peer, obs.token)
        if self.by_key.get(key) is obs:
            del self.by_key[key]
            peers = self.by_path.get(obs.path)
            if peers is not None:
                peers.pop(key, None)
                if not peers:
                    del self.by_path[obs.path]
            n = self.per_peer.get(obs.peer, 0) - 1
            if n > 0:
                self.per_peer[obs.peer] = n
            else:
                self.per_peer.pop(obs.peer, None)
            if not self.by_key and self.on_observed is not None:
                self.on_observed(False)
            stats = self.server.counters
            stats["observers"] = len(self.by_key)
            stats[f"observers_dropped_{why}"] = stats.get(f"observers_dropped_{why}", 0) + 1
            hook = obs.route.attrs.get("on_observer_dropped")
            if hook is not None:  # from the hub, later: we may be in a handler's greenlet
                hub = self.server.hub
                hub.run_callback(hub.run_in_worker, self._tell, hook, obs.request, why)
        obs.stop()

    def _tell(self, hook: Any, request: Request, why: str) -> None:
        try:
            hook(request, why)
        except Exception:  # noqa: BLE001 - the user's hook failed
            self.server.log_handler_error("on_observer_dropped for %s failed", request.path)

    def notify(self, path: str) -> int:
        """Re-render ``path`` for each of its push-style observers (in the hub)."""
        observers = [o for o in self.by_path.get(path, {}).values() if o.gen is None]
        hub = self.server.hub
        for obs in observers:
            hub.run_in_worker(self._render, obs)
        return len(observers)

    def _render(self, obs: Observer) -> None:
        if not obs.active:
            return
        req = obs.request
        req.observing = "notify"
        try:
            result = obs.route.handler(req, **obs.params)
            response = as_response(result, req.message.code, req.message.accept)
        except Exception:  # noqa: BLE001
            self.server.counters["handler_errors"] += 1
            self.server.log_handler_error("observable handler for %s failed", obs.path)
            response = Response(Code.INTERNAL_SERVER_ERROR)
        obs.send(response)

    def table_sizes(self) -> dict[str, int]:
        """Observers, the paths and peers they observe, states waiting to go."""
        return {
            "observers": len(self.by_key),
            "observer_paths": len(self.by_path),
            "observer_peers": len(self.per_peer),
            "observer_pending": sum(1 for o in self.by_key.values() if o.pending is not None),
        }

    def close(self, final: bool = True) -> None:
        """Server stop: a final 5.03 to every observer (unless not ``final``:
        a simulated power cut), then forget them all."""
        for obs in list(self.by_key.values()):
            if final:
                obs.inflight = None  # the final one goes on its own
                obs.send(Response(Code.SERVICE_UNAVAILABLE, "server stopping"))
            self.remove(obs, "stop")


def plain_response(route: Route, request: Request, params: dict) -> Response:
    """An observable route's response to a request that is not registered
    (the observer caps were reached): its current value, no Observe."""
    result = route.handler(request, **params)
    if isinstance(result, types.GeneratorType):
        result = first_value(result)
    return as_response(result, request.message.code)


__all__ = ["Observer", "ObserverRegistry"]
