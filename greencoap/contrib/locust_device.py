"""Locust users that *are* devices: :class:`CoapDeviceUser` (layer 4).

    from locust import constant, task
    from greencoap.contrib.locust import CoapDeviceUser

    class Sensor(CoapDeviceUser):
        wait_time = constant(5)

        @task
        def telemetry(self):
            self.push("/telemetry", b'{"t": 21.5}')     # CON POST to the platform

    $ locust -f platform.py --host coap://rd.example:5683/rd --headless -u 2000 -r 200

Each user is one device built from :attr:`CoapDeviceUser.template` (the
default is :func:`greencoap.fleet.behaviours.sensor`): on start it opens its
own UDP socket (on :attr:`device_host`), registers at the run's ``--host``
(a Resource Directory or an IoT platform; RFC 9176, or LwM2M with
:attr:`lwm2m`), serves whatever the platform asks it, refreshes its
registration, and its tasks push telemetry (:meth:`push`) or notify its
observers (:meth:`notify`).  On stop it deregisters.

Everything reaches Locust's ``request`` event with stable names, so the
statistics, charts, CSV and failure tables show the platform's behaviour:

=========  ==========================  =======================================
type       name                        response time
=========  ==========================  =======================================
RD         register / refresh / remove  the RD exchange (failures: its error)
SERVE      ``GET /sensors/temp`` …      handling a platform's request (route)
NOTIFY     ``/sensors/temp`` …          0 (one event per notification sent)
PUSH       the path pushed to           the POST's round trip (NON: 0)
=========  ==========================  =======================================

A host that cannot work (unparsable, no RD at it) fails once, at test start,
with what to do — not once per user.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import gevent
from locust import User, events
from locust.exception import StopTest

from ..codes import Code, dotted
from ..errors import CoapError, RequestTimeoutError
from ..fleet.behaviours import sensor
from ..fleet.device import Device, lwm2m_links
from ..fleet.fleet import Fleet, FleetError
from ..protocol.registration import RegistrationConfig
from .locust import CoapRequestError, startup_error

__all__ = ["CoapDeviceUser"]

_numbers = itertools.count()

#: (host text) → (rd_peer, rd_path): the RD is found once per process
_rd_cache: dict[str, tuple[tuple, str]] = {}


def find_rd(host: str, device_host: str) -> tuple[tuple, str]:
    """The RD's socket address and registration path for ``--host`` (cached);
    raises :class:`FleetError` when there is none."""
    hit = _rd_cache.get(host)
    if hit is None:
        probe = Fleet(
            count=1, host=device_host, register=host if "://" in host else f"coap://{host}"
        )
        probe._find_rd()
        hit = _rd_cache[host] = (probe.rd_peer, probe.rd_path)
    return hit


class CoapDeviceUser(User):
    """A Locust user that is one simulated CoAP device (see the module docstring)."""

    abstract = True
    #: ``template(index, name)`` → the device's Router (or ``(router, state)``)
    template: Any = staticmethod(sensor)
    #: the address the device binds (the platform must reach it there)
    device_host: str = "127.0.0.1"
    #: the endpoint name: ``{worker}`` is the Locust worker index, ``{n}`` a
    #: number unique within the process
    endpoint_name: str = "locust-{worker}-{n}"
    #: register at ``--host`` on start (False: just serve)
    register: bool = True
    lifetime: int = 300
    #: more registration query parameters, e.g. ``[("d", "lab"), ("et", "sensor")]``
    endpoint_params: list = []
    #: register as an LwM2M client of this version (``lwm2m=1.1&b=U``)
    lwm2m: str | None = None
    #: seconds a registration exchange may take (then a failure, and a retry)
    rd_timeout: float = 10.0
    #: wait in on_start until registered (at most ``rd_timeout``)
    wait_registered: bool = True
    #: keywords for the device's :class:`~greencoap.Server`
    server_options: dict = {"buffer_size": 256 * 1024}

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        gevent.get_hub()  # greencoap parks on gevent's hub
        self.number = next(_numbers)
        runner = environment.runner
        worker = getattr(runner, "worker_index", 0) if runner is not None else 0
        self.name = self.endpoint_name.format(worker=worker, n=self.number)
        self._request = environment.events.request
        self.device: Device | None = None
        self._refused = startup_error() is not None

    # -- life ------------------------------------------------------------------------
    def run(self) -> None:
        if self._refused or startup_error() is not None:
            return  # the run is stopping; the reason was said once, at start
        super().run()

    def on_start(self) -> None:
        registration = rd_peer = None
        if self.register:
            host = self.host or ""
            try:
                rd_peer, path = find_rd(host, self.device_host)
            except FleetError as e:
                raise StopTest(str(e)) from None
            params = list(self.endpoint_params)
            if self.lwm2m is not None:
                params = [("lwm2m", self.lwm2m), *params, ("b", "U")]
            registration = RegistrationConfig(
                endpoint=self.name, lifetime=self.lifetime, path=path, params=params
            )
        self.device = Device(
            self.number,
            self.name,
            self.template,
            host=self.device_host,
            port=0,
            registration=registration,
            rd_peer=rd_peer,
            rd_timeout=self.rd_timeout,
            events=self._rd_event,
            served=self._served,
            notified=self._notified,
            links=lwm2m_links if self.lwm2m is not None else None,
            server_options=dict(self.server_options),
        )
        self.device.start()
        if registration is not None and self.wait_registered:
            deadline = time.monotonic() + self.rd_timeout
            while not self.device.registered and time.monotonic() < deadline:
                gevent.sleep(0.01)

    def on_stop(self) -> None:
        if self.device is not None:
            self.device.stop(deregister=True, timeout=self.rd_timeout)
            self.device = None

    # -- what tasks do ------------------------------------------------------------------
    def push(
        self,
        path: str,
        payload: bytes | str,
        *,
        confirmable: bool = True,
        content_format: int | None = 0,
        name: str | None = None,
        timeout: float = 10.0,
    ) -> bool:
        """POST ``payload`` to ``path`` on the platform (the run's host) from
        the device's socket; reported as ``PUSH``.  True when it succeeded
        (a NON: when it was sent)."""
        device = self._device()
        body = payload.encode() if isinstance(payload, str) else payload
        peer = device.rd_peer or self._platform_peer()
        start = time.time()
        t0 = time.perf_counter()
        error: Exception | None = None
        size = 0
        try:
            reply = device.push(
                peer,
                path,
                body,
                confirmable=confirmable,
                content_format=content_format,
                timeout=timeout,
            )
            if reply is not None:
                size = len(reply.payload)
                if reply.code >= 128:
                    error = CoapRequestError(str(Code(reply.code)))
        except RequestTimeoutError:
            error = CoapRequestError("timeout: no response")
        except CoapError as e:
            error = CoapRequestError(f"{type(e).__name__}: {e}")
        self._fire(
            "PUSH" if confirmable else "PUSH NON",
            name or path,
            (time.perf_counter() - t0) * 1000,
            size,
            error,
            start,
        )
        return error is None

    def notify(self, path: str) -> int:
        """Tell the device's observers of ``path`` its new state (each
        notification sent is reported as ``NOTIFY``); returns how many observe it."""
        server = self._device().server
        if server is None:
            return 0
        return server.observers.notify("/" + path.strip("/"))

    # -- reporting -----------------------------------------------------------------------
    def _device(self) -> Device:
        if self.device is None or not self.device.running:
            raise StopTest(f"device {self.name} is not running")
        return self.device

    def _platform_peer(self) -> tuple:
        from ..uri import parse_uri

        u = parse_uri(self.host if "://" in self.host else f"coap://{self.host}")
        return (u.host, u.port)

    def _fire(self, kind: str, name: str, ms: float, size: int, error: Any, start: float) -> None:
        self._request.fire(
            request_type=kind,
            name=name,
            response_time=ms,
            response_length=size,
            response=None,
            context=self.context(),
            exception=error,
            start_time=start,
            url=None,
        )

    def _rd_event(self, kind: str, name: str, seconds: float, size: int, error: Any) -> None:
        if kind not in ("register", "refresh", "remove"):
            return
        err = None
        if error is not None:
            timeout = isinstance(error, RequestTimeoutError)
            err = CoapRequestError("timeout: no response" if timeout else str(error))
        self._fire("RD", kind, seconds * 1000, size, err, time.time() - seconds)

    def _served(self, method: str, name: str, seconds: float, size: int, code: int) -> None:
        err = CoapRequestError(dotted(code)) if code >= 160 else None
        self._fire("SERVE", f"{method} {name}", seconds * 1000, size, err, time.time() - seconds)

    def _notified(self, path: str, confirmable: bool, size: int) -> None:
        self._fire("NOTIFY", path, 0.0, size, None, time.time())


@events.test_stop.add_listener
def _forget_rd(**_: Any) -> None:
    _rd_cache.clear()  # the next run may point at another RD
