"""Locust users that are devices (CoapDeviceUser), CoapUser realism (a
socket per user, or shared; observe load), mistakes that fail once at start,
and Locust's distributed mode (a master and two workers) for both kinds.

The Locust runs are subprocesses (``locust`` monkey-patches the process it
runs in); the RD and the servers they talk to run in this process on the
test's hub while the run goes on in a thread.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

os.environ.setdefault("LOCUST_SKIP_MONKEY_PATCH", "1")

from greencoap.client import Client  # noqa: E402
from greencoap.fleet import ResourceDirectory  # noqa: E402
from greencoap.hub import sleep, spawn  # noqa: E402
from greencoap.linkformat import parse_link_format  # noqa: E402
from greencoap.router import Router  # noqa: E402
from greencoap.server import Server  # noqa: E402

from .conftest import Proc, free_port, require_or_skip  # noqa: E402

pytestmark = pytest.mark.timeout(240)

ROOT = Path(__file__).resolve().parent.parent
PLATFORM = ROOT / "loadtest" / "platform.py"
LOCUSTFILE = ROOT / "loadtest" / "locustfile.py"


def locust_cmd(locustfile: Path, *args: str) -> list[str]:
    # found, not imported: importing locust monkey-patches this process (gevent)
    require_or_skip(importlib.util.find_spec("locust") is not None, "locust")
    return [sys.executable, "-m", "locust", "-f", str(locustfile), *args]


def headless(users: int, rate: int, seconds: float) -> list[str]:
    return [
        "--headless",
        "-u",
        str(users),
        "-r",
        str(rate),
        "-t",
        f"{seconds}s",
        "--json",
        "--only-summary",
        "--stop-timeout",
        "10",
    ]


def rows(stdout: str) -> dict[tuple[str, str], dict]:
    return {(r["method"], r["name"]): r for r in json.loads(stdout)}


def serve_rd():
    """The test RD on this thread's hub, while the generator is suspended."""
    directory = ResourceDirectory()
    server = Server(directory.router, host="127.0.0.1", port=0, echo_factor=None).start()
    directory.uri = f"coap://127.0.0.1:{server.port}/rd"
    yield directory
    server.stop()


@pytest.fixture
def rd(gevent_or_hub):
    yield from serve_rd()


@pytest.fixture
def one_rd(one_hub):
    """The test RD on :func:`one_hub`."""
    yield from serve_rd()


@pytest.fixture(params=["uring", "epoll"])
def gevent_or_hub(request):
    """The in-process side (RD, servers) on each hub; Locust itself is gevent."""
    from .conftest import hub_for

    yield from hub_for(request.param)


@pytest.fixture
def one_hub():
    """For the long runs whose in-process side is only a bystander (an
    aiocoap RD, a demo server polled now and then): the io_uring hub."""
    from .conftest import hub_for

    yield from hub_for("uring")


def locust_env(**extra: str) -> dict:
    """The environment of a Locust subprocess: Locust monkey-patches there
    (this process skips it, and its master/worker sockets need it)."""
    env = {k: v for k, v in os.environ.items() if k != "LOCUST_SKIP_MONKEY_PATCH"}
    return {**env, "GREENCOAP_HUB": "", **extra}


def in_thread(hub, cmd, timeout, env=None):
    env = locust_env(**(env or {}))
    return hub.run_in_thread(
        lambda: subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env),
        timeout=timeout + 10,
    )


def test_device_users_register_serve_notify_and_deregister(gevent_or_hub, rd):
    hub = gevent_or_hub
    served, notes, done = [0], [0], [False]

    def gateway():
        """A platform: GET every registered device, observe one of them."""
        seen: set = set()
        obs = None
        with Client(timeout=3) as c:
            while not done[0]:
                for ep, reg in list(rd.endpoints().items()):
                    if ep not in seen:
                        try:
                            c.get(reg.base + "/sensors/temp")
                            served[0] += 1
                            seen.add(ep)
                        except Exception:  # noqa: BLE001 - it may have just left
                            pass
                        if obs is None:
                            obs = c.observe(reg.base + "/sensors/temp")
                            spawn(lambda o=obs: [notes.__setitem__(0, notes[0] + 1) for _ in o])
                sleep(0.1)
            if obs is not None:
                obs.close_locally()

    g = spawn(gateway)
    out = in_thread(
        hub,
        locust_cmd(PLATFORM, "--host", rd.uri, *headless(20, 20, 6)),
        60,
        {"LOCUST_DEVICE_INTERVAL": "0.3"},
    )
    done[0] = True
    g.join(5)
    assert out.returncode == 0, out.stderr[-3000:]
    stats = rows(out.stdout)
    assert stats[("RD", "register")]["num_requests"] == 20
    assert stats[("RD", "register")]["num_failures"] == 0
    assert stats[("RD", "remove")]["num_requests"] == 20  # each deregistered on stop
    assert stats[("SERVE", "GET /sensors/temp")]["num_requests"] >= served[0] >= 20
    assert stats[("NOTIFY", "/sensors/temp")]["num_requests"] >= 5 and notes[0] >= 5
    assert rd.counts["register"] == 20 and rd.counts["remove"] == 20 and len(rd) == 0
    assert {ep for _, ep, _ in rd.history} == {f"locust-0-{i}" for i in range(20)}


def test_device_user_pushes_telemetry_to_the_platform(gevent_or_hub, rd):
    got = []

    def telemetry(request):
        got.append((request.peer[1], request.json()))
        return "ok"

    rd.router.add("POST", "/telemetry", telemetry)
    out = in_thread(
        gevent_or_hub,
        locust_cmd(PLATFORM, "--host", rd.uri, *headless(5, 5, 3)),
        60,
        {"LOCUST_DEVICE_INTERVAL": "0.2", "LOCUST_TELEMETRY_PATH": "/telemetry"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    push = rows(out.stdout)[("PUSH", "/telemetry")]
    assert push["num_requests"] >= 20 and push["num_failures"] == 0
    # each reported push arrived; a user stopped mid-push has one more unreported
    assert push["num_requests"] <= len(got) <= push["num_requests"] + 5
    ports = {p for p, _ in got}
    assert len(ports) == 5  # from each device's own socket
    assert all(15 <= body["temp"] <= 27 for _, body in got)


USER_SOCKETS = textwrap.dedent(
    """
    import os
    from locust import constant, task
    from greencoap.contrib.locust import CoapUser

    class Reader(CoapUser):
        wait_time = constant(0.05)
        share_client = os.environ.get("SHARE") == "1"

        @task
        def who(self):
            self.client.get("/who")
    """
)


@pytest.mark.parametrize("share", [False, True])
def test_coap_users_have_their_own_socket_or_share_one(gevent_or_hub, tmp_path, share):
    ports = set()

    def who(request):
        ports.add(request.peer[1])
        return "you"

    router = Router()
    router.add("GET", "/who", who)
    server = Server(router, host="127.0.0.1", port=0).start()
    try:
        f = tmp_path / "users.py"
        f.write_text(USER_SOCKETS)
        out = in_thread(
            gevent_or_hub,
            locust_cmd(f, "--host", f"coap://127.0.0.1:{server.port}", *headless(8, 8, 2)),
            60,
            {"SHARE": "1" if share else "0"},
        )
        assert out.returncode == 0, out.stderr[-3000:]
        assert rows(out.stdout)[("GET", "/who")]["num_failures"] == 0
        assert len(ports) == (1 if share else 8)
    finally:
        server.stop()


OBSERVERS = textwrap.dedent(
    """
    from locust import constant, task
    from greencoap.contrib.locust import CoapUser

    class Watcher(CoapUser):
        wait_time = constant(1)

        def on_start(self):
            self.pool = self.client.hold_observations("/counter?interval=0.1", 3, name="/counter")

        @task
        def idle(self):
            pass
    """
)


def test_hold_observations_reports_rate_and_age(tmp_path, gevent_or_hub):
    from greencoap.demo import build_router

    server = Server(build_router(), host="127.0.0.1", port=0).start()
    try:
        f = tmp_path / "watch.py"
        f.write_text(OBSERVERS)
        out = in_thread(
            gevent_or_hub,
            locust_cmd(f, "--host", f"coap://127.0.0.1:{server.port}", *headless(2, 2, 3)),
            60,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        stats = rows(out.stdout)
        assert stats[("OBSERVE", "/counter")]["num_requests"] == 6  # 2 users × 3
        notify = stats[("NOTIFY", "/counter")]
        assert notify["num_requests"] >= 6 * 15 and notify["num_failures"] == 0
        # the age of a notification: about the 0.1 s interval
        assert 50 <= notify["total_response_time"] / notify["num_requests"] <= 250
        assert server.stats["observers"] == 0  # all deregistered at stop
    finally:
        server.stop()


def test_mistakes_fail_once_at_start(one_hub):
    hub = one_hub
    dead = free_port()
    cases = [
        (PLATFORM, f"coap://127.0.0.1:{dead}/rd", "no CoAP server answers"),
        (LOCUSTFILE, f"coaps://127.0.0.1:{dead}", "--coap-psk-identity and --coap-psk-key"),
        (LOCUSTFILE, "coap://[::1", "bad host"),
    ]
    for locustfile, host, text in cases:
        out = in_thread(
            hub,
            locust_cmd(
                locustfile,
                "--host",
                host,
                "--headless",
                "-u",
                "20",
                "-r",
                "20",
                "-t",
                "8s",
                "--only-summary",
            ),
            60,
        )
        assert out.returncode == 2, (host, out.stderr[-2000:])
        assert out.stderr.count(text) == 1, (host, out.stderr[-2000:])
        assert "Traceback" not in out.stderr


def start_workers(locustfile: Path, port: int, n: int, env: dict) -> list[subprocess.Popen]:
    return [
        subprocess.Popen(
            locust_cmd(locustfile, "--worker", "--master-port", str(port)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(n)
    ]


def stop_all(procs: list[subprocess.Popen]) -> str:
    err = ""
    for p in procs:
        try:
            _, e = p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            _, e = p.communicate()
        err += e or ""
    return err


def test_distributed_device_users(one_hub, one_rd):
    """A master with two workers: 40 device users over two processes; the
    master's totals show every one registered and removed.  (The RD in this
    process is a bystander here: one hub; the RD's own tests take both.)"""
    port = free_port(host="127.0.0.1")
    env = locust_env(LOCUST_DEVICE_INTERVAL="1")
    workers = start_workers(PLATFORM, port, 2, env)
    try:
        cmd = locust_cmd(
            PLATFORM,
            "--master",
            "--expect-workers",
            "2",
            "--master-bind-port",
            str(port),
            "--host",
            one_rd.uri,
            *headless(40, 40, 6),
        )
        out = in_thread(one_hub, cmd, 90)
    finally:
        err = stop_all(workers)
    assert out.returncode == 0, out.stderr[-2000:] + err[-2000:]
    stats = rows(out.stdout)
    assert stats[("RD", "register")]["num_requests"] == 40
    assert stats[("RD", "remove")]["num_requests"] == 40
    assert sum(r["num_failures"] for r in stats.values()) == 0
    names = {ep for kind, ep, _ in one_rd.history if kind == "register"}
    assert len(names) == 40 and {n.split("-")[1] for n in names} == {"0", "1"}  # both workers
    assert len(one_rd) == 0


def test_distributed_coap_users(one_hub):
    from greencoap.demo import build_router

    server = Server(build_router(), host="127.0.0.1", port=0).start()
    port = free_port(host="127.0.0.1")
    env = locust_env(LOCUST_SLOW_ONLY="1", LOCUST_SLOW_MS="20")
    workers = start_workers(LOCUSTFILE, port, 2, env)
    try:
        cmd = locust_cmd(
            LOCUSTFILE,
            "--master",
            "--expect-workers",
            "2",
            "--master-bind-port",
            str(port),
            "--host",
            f"coap://127.0.0.1:{server.port}",
            *headless(20, 20, 5),
        )
        out = in_thread(one_hub, cmd, 90, {"LOCUST_SLOW_ONLY": "1", "LOCUST_SLOW_MS": "20"})
    finally:
        err = stop_all(workers)
        served = server.stats["requests_received"]
        server.stop()
    assert out.returncode == 0, out.stderr[-2000:] + err[-2000:]
    slow = rows(out.stdout)[("GET", "/slow")]
    assert slow["num_failures"] == 0 and slow["num_requests"] >= 20 * 20  # ~50/s/user
    assert abs(served - slow["num_requests"]) <= 40  # the master counted what was served


def test_2000_device_users_in_one_worker_against_aiocoap_rd(one_hub):
    binary = Path(sys.executable).parent / "aiocoap-rd"
    require_or_skip(binary.exists(), "aiocoap-rd")
    hub = one_hub
    rd_port = free_port()
    rd = Proc([str(binary), "--bind", f"127.0.0.1:{rd_port}"], rd_port)
    lookup = f"coap://127.0.0.1:{rd_port}/endpoint-lookup/"
    peak = [0]
    done = [False]

    def count():
        with Client(timeout=10) as c:
            while not done[0]:
                try:
                    n = len(parse_link_format(c.get(lookup).text))
                    peak[0] = max(peak[0], n)
                except Exception:  # noqa: BLE001 - busy RD: try again
                    pass
                # a lookup of 2,000 links is ~100 Block2 requests to the RD:
                # every 2 s, so they load it less (with 0.5 s, 24 of 2,000
                # registrations once timed out on a slow machine)
                sleep(2.0)

    g = spawn(count)
    port = free_port(host="127.0.0.1")
    env = locust_env(LOCUST_DEVICE_INTERVAL="30")
    workers = start_workers(PLATFORM, port, 1, env)
    try:
        cmd = locust_cmd(
            PLATFORM,
            "--master",
            "--expect-workers",
            "1",
            "--master-bind-port",
            str(port),
            "--host",
            f"coap://127.0.0.1:{rd_port}",
            *headless(2000, 400, 20),  # 5 s of spawning, then room for a busy RD
        )
        out = in_thread(hub, cmd, 150)
        done[0] = True
        g.join(15)
        # the worker deregisters its devices as it quits (the master does not
        # wait for that): once it has exited, the RD must be empty
        err = hub.run_in_thread(stop_all, workers, timeout=60)
        with Client(timeout=10) as c:
            left = parse_link_format(c.get(lookup).text)
    finally:
        stop_all(workers)  # (a no-op when they have exited)
        rd.stop()
    assert out.returncode == 0, out.stderr[-2000:] + err[-2000:]
    stats = rows(out.stdout)
    assert stats[("RD", "register")]["num_requests"] == 2000
    assert stats[("RD", "register")]["num_failures"] == 0
    assert peak[0] == 2000  # the RD itself held every one of them
    assert left == []  # and none after the stop
