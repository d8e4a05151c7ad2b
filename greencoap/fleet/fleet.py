"""A fleet of simulated devices on one hub (see :mod:`greencoap.fleet`)."""

from __future__ import annotations

import gc
import os
import random
import resource
import socket
from collections.abc import Callable, Iterator
from time import monotonic
from typing import Any

from ..endpoint import peer_key
from ..errors import CoapError, UriError
from ..hub import get_hub, joinall, sleep, spawn
from ..linkformat import parse_link_format
from ..protocol.registration import Registration, RegistrationConfig
from ..uri import is_ip_literal, parse_uri
from .behaviours import sensor
from .device import Device, EventHook, links_of, lwm2m_links

__all__ = ["FAULTS", "Fleet", "FleetError"]

#: fault kinds :meth:`Fleet.inject` knows
FAULTS = ("slow", "loss", "offline", "reboot")

#: socket buffers of a device (a fleet has thousands: keep the kernel's share small)
DEVICE_SOCKET_BUFFER = 256 * 1024

#: seconds to wait for the RD to answer its first ping / discovery at start
RD_PROBE_TIMEOUT = 3.0

#: registrations per second a fleet's default ramp allows
DEFAULT_RAMP_RATE = 500.0

#: seconds in which the fleet's ticker sweeps every device's expiring tables
#: once (a slice of the devices each tick, no timer per device)
HOUSEKEEPING_SWEEP = 10.0


class FleetError(CoapError):
    """A fleet that cannot start as configured (an unreachable RD, a port in use …)."""


class Fleet:
    """``count`` devices built from ``template``, each a CoAP server on its own
    socket on ``host`` (``base_port + i``, or free ports when ``base_port``
    is None), on the calling thread's hub.

    ``template(index, name)`` returns the device's :class:`~greencoap.Router`
    (or ``(router, state)``; the default is
    :func:`~greencoap.fleet.behaviours.sensor`).  ``name`` is a pattern
    (``"dev-{i}"``, ``{i}`` the index) or a callable ``index -> name``.

    With ``register`` (``coap://rd-host[:port]/rd``; without a path the RD
    is found through its ``/.well-known/core?rt=core.rd``) every device
    registers from its own socket with ``ep=NAME&lt=lifetime`` plus
    ``endpoint_params`` (a list of ``(key, value)``, or a callable
    ``device -> list``) and its routes' links (``links``: a callable
    ``device -> bytes`` to send something else), refreshes before the
    lifetime ends, re-registers after a 4.04 and removes itself on
    :meth:`stop`.  Registrations are spread over ``ramp`` seconds (default:
    ``count`` / 500).  ``lwm2m="1.1"`` registers as an LwM2M client
    (``lwm2m=1.1&b=U`` and ``</>;rt="oma.lwm2m"`` plus object links).

    ``psk`` makes every device serve ``coaps://`` (DTLS 1.2 PSK) on a
    second socket (``dtls_base_port + i`` or free ports): a pattern
    ``"IDENTITY:KEY"`` formatted with ``{i}`` and ``{name}``, or a callable
    ``(index, name) -> (identity, key)``.

    Telemetry (a template state's ``telemetry`` list) is looked at every
    ``tick`` seconds: a value that changed is notified to its observers.
    The devices' expiring tables (abandoned block-wise transfers, rate
    buckets) are swept from the same ticker, each device once per
    ``housekeeping`` seconds (no timer per device).
    ``events(kind, name, seconds, size, error)`` hears of every RD exchange
    and fault (see :data:`~greencoap.fleet.device.EventHook`).
    ``server_options`` go to every device's :class:`~greencoap.Server`.

    Python's garbage collector is paused while the devices are built, and
    with ``freeze_gc`` (the default) what exists once they are up is moved out
    of its sight (:func:`gc.freeze`; :meth:`stop` gives it back): ten
    thousand devices are about a million objects, and every full collection
    of them would stop the hub, and every device, for about a second.

    A fleet belongs to the thread that made it; :meth:`start` and
    :meth:`stop` are called from a greenlet of that thread's hub (the main
    one is fine).
    """

    def __init__(
        self,
        template: Callable[[int, str], Any] = sensor,
        count: int = 1,
        host: str = "127.0.0.1",
        base_port: int | None = None,
        *,
        name: str | Callable[[int], str] = "dev-{i}",
        first_index: int = 0,
        register: str | None = None,
        lifetime: int = 300,
        ramp: float | None = None,
        endpoint_params: list[tuple[str, str | None]] | Callable[[Device], list] | None = None,
        links: Callable[[Device], bytes] | None = None,
        lwm2m: str | None = None,
        psk: str | Callable[[int, str], tuple[str, bytes]] | None = None,
        dtls_base_port: int | None = None,
        rd_timeout: float = 93.0,
        tick: float = 1.0,
        events: EventHook | None = None,
        seed: int = 0,
        server_options: dict[str, Any] | None = None,
        freeze_gc: bool = True,
        housekeeping: float = HOUSEKEEPING_SWEEP,
    ) -> None:
        if count < 1:
            raise ValueError("a fleet has at least one device")
        if base_port is not None and not (1 <= base_port and base_port + count - 1 <= 65535):
            raise ValueError(f"ports {base_port}..{base_port + count - 1} are not all valid")
        self.template = template
        self.count = count
        self.host = host
        self.base_port = base_port
        self.first_index = first_index
        self._name = name
        self.register_uri = register
        self.lifetime = lifetime
        self.ramp = count / DEFAULT_RAMP_RATE if ramp is None else max(0.0, ramp)
        self.endpoint_params = endpoint_params
        self.links = links
        self.lwm2m = lwm2m
        self.psk = psk
        self.dtls_base_port = dtls_base_port
        self.rd_timeout = rd_timeout
        self.tick = tick
        self.housekeeping = housekeeping
        self.events = events
        self.rng = random.Random(seed)
        options = {"buffer_size": DEVICE_SOCKET_BUFFER}
        options.update(server_options or {})
        self.server_options = options
        self.freeze_gc = freeze_gc
        self._frozen = False
        self.devices: list[Device] = []
        self.rd_peer: tuple | None = None
        self.rd_path: str | None = None
        self.started: float | None = None
        self._ticker: Any = None
        self._observed: dict[Device, None] = {}  # devices with observers (telemetry)
        self._sweep = 0  # the next device to housekeep
        self._fault_timers: list[Any] = []
        self.fault_counts = {kind: 0 for kind in FAULTS}
        self.event_counts: dict[str, int] = {}

    # -- building -----------------------------------------------------------------
    def name_of(self, index: int) -> str:
        """The endpoint name of device ``index``."""
        if callable(self._name):
            return self._name(index)
        return self._name.format(i=index, index=index)

    def _psk_of(self, index: int, name: str) -> tuple[str, bytes] | None:
        psk = self.psk
        if psk is None:
            return None
        if callable(psk):
            identity, key = psk(index, name)
        else:
            identity, sep, key = psk.format(i=index, index=index, name=name).partition(":")
            if not sep:
                raise ValueError("psk pattern is IDENTITY:KEY, e.g. 'dev-{i}:secret-{i}'")
        return identity, key.encode() if isinstance(key, str) else key

    def _hook(self, kind: str, name: str, seconds: float, size: int, error: Any) -> None:
        key = kind if error is None else kind + "_failed"
        self.event_counts[key] = self.event_counts.get(key, 0) + 1
        if self.events is not None:
            self.events(kind, name, seconds, size, error)

    def _registration(self, device: Device) -> RegistrationConfig | None:
        if self.rd_path is None:
            return None
        params = self.endpoint_params
        params = list(params(device) if callable(params) else (params or []))
        if self.lwm2m is not None:
            names = {k for k, _ in params}
            params = ([("lwm2m", self.lwm2m)] if "lwm2m" not in names else []) + params
            if "b" not in names:
                params.append(("b", "U"))
        return RegistrationConfig(
            endpoint=device.name, lifetime=self.lifetime, path=self.rd_path, params=params
        )

    def _payload(self, device: Device) -> bytes:
        if self.links is not None:
            return self.links(device)
        if self.lwm2m is not None:
            return lwm2m_links(device.router)
        return links_of(device.router)

    # -- running ----------------------------------------------------------------------
    def start(self) -> Fleet:
        """Find the RD (when registering), bind every device and start
        serving; registrations go out over the ramp.  Raises
        :class:`FleetError` when the RD cannot be found or a port is taken
        (the devices already started are stopped again)."""
        if self.started is not None:
            return self
        hub = get_hub()
        ensure_open_files(self.count * (1 if self.psk is None else 2))
        if self.register_uri is not None:
            self._find_rd()
        self.started = monotonic()
        collecting = gc.isenabled()
        gc.disable()  # building adds ~100 tracked objects per device: no collection meanwhile
        try:
            for k in range(self.count):
                index = self.first_index + k
                name = self.name_of(index)
                port = 0 if self.base_port is None else self.base_port + k
                dport = 0 if self.dtls_base_port is None else self.dtls_base_port + k
                device = Device(
                    index,
                    name,
                    self.template,
                    host=self.host,
                    port=port,
                    psk=self._psk_of(index, name),
                    dtls_port=dport,
                    rd_peer=self.rd_peer,
                    rd_timeout=self.rd_timeout,
                    events=self._hook,
                    rng=random.Random(self.rng.random()),
                    server_options=self.server_options,
                    housekeeping_interval=None,
                    observed=self._observed_change,
                )
                device._build()
                config = self._registration(device)
                if config is not None:
                    config.payload = self._payload(device)
                    device.registration = _registration_for(device, config)
                    if self.lwm2m is not None:
                        device.links = lwm2m_links  # also after a reboot
                self.devices.append(device)
                if k % 256 == 255:
                    sleep(0)  # let the hub serve the devices already up
        except OSError as e:
            self.stop(deregister=False)
            raise FleetError(str(e)) from None
        finally:
            if collecting:
                gc.enable()
        if self.freeze_gc:
            gc.freeze()
            self._frozen = True
        ramp = self.ramp
        now = monotonic()
        for k, device in enumerate(self.devices):
            reg = device.registration
            if reg is not None:
                delay = ramp * k / self.count + self.rng.random() * min(ramp / self.count, 0.05)
                reg.start(now, delay)
                device._schedule()
            _spread_telemetry(device, now, self.rng)
        self._ticker = hub.call_later(self.tick, self._tick)
        return self

    def _find_rd(self) -> None:
        try:
            uri = parse_uri(self.register_uri)
        except UriError as e:
            raise FleetError(f"--register {self.register_uri!r}: {e}") from None
        if uri.scheme != "coap":
            raise FleetError("devices register over coap:// (an RD on coaps:// is not supported)")
        try:
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            if is_ip_literal(uri.host):
                addr = (uri.host, uri.port)
            else:
                infos = get_hub().run_in_thread(
                    socket.getaddrinfo, uri.host, uri.port, family, socket.SOCK_DGRAM, timeout=10
                )
                addr = infos[0][4][:2]
            if ":" in addr[0] and family != socket.AF_INET6:
                raise FleetError(f"the RD {uri.host} is IPv6 but the devices are on {self.host}")
            self.rd_peer = peer_key(family, addr)
        except OSError as e:
            raise FleetError(f"cannot resolve the RD host {uri.host!r}: {e}") from None
        if uri.path:
            self.rd_path = "/" + "/".join(uri.path)
            self._probe_rd(uri)
            return
        self.rd_path = self._discover_rd(uri)

    def _probe_rd(self, uri: Any) -> None:
        """An RD that does not answer at all fails the start, once, clearly."""
        with self._client_for_probe() as client:
            try:
                client.ping(f"coap://{_host(uri.host)}:{uri.port}", timeout=RD_PROBE_TIMEOUT)
            except CoapError as e:
                raise FleetError(f"no CoAP server answers at {self.register_uri}: {e}") from None

    def _discover_rd(self, uri: Any) -> str:
        base = f"coap://{_host(uri.host)}:{uri.port}"
        with self._client_for_probe() as client:
            try:
                r = client.get(base + "/.well-known/core?rt=core.rd", timeout=RD_PROBE_TIMEOUT)
            except CoapError as e:
                raise FleetError(f"no RD answers at {base}: {e}") from None
        links = []
        if r.code == 69:
            try:
                links = [link for link in parse_link_format(r.text) if "core.rd" in link.rt]
            except CoapError:
                links = []
        if not links:
            raise FleetError(
                f"{base} lists no registration resource (rt=core.rd); "
                "give its path, e.g. --register coap://host/rd"
            )
        return "/" + "/".join(parse_uri(links[0].resolve(base)).path)

    def _client_for_probe(self) -> Any:
        from ..client import Client

        return Client(timeout=10)

    def _observed_change(self, device: Device, observed: bool) -> None:
        if observed:
            self._observed[device] = None
        else:
            self._observed.pop(device, None)

    def _tick(self) -> None:
        """Telemetry: notify observers of the values that changed (observed
        devices only); housekeeping for the next slice of the devices."""
        now = monotonic()
        try:
            self._housekeep(now)
            for device in list(self._observed):
                server = device.server
                if server is None or not server.observers.by_key:
                    continue
                telemetry = getattr(device.state, "telemetry", None)
                if not telemetry:
                    continue
                by_path = server.observers.by_path
                for t in telemetry:
                    if now >= t.due:
                        t.due = now + t.interval
                        if t.path in by_path and t.changed(now):
                            server.observers.notify(t.path)
        finally:
            self._ticker = get_hub().call_later(self.tick, self._tick)

    def _housekeep(self, now: float) -> None:
        """Sweep the expiring tables of the next devices: all of them once
        per :attr:`housekeeping` seconds."""
        devices = self.devices
        if not devices:
            return
        n = min(len(devices), max(1, -(-len(devices) * self.tick // self.housekeeping)))
        start = self._sweep % len(devices)
        for k in range(start, start + int(n)):
            server = devices[k % len(devices)].server
            if server is not None:
                try:
                    server.housekeep(now)
                except Exception:  # noqa: BLE001 - one device's bug must not stop the sweep
                    get_hub().handle_error(server.housekeep)
        self._sweep = start + int(n)

    def stop(self, deregister: bool = True, timeout: float = 5.0) -> None:
        """Remove every registration (at most ``timeout`` s in all, many at
        once) and stop every device."""
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        for t in self._fault_timers:
            t.cancel()
        self._fault_timers.clear()
        devices = [d for d in self.devices if d.running]
        if deregister and any(d.registration is not None for d in devices):
            deadline = monotonic() + timeout
            batch = 512  # removals in flight at once
            for i in range(0, len(devices), batch):
                left = deadline - monotonic()
                if left <= 0:
                    break
                part = devices[i : i + batch]
                greenlets = [spawn(d.stop, True, left) for d in part]
                joinall(greenlets, timeout=left + 1)
        for d in devices:
            if d.running:
                d.stop(deregister=False)
        self.started = None
        if self._frozen:
            self._frozen = False
            gc.unfreeze()  # the stopped devices' objects can be collected again

    def __enter__(self) -> Fleet:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- faults ---------------------------------------------------------------
    def pick(self, fraction: float = 1.0, devices: list[int] | None = None) -> list[Device]:
        """The devices at the given indexes, or ``fraction`` of the fleet at random."""
        if devices is not None:
            by_index = {d.index: d for d in self.devices}
            return [by_index[i] for i in devices]
        if not 0.0 <= fraction <= 1.0:
            raise ValueError("fraction is between 0 and 1")
        n = round(fraction * len(self.devices))
        return self.rng.sample(self.devices, n)

    def inject(
        self,
        kind: str,
        fraction: float = 1.0,
        devices: list[int] | None = None,
        **params: float,
    ) -> list[Device]:
        """Fault injection on ``fraction`` of the fleet (or the ``devices``
        given by index); returns the devices chosen.

        * ``"slow"``, ``delay=`` s: every answer that late (0 undoes it);
        * ``"loss"``, ``rate=`` (0..1): datagrams lost both ways;
        * ``"offline"``: off the network now; with ``every=`` and ``down=``
          s, off for ``down`` s once per ``every`` s (each device at its own
          random moment), again and again;
        * ``"reboot"``: reboot now; with ``every=`` s, once per ``every`` s
          each (``boot_time=``, default 1 s, before registering again).
        """
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}; the faults are {', '.join(FAULTS)}")
        chosen = self.pick(fraction, devices)
        hub = get_hub()
        for d in chosen:
            if kind == "slow":
                d.set_slow(float(params.get("delay", 2.0)))
            elif kind == "loss":
                d.set_loss(float(params.get("rate", 0.2)))
            elif kind == "offline":
                every, down = params.get("every"), float(params.get("down", 10.0))
                if every is None:
                    d.go_offline()
                else:
                    first = self.rng.random() * float(every)
                    self._fault_timers.append(
                        hub.call_later(first, self._flap, d, float(every), down)
                    )
            else:
                every, boot = params.get("every"), float(params.get("boot_time", 1.0))
                if every is None:
                    hub.run_in_worker(self._reboot, d, boot)
                else:
                    first = self.rng.random() * float(every)
                    self._fault_timers.append(
                        hub.call_later(first, self._reboot_every, d, float(every), boot)
                    )
        self.fault_counts[kind] += len(chosen)
        return chosen

    def _flap(self, device: Device, every: float, down: float) -> None:
        if not device.running:
            return
        device.go_offline()
        hub = get_hub()
        self._fault_timers.append(hub.call_later(down, device.come_back))
        self._fault_timers.append(hub.call_later(every, self._flap, device, every, down))
        self._trim_timers()

    def _reboot(self, device: Device, boot: float) -> None:
        if device.running:
            device.reboot(boot)
            _spread_telemetry(device, monotonic(), self.rng)

    def _reboot_every(self, device: Device, every: float, boot: float) -> None:
        if not device.running:
            return
        get_hub().run_in_worker(self._reboot, device, boot)
        self._fault_timers.append(
            get_hub().call_later(every, self._reboot_every, device, every, boot)
        )
        self._trim_timers()

    def _trim_timers(self) -> None:
        if len(self._fault_timers) > 4 * len(self.devices) + 64:
            now = monotonic()
            self._fault_timers = [t for t in self._fault_timers if t.deadline > now]

    # -- numbers ------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.devices)

    def __iter__(self) -> Iterator[Device]:
        return iter(self.devices)

    def __getitem__(self, k: int) -> Device:
        return self.devices[k]

    @property
    def ports(self) -> list[int]:
        """Every device's UDP port, in device order."""
        return [d.port for d in self.devices]

    def registered(self) -> int:
        """How many devices hold a registration."""
        return sum(1 for d in self.devices if d.registered)

    def wait_registered(self, timeout: float, count: int | None = None) -> bool:
        """Park until ``count`` (default: all) devices are registered, or
        ``timeout`` s; True when they are."""
        want = len(self.devices) if count is None else count
        deadline = monotonic() + timeout
        while self.registered() < want:
            if monotonic() >= deadline:
                return False
            sleep(0.05)
        return True

    def counters(self) -> dict[str, int]:
        """Cheap totals for a progress line: devices up, registered, offline,
        requests served, notifications sent, RD failures."""
        out = {"devices": 0, "registered": 0, "offline": 0, "requests": 0, "notifications": 0}
        for d in self.devices:
            if d.running:
                out["devices"] += 1
            if d.registered:
                out["registered"] += 1
            if d.impairment.offline:
                out["offline"] += 1
            c = d.counters()
            out["requests"] += c["requests"]
            out["notifications"] += c["notifications"]
        ev = self.event_counts
        out["rd_failures"] = sum(v for k, v in ev.items() if k.endswith("_failed"))
        return out

    def stats(self) -> dict[str, Any]:
        """Totals over the fleet: every device's server counters summed, the
        registration counters summed, the RD exchanges by kind, the faults."""
        total: dict[str, Any] = {}
        reg_total: dict[str, int] = {}
        states: dict[str, int] = {}
        for d in self.devices:
            s = d.stats()
            for k, v in s.items():
                if isinstance(v, bool) or not isinstance(v, int) or k in ("index",):
                    continue
                total[k] = total.get(k, 0) + v
            reg = s.get("registration")
            if reg is not None:
                states[reg["state"]] = states.get(reg["state"], 0) + 1
                for k, v in reg.items():
                    if isinstance(v, int):
                        reg_total[k] = reg_total.get(k, 0) + v
        total.update(self.counters())
        total["registration"] = {**reg_total, "states": states}
        total["events"] = dict(self.event_counts)
        total["faults"] = dict(self.fault_counts)
        return total


def ensure_open_files(sockets: int) -> None:
    """Make room for ``sockets`` more open files: raise this process's soft
    ``RLIMIT_NOFILE`` up to its hard limit when needed, and raise
    :class:`FleetError` (saying what to do) when even that is too few."""
    try:
        in_use = len(os.listdir("/proc/self/fd"))
    except OSError:
        in_use = 64
    need = in_use + sockets + 64  # some to spare: the hub, the RD client, a log file
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if need <= soft or soft == resource.RLIM_INFINITY:
        return
    if hard == resource.RLIM_INFINITY or need <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
        return
    raise FleetError(
        f"{sockets} device sockets need {need} open files, and this process may open "
        f"{hard} at most (ulimit -Hn): run fewer devices per process "
        "(greencoap fleet --processes K) or raise the hard limit"
    )


def _registration_for(device: Device, config: RegistrationConfig) -> Registration:
    return Registration(config, device.rng)


def _spread_telemetry(device: Device, now: float, rng: random.Random) -> None:
    for t in getattr(device.state, "telemetry", None) or ():
        t.due = now + rng.random() * t.interval


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
