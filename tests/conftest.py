"""Shared fixtures: the hub backends, free ports, peer binaries, subprocess servers.

Tests that need io_uring or a peer (libcoap binaries, aiocoap) skip when it is
missing on a developer's machine; CI sets ``GREENCOAP_REQUIRE_URING=1`` and
``GREENCOAP_REQUIRE_PEERS=1`` so that a missing one fails instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from greencoap import hub as hubmod

BACKENDS = ("uring", "epoll")


def require_or_skip(ok: bool, what: str, env: str = "GREENCOAP_REQUIRE_PEERS") -> None:
    """Skip when ``what`` is unavailable, or fail when ``$env`` demands it."""
    if ok:
        return
    if os.environ.get(env, "") not in ("", "0"):
        pytest.fail(f"{what} is required here ({env}=1) but unavailable")
    pytest.skip(f"{what} unavailable")


def uring_usable() -> str | None:
    """None when the io_uring backend can start here, else the reason."""
    try:
        from greencoap.uring_hub import UringBackend  # noqa: F401
    except Exception as e:  # noqa: BLE001
        return str(e)
    return None


def fresh_hub(backend: str) -> hubmod.Hub:
    """Destroy this thread's hub and make a new one on ``backend``."""
    old = getattr(hubmod._local, "hub", None)
    if old is not None:
        old.destroy()
    hubmod._local.hub = None
    return hubmod.get_hub(backend)


def hub_for(name: str):
    """Generator behind the hub fixtures: a fresh hub on backend ``name``."""
    if name == "uring":
        reason = uring_usable()
        require_or_skip(reason is None, f"io_uring backend ({reason})", "GREENCOAP_REQUIRE_URING")
    h = fresh_hub(name)
    assert h.backend == name
    yield h
    from greencoap import client as clientmod

    c = getattr(clientmod._default, "client", None)
    if c is not None:
        c.close()
        clientmod._default.client = None
    h.destroy()
    hubmod._local.hub = None


@pytest.fixture(params=BACKENDS)
def hub(request):
    """This thread's hub on each backend in turn (io_uring, then epoll)."""
    yield from hub_for(request.param)


@pytest.fixture(params=(*BACKENDS, "gevent"))
def any_hub(request):
    """Like ``hub``, plus greencoap running inside gevent's hub (the Locust case)."""
    yield from hub_for(request.param)


# Ports handed out by free_port(): below the kernel's ephemeral range (32768
# and up), so no ``bind(port 0)`` anywhere lands on one, and a slice of its
# own for each xdist worker, so two tests running in parallel never get the
# same one (a port found free by binding port 0 and closing could be taken
# by a parallel test before the server started on it: seen in CI).
_PORTS_FIRST, _PORTS_SLICE, _PORTS_SLICES = 20000, 1000, 12


def _port_slice() -> range:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    index = int(worker[2:]) if worker.startswith("gw") else _PORTS_SLICES - 1
    first = _PORTS_FIRST + (index % _PORTS_SLICES) * _PORTS_SLICE
    return range(first, first + _PORTS_SLICE)


_port_cursor = 0


def free_port(family: int = socket.AF_INET, host: str = "127.0.0.1", count: int = 1) -> int:
    """The first of ``count`` consecutive UDP ports, free now and not handed
    out before by this test process (nor by any other xdist worker)."""
    global _port_cursor
    ports = _port_slice()
    for _ in range(len(ports)):
        first = ports[0] + _port_cursor % (len(ports) - count + 1)
        _port_cursor += count
        if all(_bindable(family, host, p) for p in range(first, first + count)):
            return first
    raise RuntimeError(f"no {count} free consecutive ports in {ports}")


def _bindable(family: int, host: str, port: int) -> bool:
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def which_or_skip(binary: str) -> str:
    path = shutil.which(binary)
    require_or_skip(path is not None, binary)
    return path


def wait_udp_ready(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
    """Ping (empty CON) until the server answers RST."""
    deadline = time.monotonic() + timeout
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.settimeout(0.1)
        while time.monotonic() < deadline:
            s.sendto(b"\x40\x00\x12\x34", (host, port))
            try:
                data, _ = s.recvfrom(64)
                if data[:1] and data[0] >> 4 == 0x7:
                    return
            except (TimeoutError, ConnectionRefusedError):
                pass
    raise RuntimeError(f"nothing answered on {host}:{port}")


class Proc:
    """A subprocess server stopped by PID at teardown."""

    def __init__(self, args: list[str], port: int, host: str = "127.0.0.1", **kw) -> None:
        self.port = port
        self.host = host
        self.p = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw
        )
        try:
            wait_udp_ready(port, host)
        except RuntimeError:
            self.stop()
            raise RuntimeError(f"{args} did not start: {self.output}") from None
        self.output = ""

    def stop(self) -> str:
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.output, _ = self.p.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.output, _ = self.p.communicate()
        elif self.p.stdout and not self.p.stdout.closed:
            self.output = self.p.stdout.read()
        return self.output

    @property
    def uri(self) -> str:
        return f"coap://{self.host}:{self.port}"


def demo_command(port: int, *extra: str) -> list[str]:
    """The command line of the demo server on 127.0.0.1:``port`` (plus ``extra`` options)."""
    return [
        sys.executable,
        "-m",
        "greencoap.demo",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *extra,
    ]


@pytest.fixture
def demo_proc(hub):
    """The demo server as a subprocess (``python -m greencoap.demo``) on a free port,
    on the same backend as this test's hub."""
    port = free_port()
    env = dict(os.environ, GREENCOAP_HUB=hub.backend)
    p = Proc(demo_command(port), port, env=env)
    yield p
    p.stop()


@pytest.fixture
def demo_proc_no_echo(hub):
    """The demo server without amplification mitigation (``--echo-factor 0``),
    for aiocoap's client, which ignores Echo challenges outside OSCORE (as of
    0.4.17): with the default it gets 4.01 for responses over 3× its request."""
    port = free_port()
    env = dict(os.environ, GREENCOAP_HUB=hub.backend)
    p = Proc(demo_command(port, "--echo-factor", "0"), port, env=env)
    yield p
    p.stop()


@pytest.fixture
def libcoap_server():
    """libcoap's ``coap-server-notls -d 20`` on a free port (PUT creates resources)."""
    binary = which_or_skip("coap-server-notls")
    port = free_port()
    p = Proc([binary, "-A", "127.0.0.1", "-p", str(port), "-d", "20"], port)
    yield p
    p.stop()


@pytest.fixture
def server(hub):
    """An in-process demo server (plus test routes) on this test's hub, 127.0.0.1, free port."""
    from greencoap.demo import build_router
    from greencoap.server import Server

    router = build_router()
    srv = Server(router, host="127.0.0.1", port=0).start()
    srv.uri = f"coap://127.0.0.1:{srv.port}"
    yield srv
    srv.stop()


@pytest.fixture
def aiocoap_mod():
    """The aiocoap package (a peer): skipped locally when missing, required in CI."""
    try:
        import aiocoap
    except ImportError:
        aiocoap = None
    require_or_skip(aiocoap is not None, "aiocoap")
    return aiocoap


#: tests that measure time or load, or read machine-wide counters: they run on
#: their own after the rest (``make test`` runs the rest three at a time; see
#: scripts/test.sh).  A file name takes the whole file, ``file::name`` one test.
SERIAL = {
    "test_flood.py",
    "test_fuzz.py",
    "test_locust.py",
    # the Locust runs that measure rates, ages or totals under load; the other
    # tests of test_locust_fleet.py check behaviour and share the machine
    "test_locust_fleet.py::test_2000_device_users_in_one_worker_against_aiocoap_rd",
    "test_locust_fleet.py::test_distributed_device_users",
    "test_locust_fleet.py::test_distributed_coap_users",
    "test_locust_fleet.py::test_hold_observations_reports_rate_and_age",
    "test_dtls_api.py::test_50000_hostile_datagrams_counted_while_a_good_client_is_served",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        name = getattr(item, "originalname", None) or item.name
        if item.path.name in SERIAL or f"{item.path.name}::{name}" in SERIAL:
            item.add_marker(pytest.mark.serial)
