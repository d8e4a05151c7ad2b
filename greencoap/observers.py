"""Observe (RFC 7641), server side: the registry of observers (layer 4).

Two kinds of observable resources:

* a handler that is a **generator function**: each value it yields is a
  notification, the first being the registration's response.  Per observer
  it runs in its own greenlet and may block (``sleep``) between yields.
* a handler registered with ``observable=True``: every
  :meth:`Server.notify` of its path re-runs it for each observer (push
  style; ``notify`` may be called from any OS thread).

Notifications carry a 24-bit Observe sequence number per observer and go as
NON, with every ``con_every``-th one (default 20) as CON (one larger than the
server's block size goes as its first Block2 block, the rest being cached for
the client's follow-up requests): an observer whose
CON notification is never ACKed, or who answers one with RST, is dropped
(§3.6, §4.5).  A GET with Observe=1 deregisters; a new registration from the
same (peer, token) replaces the old one.  Stopping the server ends every
observation with a final 5.03 notification.
"""

from __future__ import annotations

import types
from typing import TYPE_CHECKING, Any

from .codes import Code
from .dtls_channel import SecurePeer
from .hub import Greenlet, GreenletExit, getcurrent, spawn
from .options import OptionNumber
from .protocol.messaging import RESET, TIMEOUT
from .response import Request, Response, as_response

if TYPE_CHECKING:
    from .router import Route
    from .server import Server


class Observer:
    """One client observing one resource."""

    __slots__ = (
        "registry",
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
    )

    def __init__(
        self, registry: ObserverRegistry, request: Request, route: Route, params: dict
    ) -> None:
        self.registry = registry
        self.peer = request.peer
        self.token = request.message.token
        self.path = request.path
        self.request = request
        self.route = route
        self.params = params
        self.seq = 0
        self.sent = 0
        self.gen: types.GeneratorType | None = None
        self.greenlet: Greenlet | None = None
        self.active = True

    def with_observe(self, response: Response) -> Response:
        """``response`` with this observer's next Observe number (2.xx only)."""
        if 64 <= response.code < 96:
            self.seq = (self.seq + 1) & 0xFFFFFF
            opts = [o for o in response.options if o[0] != OptionNumber.OBSERVE]
            opts.append((OptionNumber.OBSERVE, self.seq.to_bytes(3, "big").lstrip(b"\0")))
            r = Response(response.code, response.payload, options=opts)
            return r
        return response

    def send(self, response: Response) -> None:
        """Send one notification (a final one when it is not 2.xx)."""
        if not self.active:
            return
        ep = self.registry.server._ep(self.peer)
        if ep is None:
            return
        tag = self.peer[-1]
        if tag.__class__ is SecurePeer and not tag.alive():
            self.registry.remove(self, "session_closed")  # its DTLS session is gone
            return
        final = not 64 <= response.code < 96
        response = self.with_observe(response)
        # a large notification goes block-wise: block 0 now, the rest on request
        response = self.registry.server.first_block(self.peer, self.request.message, response)
        msg = response.to_message()
        msg.token = self.token
        self.sent += 1
        con = final or self.sent % self.registry.con_every == 0
        ep.notify(self.peer, msg, con, self)
        if final:
            self.registry.remove(self, "final")

    def switch(self, exchange: Any) -> None:
        """Engine events for our notifications: an RST or an unACKed CON drops us."""
        if exchange.result is RESET:
            self.registry.remove(self, "rst")
        elif exchange.result is TIMEOUT and exchange.con:
            self.registry.remove(self, "timeout")

    def run_generator(self) -> None:
        """Greenlet body: turn each further yielded value into a notification."""
        gen = self.gen
        method = self.request.message.code
        try:
            while self.active:
                try:
                    value = next(gen)
                except StopIteration:
                    self.send(Response(Code.SERVICE_UNAVAILABLE, "observation ended"))
                    return
                self.send(as_response(value, method))
        except GreenletExit:
            pass
        except Exception:  # noqa: BLE001 - an observable handler failed
            self.registry.server._stats["handler_errors"] += 1
            self.registry.server.log_handler_error("observable handler for %s failed", self.path)
            self.send(Response(Code.INTERNAL_SERVER_ERROR))
        finally:
            gen.close()

    def stop(self) -> None:
        """End this observer's generator greenlet (if any)."""
        self.active = False
        g = self.greenlet
        if g is not None and not g.dead and g is not getcurrent():
            g.kill(block=False)


class ObserverRegistry:
    """All observers of one server, by (peer, token) and by path."""

    def __init__(self, server: Server, con_every: int = 20) -> None:
        self.server = server
        self.con_every = max(1, con_every)
        self.by_key: dict[tuple, Observer] = {}
        self.by_path: dict[str, dict[tuple, Observer]] = {}

    def __len__(self) -> int:
        return len(self.by_key)

    def register(self, request: Request, route: Route, params: dict) -> Response:
        """A GET with Observe=0 to an observable route: the registration's response."""
        key = (request.peer, request.message.token)
        self.drop(key, "replaced")
        obs = Observer(self, request, route, params)
        result = route.handler(request, **params)
        method = request.message.code
        if isinstance(result, types.GeneratorType):
            try:
                first = next(result)
            except StopIteration as stop:
                return as_response(stop.value, method)
            response = as_response(first, method)
            if not 64 <= response.code < 96:
                result.close()
                return response
            obs.gen = result
        else:
            response = as_response(result, method)
            if not 64 <= response.code < 96:
                return response
        self.by_key[key] = obs
        self.by_path.setdefault(obs.path, {})[key] = obs
        self.server._stats["observers"] = len(self.by_key)
        self.server._stats["observe_registrations"] += 1
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
        """Remove ``obs`` and stop its generator."""
        key = (obs.peer, obs.token)
        if self.by_key.get(key) is obs:
            del self.by_key[key]
            peers = self.by_path.get(obs.path)
            if peers is not None:
                peers.pop(key, None)
                if not peers:
                    del self.by_path[obs.path]
            stats = self.server._stats
            stats["observers"] = len(self.by_key)
            stats[f"observers_dropped_{why}"] = stats.get(f"observers_dropped_{why}", 0) + 1
        obs.stop()

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
        try:
            result = obs.route.handler(req, **obs.params)
            response = as_response(result, req.message.code)
        except Exception:  # noqa: BLE001
            self.server._stats["handler_errors"] += 1
            self.server.log_handler_error("observable handler for %s failed", obs.path)
            response = Response(Code.INTERNAL_SERVER_ERROR)
        obs.send(response)

    def close(self) -> None:
        """Server stop: a final 5.03 to every observer, then forget them all."""
        for obs in list(self.by_key.values()):
            obs.send(Response(Code.SERVICE_UNAVAILABLE, "server stopping"))
            self.remove(obs, "stop")


__all__ = ["Observer", "ObserverRegistry"]
