"""One simulated device: a greencoap server on its own UDP socket, the state
its template gave it, its Resource Directory registration and its faults.

Devices are made and driven by a :class:`~greencoap.fleet.Fleet` (or by a
Locust :class:`~greencoap.contrib.locust.CoapDeviceUser`); they belong to
the hub (the OS thread) that started them.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from time import monotonic
from typing import Any

from ..codes import Code, Type
from ..errors import CoapError, RequestTimeoutError, ResetError
from ..hub import get_hub, sleep
from ..linkformat import format_link_format
from ..message import Message
from ..options import OptionNumber as O
from ..protocol.impairment import Impairment
from ..protocol.registration import Action, Registration, RegistrationConfig
from ..router import Router
from ..server import Server

__all__ = ["Device", "DeviceServer", "EventHook", "links_of", "lwm2m_links"]

#: ``hook(kind, name, seconds, size, error)``: one event of a device —
#: ``kind`` "register"/"refresh"/"remove" (an RD exchange: ``seconds`` it
#: took, ``error`` None or what went wrong) or "reboot"/"offline"/"online"
EventHook = Callable[[str, str, float, int, Exception | None], None]

_METHOD = {"POST": Code.POST, "DELETE": Code.DELETE, "PUT": Code.PUT}


class RegistrationError(CoapError):
    """An RD answered a registration exchange with an error code."""


def _segments(path: str) -> list[str]:
    """Uri-Path segments of an absolute path (a trailing ``/`` is an empty
    last segment, as RFC 7252 §6.4 has it: ``/rd/`` is not ``/rd``)."""
    return [] if path in ("", "/") else path.split("/")[1:]


def links_of(router: Router) -> bytes:
    """A device's registration payload: its routes in link-format (without
    ``/.well-known/core``)."""
    links = [link for link in router.links() if link.target != "/.well-known/core"]
    return format_link_format(links).encode()


def lwm2m_links(router: Router) -> bytes:
    """An LwM2M client's registration payload: ``</>;rt="oma.lwm2m"`` and
    the object (instance) links among its routes (``</3/0>``, ``</1>``)."""
    objects = [f"<{link.target}>" for link in router.links() if _is_object_link(link.target)]
    return ",".join(['</>;rt="oma.lwm2m";ct=11543', *objects]).encode()


def _is_object_link(target: str) -> bool:
    parts = [p for p in target.split("/") if p]
    return 1 <= len(parts) <= 2 and all(p.isdigit() for p in parts)


class DeviceServer(Server):
    """A :class:`~greencoap.Server` that can answer slowly (fault injection):
    with :attr:`delay` set, each request waits that long first (past
    ``separate_delay`` the answer becomes a separate response).  With
    :attr:`served` set, ``served(method, name, seconds, size, code)`` hears
    of every request answered (``name`` is the route's path, so that
    ``/things/:id`` is one name)."""

    delay: float = 0.0
    served: Callable[[str, str, float, int, int], None] | None = None
    #: ten thousand devices sweeping their tables every second would cost the
    #: hub ten thousand timers a second; abandoned state may wait longer (a
    #: :class:`~greencoap.fleet.Fleet` sets None and sweeps its devices from
    #: its one ticker instead)
    housekeeping_interval: float | None = 10.0

    def handle_request(self, msg: Message, peer: tuple, via: Any) -> Any:
        served = self.served
        if served is None:
            if self.delay:
                sleep(self.delay)
            return super().handle_request(msg, peer, via)
        t0 = monotonic()
        if self.delay:
            sleep(self.delay)
        response = super().handle_request(msg, peer, via)
        try:
            route, _ = self.router.resolve(msg.code, msg.uri_path)
            name = route.path
        except (LookupError, UnicodeDecodeError):
            name = "/" + "/".join(msg.uri_path)
        try:
            method = Code(msg.code).name
        except ValueError:
            method = str(msg.code)
        try:
            served(method, name, monotonic() - t0, len(response.payload), int(response.code))
        except Exception:  # noqa: BLE001 - a listener's bug must not cost the answer
            get_hub().handle_error(served)
        return response


class Device:
    """A device of a fleet (see the module docstring).

    ``template(index, name)`` returns its :class:`Router` (or ``(router,
    state)``); ``port`` 0 picks a free one; ``psk`` ``(identity, key)``
    makes it serve ``coaps://`` on ``dtls_port`` as well.  ``registration``
    (a :class:`RegistrationConfig`; an empty payload is filled with
    ``links(router)``, by default :func:`links_of`) and ``rd_peer`` (the
    RD's socket address) make it register; ``events`` hears of every
    registration exchange, ``served`` of every request answered and
    ``notified`` of every notification sent; ``observed(device, flag)``
    hears when the device gains its first observer (True) or loses its last.
    ``housekeeping_interval`` is its server's (None: the owner calls
    ``device.server.housekeep(now)``, as a fleet does).
    """

    def __init__(
        self,
        index: int,
        name: str,
        template: Callable[[int, str], Any],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        psk: tuple[str, bytes] | None = None,
        dtls_port: int = 0,
        registration: RegistrationConfig | None = None,
        rd_peer: tuple | None = None,
        rd_timeout: float = 93.0,
        events: EventHook | None = None,
        served: Callable[[str, str, float, int, int], None] | None = None,
        notified: Callable[[str, bool, int], None] | None = None,
        links: Callable[[Router], bytes] | None = None,
        rng: random.Random | None = None,
        server_options: dict[str, Any] | None = None,
        housekeeping_interval: float | None = DeviceServer.housekeeping_interval,
        observed: Callable[[Device, bool], None] | None = None,
    ) -> None:
        self.index = index
        self.name = name
        self.template = template
        self.host = host
        self._port = port
        self.psk = psk
        self._dtls_port = dtls_port
        self.rd_peer = rd_peer
        self.rd_timeout = rd_timeout
        self.events = events
        self.served = served
        self.notified = notified
        self.links = links or links_of
        self.rng = rng or random.Random(index)
        self.server_options = server_options or {}
        self.housekeeping_interval = housekeeping_interval
        self.observed = observed
        self.router: Router | None = None
        #: what the template returned beside the router (None if nothing)
        self.state: Any = None
        self.server: DeviceServer | None = None
        self.impairment = Impairment(rng=self.rng)
        self.boots = 0
        self.slow = 0.0
        self._timer: Any = None
        self._busy = 0  # RD exchanges in flight
        self.registration: Registration | None = None
        if registration is not None:
            if rd_peer is None:
                raise ValueError("a device that registers needs rd_peer")
            self.registration = Registration(registration, self.rng)

    # -- life ---------------------------------------------------------------
    @property
    def port(self) -> int:
        """The device's UDP port."""
        return self._port

    @property
    def dtls_port(self) -> int | None:
        """The device's DTLS port (None without a PSK)."""
        return self._dtls_port if self.psk is not None else None

    @property
    def uri(self) -> str:
        """``coap://host:port`` of the device (``coaps://`` and the DTLS
        port with a PSK)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.psk is not None:
            return f"coaps://{host}:{self._dtls_port}"
        return f"coap://{host}:{self._port}"

    @property
    def running(self) -> bool:
        return self.server is not None

    def start(self, register_after: float = 0.0) -> Device:
        """Build the device from its template, bind its socket(s) and start
        serving; the registration (if any) goes out ``register_after`` s on."""
        self._build()
        if self.registration is not None:
            self.registration.start(monotonic(), register_after)
            self._schedule()
        return self

    def _build(self) -> None:
        made = self.template(self.index, self.name)
        router, state = made if isinstance(made, tuple) else (made, None)
        if not isinstance(router, Router):
            raise TypeError(f"a device template returns a Router or (router, state), not {made!r}")
        self.router, self.state = router, state
        options = dict(self.server_options)
        if self.psk is not None:
            options.update(dtls_port=self._dtls_port, psk={self.psk[0]: self.psk[1]})
        server = DeviceServer(router, host=self.host, port=self._port, **options)
        server.delay = self.slow
        server.served = self.served
        server.housekeeping_interval = self.housekeeping_interval
        server.observers.on_sent = self.notified
        if self.observed is not None:
            server.observers.on_observed = self._observed
        try:
            server.start()
        except OSError as e:
            raise OSError(
                e.errno, f"device {self.name}: cannot bind {self.host}:{self._port}: {e.strerror}"
            ) from None
        if server.secure_endpoint is not None:
            self._dtls_port = server.dtls_port
        self._port = server.port
        self.server = server
        self._impair()
        self.boots += 1
        if self.registration is not None and self.registration.config.payload == b"":
            self.registration.config.payload = self.links(router)

    def _observed(self, observed: bool) -> None:
        """The device's server gained its first observer or lost its last."""
        hook = self.observed
        if hook is not None:
            hook(self, observed)

    def stop(self, deregister: bool = True, timeout: float = 5.0) -> None:
        """Remove the registration (``deregister``; waits at most ``timeout``
        s for the RD, and for a registration in flight), then stop serving."""
        self._cancel_timer()
        reg = self.registration
        if reg is not None:
            removal = reg.stop(monotonic()) if deregister else None
            if deregister and not self.impairment.offline:
                deadline = monotonic() + timeout
                if removal is not None:
                    self._exchange(removal, min(timeout, self.rd_timeout))
                while self._busy and monotonic() < deadline:
                    sleep(0.02)  # a registration in flight may still need removing
        if self.server is not None:
            self.server.stop()
            self.server = None

    # -- faults ---------------------------------------------------------------
    def set_slow(self, delay: float) -> None:
        """Answer every request ``delay`` s late (0: at once again)."""
        self.slow = max(0.0, delay)
        if self.server is not None:
            self.server.delay = self.slow

    def set_loss(self, rate: float, outbound: float | None = None) -> None:
        """Lose ``rate`` of the datagrams the device receives (and
        ``outbound`` of those it sends, the same by default)."""
        imp = self.impairment
        out = rate if outbound is None else outbound
        for r in (rate, out):
            if not 0.0 <= r <= 1.0:
                raise ValueError(f"a loss rate is between 0 and 1, not {r}")
        imp.loss_in, imp.loss_out = rate, out
        self._impair()

    def _impair(self) -> None:
        """Put the impairment on the device's sockets while it loses anything,
        and take it off otherwise (a healthy device's datagrams skip it)."""
        server = self.server
        if server is None:
            return
        imp = self.impairment if self.impairment.active else None
        for ep in (server.endpoint, server.secure_endpoint):
            if ep is not None:
                ep.impairment = imp

    def go_offline(self) -> None:
        """Drop off the network: nothing in or out (the socket stays bound;
        its registration refreshes time out and back off)."""
        if not self.impairment.offline:
            self.impairment.offline = True
            self._impair()
            self._event("offline")

    def come_back(self) -> None:
        """Back on the network: a registration waiting out a back-off is
        tried at once."""
        if self.impairment.offline:
            self.impairment.offline = False
            self._impair()
            self._event("online")
            reg = self.registration
            if reg is not None and reg.in_flight is None and reg.next_time() is not None:
                reg.wake(monotonic())
                self._schedule()

    def reboot(self, boot_time: float = 1.0) -> None:
        """Lose power and start again: observers and state are gone, the
        template makes new state, and the device registers anew after
        ``boot_time`` s (the RD replaces its old registration)."""
        self._cancel_timer()
        if self.server is not None:
            self.server.stop(final=False)
            self.server = None
        self._build()
        self._event("reboot")
        if self.registration is not None:
            self.registration.reboot(monotonic(), boot_time)
            self._schedule()

    # -- pushing ------------------------------------------------------------------
    def push(
        self,
        peer: tuple,
        path: str,
        payload: bytes,
        *,
        confirmable: bool = True,
        content_format: int | None = 0,
        timeout: float = 10.0,
    ) -> Message | None:
        """Send ``payload`` as a POST to ``path`` at ``peer`` (a platform's
        telemetry endpoint) from the device's own socket: a CON waits for
        its response (returned; :class:`RequestTimeoutError` after
        ``timeout``), a NON is sent once (None returned)."""
        server = self.server
        if server is None or server.endpoint is None:
            raise RequestTimeoutError(f"device {self.name} is stopped")
        msg = Message(Type.CON if confirmable else Type.NON, Code.POST, payload=payload)
        msg.uri_path = _segments(path)
        if content_format is not None:
            msg.add_option(O.CONTENT_FORMAT, content_format)
        ep = server.endpoint
        if confirmable:
            return ep.request(msg, peer, timeout)
        n = ep.layer.token_length
        msg.token = self.rng.getrandbits(8 * n).to_bytes(n, "big") if n else b""
        ep.send(msg, peer)
        return None

    # -- registration -----------------------------------------------------------
    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _schedule(self) -> None:
        reg = self.registration
        self._cancel_timer()
        t = reg.next_time() if reg is not None else None
        if t is not None:
            self._timer = get_hub().call_at(t, self._due)

    def _due(self) -> None:
        self._timer = None
        reg = self.registration
        if reg is None or self.server is None:
            return
        action = reg.poll(monotonic())
        if action is None:
            self._schedule()
            return
        get_hub().run_in_worker(self._drive, action)

    def _drive(self, action: Action) -> None:
        """One RD exchange on a worker greenlet, then the next step."""
        reg = self.registration
        code, location, error = self._exchange(action, self.rd_timeout)
        if reg is None or action.kind == "remove":
            return
        now = monotonic()
        if error is not None and code is None:
            reg.on_failure(now, "timeout" if isinstance(error, RequestTimeoutError) else str(error))
        else:
            late = reg.on_response(code, location, now)
            if late is not None:
                self._exchange(late, min(5.0, self.rd_timeout))
        if self.server is not None:
            self._schedule()

    def _exchange(self, action: Action, timeout: float) -> tuple[int | None, str | None, Any]:
        """Send ``action`` to the RD from the device's own socket; returns
        (code, location, error) and tells :attr:`events`."""
        server = self.server
        if server is None or server.endpoint is None:
            return None, None, RequestTimeoutError("the device is stopped")
        msg = Message(Type.CON, _METHOD[action.method])
        msg.uri_path = _segments(action.path)
        if action.query:
            msg.uri_query = action.query
        if action.payload:
            msg.payload = action.payload
            if action.content_format is not None:
                msg.add_option(O.CONTENT_FORMAT, action.content_format)
        self._busy += 1
        t0 = monotonic()
        code = location = error = None
        try:
            reply = server.endpoint.request(msg, self.rd_peer, timeout)
            code = reply.code
            if reply.location_path:
                location = "/" + "/".join(reply.location_path)
            if code >= 128:
                error = RegistrationError(code, f"the RD answered {code >> 5}.{code & 31:02d}")
        except (RequestTimeoutError, ResetError) as e:
            error = e
        except Exception as e:  # noqa: BLE001 - the endpoint closed, a send failed
            error = e
        finally:
            self._busy -= 1
        self._event(action.kind, monotonic() - t0, len(action.payload), error)
        return code, location, error

    def _event(self, kind: str, seconds: float = 0.0, size: int = 0, error: Any = None) -> None:
        hook = self.events
        if hook is not None:
            try:
                hook(kind, self.name, seconds, size, error)
            except Exception:  # noqa: BLE001 - a listener's bug must not stop the device
                get_hub().handle_error(hook)

    # -- numbers ----------------------------------------------------------------
    @property
    def registered(self) -> bool:
        return self.registration is not None and self.registration.registered

    def counters(self) -> dict[str, int]:
        """Requests served, notifications sent, losses (cheap: for progress lines)."""
        server = self.server
        out = {"requests": 0, "notifications": 0}
        if server is not None and server.endpoint is not None:
            s = server.endpoint.layer.stats
            out["requests"] = s.get("requests_received", 0)
            out["notifications"] = s.get("notifications_sent", 0)
        return out

    def stats(self) -> dict[str, Any]:
        """Everything about this device: server counters, registration, faults."""
        out: dict[str, Any] = {
            "name": self.name,
            "index": self.index,
            "uri": self.uri,
            "boots": self.boots,
            "offline": self.impairment.offline,
            "slow": self.slow,
            **self.impairment.stats,
        }
        if self.server is not None:
            out.update(self.server.stats)
        if self.registration is not None:
            out["registration"] = self.registration.describe()
        return out
