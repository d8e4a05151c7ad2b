"""Device fleets (greencoap.fleet): templates, RD registration (the test RD
and aiocoap-rd), telemetry, faults, DTLS devices under libcoap's client, the
command line, and mistakes that fail once at start."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from time import monotonic

import pytest

from greencoap.client import Client
from greencoap.errors import CoapError, RequestTimeoutError
from greencoap.fleet import Fleet, FleetError, ResourceDirectory, Telemetry
from greencoap.fleet.behaviours import firmware_image
from greencoap.hub import sleep
from greencoap.linkformat import parse_link_format
from greencoap.response import Response
from greencoap.router import Router
from greencoap.server import Server

from .conftest import Proc, free_port, which_or_skip

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def rd():
    """The test RD, in process, on this test's hub (list it after ``hub`` or
    ``any_hub``, which set the hub up)."""
    from greencoap import hub as hubmod

    assert getattr(hubmod._local, "hub", None) is not None, "rd needs the hub fixture first"
    directory = ResourceDirectory()
    server = Server(directory.router, host="127.0.0.1", port=0, echo_factor=None).start()
    directory.uri = f"coap://127.0.0.1:{server.port}/rd"
    directory.server = server
    yield directory
    server.stop()


def lively(index: int, name: str):
    """A template with a fast telemetry value and a per-device identity."""
    router = Router()
    state = type("S", (), {})()
    state.telemetry = [Telemetry("/t", index=index, amplitude=50.0, period=1.0, interval=0.05)]
    state.hits = 0

    def whoami(request):
        state.hits += 1
        return f"{name}#{index}"

    router.add("GET", "/whoami", whoami, rt="id")
    router.add("GET", "/t", lambda request: state.telemetry[0].render(), observable=True)
    return router, state


def test_each_device_has_its_own_state_and_socket(any_hub):
    with Fleet(lively, count=5, name="unit-{i}", first_index=10) as fleet, Client(timeout=5) as c:
        assert len(set(fleet.ports)) == 5
        for d in fleet:
            assert c.get(d.uri + "/whoami").text == f"unit-{d.index}#{d.index}"
            assert d.state.hits == 1
        assert [d.index for d in fleet] == list(range(10, 15))
        assert fleet.counters()["requests"] == 5


def test_default_template_behaviours(any_hub):
    with Fleet(count=2, server_options={"echo_factor": None}) as fleet, Client(timeout=5) as c:
        d = fleet[1]
        temp = float(c.get(d.uri + "/sensors/temp").text)
        assert 15.0 <= temp <= 27.0
        assert c.get(d.uri + "/actuators/led").text == "off"
        assert c.put(d.uri + "/actuators/led", payload=b"on").code == 68
        assert c.put(d.uri + "/actuators/led", payload=b"dim").code == 128
        assert c.get(d.uri + "/actuators/led").text == "on"
        assert c.get(fleet[0].uri + "/actuators/led").text == "off"  # its own state
        image = c.get(d.uri + "/firmware").payload  # Block2, reassembled
        assert image == firmware_image("dev-1") and len(image) == 64 * 1024
        blob = os.urandom(5000)
        up = c.put(d.uri + "/firmware/upload", payload=blob)  # Block1
        assert up.code == 68 and up.json()["size"] == 5000
        info = c.get(d.uri + "/device").json()
        assert info["name"] == "dev-1" and info["led"] == "on"
        core = parse_link_format(c.get(d.uri + "/.well-known/core").text)
        by_target = {link.target: link for link in core}
        assert by_target["/sensors/temp"].obs and "sensor.temp" in by_target["/sensors/temp"].rt


def test_registration_refresh_reregistration_and_removal(any_hub, rd):
    fleet = Fleet(count=20, register=rd.uri, lifetime=2, ramp=0.2).start()
    try:
        assert fleet.wait_registered(10)
        eps = rd.endpoints()
        assert sorted(eps) == sorted(f"dev-{i}" for i in range(20))
        d = fleet[7]
        assert eps["dev-7"].base == f"coap://127.0.0.1:{d.port}"  # its own socket
        targets = {link.target for link in eps["dev-7"].links}
        assert {"/sensors/temp", "/actuators/led", "/firmware"} <= targets
        sleep(1.9)  # the refresh comes at 1.3-1.5 s, before the 2 s lifetime ends
        assert rd.counts["refresh"] >= 20 and rd.counts["expired"] == 0
        rd.registrations.clear()  # the RD restarts and forgets everyone
        rd.by_name.clear()
        deadline = monotonic() + 5
        while len(rd) < 20 and monotonic() < deadline:
            sleep(0.05)
        assert len(rd) == 20  # 4.04 to the refresh, registered anew
        assert fleet.stats()["registration"]["reregistrations"] == 20
    finally:
        fleet.stop()
    assert len(rd) == 0 and rd.counts["remove"] == 20  # nothing left behind


def test_registrations_are_spread_over_the_ramp(any_hub, rd):
    with Fleet(count=100, register=rd.uri, ramp=1.0) as fleet:
        assert fleet.wait_registered(10)
    times = sorted(t for kind, _, t in rd.history if kind == "register")
    assert len(times) == 100 and times[-1] - times[0] >= 0.8
    per_100ms: dict[int, int] = {}
    for t in times:
        per_100ms[int((t - times[0]) * 10)] = per_100ms.get(int((t - times[0]) * 10), 0) + 1
    assert max(per_100ms.values()) <= 20  # about 10 per 100 ms, never a herd


def test_lwm2m_style_registration(hub, rd):
    def lwm2m_device(index, name):
        r = Router()
        r.add("GET", "/3/0", lambda req: Response(69, b"device"))
        r.add("GET", "/1/0", lambda req: Response(69, b"server"))
        return r

    fleet = Fleet(
        lwm2m_device,
        count=3,
        register=rd.uri,
        lwm2m="1.1",
        lifetime=60,
        name="urn:dev:{i}",
        endpoint_params=[("et", "lwm2m-sim")],
    )
    with fleet:
        assert fleet.wait_registered(5)
        reg = rd.endpoints()["urn:dev:1"]
        assert reg.params == {"lwm2m": "1.1", "et": "lwm2m-sim", "b": "U"}
        targets = [link.target for link in reg.links]
        assert targets[0] == "/" and reg.links[0].rt == ["oma.lwm2m"]
        assert set(targets[1:]) == {"/1/0", "/3/0"}


def test_telemetry_is_notified_to_observers(any_hub):
    with Fleet(lively, count=3, tick=0.05) as fleet, Client(timeout=5) as c:
        values = []
        obs = c.observe(fleet[2].uri + "/t")
        t0 = monotonic()
        for n in obs:
            values.append(float(n.text))
            if len(values) == 5:
                break
        obs.cancel()
        assert monotonic() - t0 < 3 and len(set(values)) == 5  # each one a new value
        assert fleet.counters()["notifications"] >= 4


def test_fault_slow_answers_become_separate_responses(hub):
    with Fleet(lively, count=4) as fleet, Client(timeout=5) as c:
        slow = fleet.inject("slow", devices=[1], delay=0.8)
        assert [d.index for d in slow] == [1]
        t0 = monotonic()
        assert c.get(fleet[1].uri + "/whoami").text == "dev-1#1"
        assert monotonic() - t0 >= 0.8
        assert fleet[1].server.stats["separate_acks"] == 1
        t0 = monotonic()
        c.get(fleet[0].uri + "/whoami")
        assert monotonic() - t0 < 0.3  # the others are not slowed


def test_fault_loss_and_offline(hub):
    with Fleet(lively, count=10, seed=3) as fleet, Client(timeout=0.6) as c:
        lossy = fleet.inject("loss", fraction=0.5, rate=1.0)
        assert len(lossy) == 5
        lossy_ids = {d.index for d in lossy}
        for d in fleet:
            if d.index in lossy_ids:
                with pytest.raises(RequestTimeoutError):
                    c.get(d.uri + "/whoami")
                assert d.stats()["lost_in"] >= 1
            else:
                assert c.get(d.uri + "/whoami").code == 69
        d = next(d for d in fleet if d.index not in lossy_ids)
        d.go_offline()
        with pytest.raises(RequestTimeoutError):
            c.get(d.uri + "/whoami")
        d.come_back()
        assert c.get(d.uri + "/whoami").code == 69
        assert fleet.counters()["offline"] == 0


def test_offline_device_registration_backs_off_and_recovers(hub, rd):
    fleet = Fleet(lively, count=2, register=rd.uri, lifetime=3, rd_timeout=1.0).start()
    try:
        assert fleet.wait_registered(5)
        d = fleet[0]
        d.go_offline()
        sleep(4.0)  # its refresh is lost; the RD lets the registration expire
        assert "dev-0" not in rd.endpoints() and "dev-1" in rd.endpoints()
        assert d.registration.stats["timeouts"] >= 1
        d.come_back()  # the back-off ends at once
        deadline = monotonic() + 5
        while "dev-0" not in rd.endpoints() and monotonic() < deadline:
            sleep(0.05)
        assert "dev-0" in rd.endpoints()
    finally:
        fleet.stop()
    assert len(rd) == 0


def test_fault_reboot_gives_new_state_and_a_new_registration(hub, rd):
    fleet = Fleet(
        count=3, register=rd.uri, lifetime=60, server_options={"echo_factor": None}
    ).start()
    try:
        assert fleet.wait_registered(5)
        with Client(timeout=5) as c:
            d = fleet[1]
            c.put(d.uri + "/actuators/led", payload=b"on")
            obs = c.observe(d.uri + "/sensors/temp")
            next(iter(obs))
            assert d.server.stats["observers"] == 1
            before = rd.counts["register"]
            fleet.inject("reboot", devices=[1], boot_time=0.2)
            deadline = monotonic() + 5
            while rd.counts["register"] == before and monotonic() < deadline:
                sleep(0.05)
            assert rd.counts["register"] == before + 1 and d.boots == 2
            assert c.get(d.uri + "/actuators/led").text == "off"  # new state
            assert d.server.stats["observers"] == 0  # the power cut lost them silently
            obs.close_locally()
        assert len(rd) == 3 and fleet.event_counts["reboot"] == 1
    finally:
        fleet.stop()


def test_dtls_devices_answer_libcoap(hub):
    client = which_or_skip("coap-client-openssl")
    with Fleet(lively, count=3, psk="dev-{i}:secret-{name}") as fleet:
        d = fleet[2]
        assert d.uri.startswith("coaps://") and d.dtls_port != d.port

        def run(key):
            return subprocess.run(
                [client, "-u", "dev-2", "-k", key, "-B", "5", d.uri + "/whoami"],
                capture_output=True,
                timeout=20,
            )

        ok = hub.run_in_thread(run, "secret-dev-2", timeout=25)
        assert ok.stdout.strip() == b"dev-2#2", ok
        bad = hub.run_in_thread(run, "wrong", timeout=25)
        assert b"dev-2#2" not in bad.stdout
        assert d.server.stats["dtls_auth_failures"] >= 1
        assert d.server.stats["internal_errors"] == 0


def test_plain_devices_answer_libcoap(hub):
    client = which_or_skip("coap-client-notls")
    with Fleet(lively, count=20, base_port=free_port(count=20)) as fleet:
        assert [d.port for d in fleet] == list(range(fleet[0].port, fleet[0].port + 20))
        for d in fleet[::5]:
            out = hub.run_in_thread(
                lambda u=d.uri: subprocess.run(
                    [client, "-B", "5", u + "/whoami"], capture_output=True, timeout=20
                ),
                timeout=25,
            )
            assert out.stdout.strip() == f"dev-{d.index}#{d.index}".encode()


def test_against_aiocoap_rd(hub):
    binary = Path(sys.executable).parent / "aiocoap-rd"
    which_or_skip(str(binary))
    port = free_port()
    rd = Proc([str(binary), "--bind", f"127.0.0.1:{port}"], port)
    try:
        fleet = Fleet(count=50, register=f"coap://127.0.0.1:{port}", ramp=0.5).start()
        assert fleet.rd_path == "/resourcedirectory/"  # found through its .well-known/core
        try:
            assert fleet.wait_registered(15)
            with Client(timeout=5) as c:
                eps = parse_link_format(c.get(f"coap://127.0.0.1:{port}/endpoint-lookup/").text)
                names = {link.get("ep") for link in eps}
                assert names == {f"dev-{i}" for i in range(50)}
                base = {link.get("ep"): link.get("base") for link in eps}
                assert base["dev-3"] == f"coap://127.0.0.1:{fleet[3].port}"
        finally:
            fleet.stop()
        with Client(timeout=5) as c:
            left = c.get(f"coap://127.0.0.1:{port}/endpoint-lookup/").text
        assert left.strip() == ""  # every device removed itself
    finally:
        rd.stop()


def _taken_port_after_a_free_one() -> tuple[socket.socket, int]:
    """A bound socket on port P whose port P-1 was free a moment ago (other
    tests bind ports meanwhile: try a few until the one below is free)."""
    for _ in range(50):
        taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.bind(("127.0.0.1", port - 1))
        except OSError:
            taken.close()
            continue
        finally:
            probe.close()
        return taken, port
    raise RuntimeError("no port with a free one below it")


def test_mistakes_fail_once_at_start(hub):
    dead = free_port()
    with pytest.raises(FleetError, match="no CoAP server answers"):
        Fleet(count=5, register=f"coap://127.0.0.1:{dead}/rd").start()
    with pytest.raises(FleetError, match="coap://"):
        Fleet(count=5, register="coaps://127.0.0.1/rd").start()
    with pytest.raises(FleetError, match="cannot resolve"):
        Fleet(count=5, register="coap://no-such-host.invalid/rd").start()
    taken, port = _taken_port_after_a_free_one()
    try:
        fleet = Fleet(lively, count=3, base_port=port - 1)
        with pytest.raises(FleetError, match=f"device dev-1: cannot bind 127.0.0.1:{port}"):
            fleet.start()
        assert fleet.devices[0].server is None  # the one started was stopped again
    finally:
        taken.close()
    with pytest.raises(TypeError, match="returns a Router"):
        Fleet(lambda i, n: "not a router", count=1).start()


def test_rd_without_a_registration_resource_is_refused(any_hub):
    plain = Server(Router(), host="127.0.0.1", port=0).start()
    try:
        with pytest.raises(FleetError, match="rt=core.rd"):
            Fleet(count=1, register=f"coap://127.0.0.1:{plain.port}").start()
    finally:
        plain.stop()


def run_cli(hub, *args, timeout=60):
    env = dict(os.environ, GREENCOAP_HUB=hub.backend)
    cmd = [sys.executable, "-m", "greencoap", "fleet", *args]
    return hub.run_in_thread(
        lambda: subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env),
        timeout=timeout + 5,
    )


@pytest.mark.parametrize("processes", [1, 2])
def test_command_line_json(hub, processes):
    rd = ResourceDirectory()
    server = Server(rd.router, host="127.0.0.1", port=0, echo_factor=None).start()
    try:
        out = run_cli(
            hub,
            "--devices",
            "60",
            "--register",
            f"coap://127.0.0.1:{server.port}/rd",
            "--duration",
            "5",  # progress lines at 1..5 s: a loaded machine may start the children late
            "--json",
            "--processes",
            str(processes),
            "--loss",
            "0.5:0.0",
            "--name",
            "cli-{i}",
        )
        assert out.returncode == 0, out.stderr
        stats = json.loads(out.stdout)
        assert stats["devices_total"] == 60 and stats["registered_before_stop"] == 60
        assert stats["registration"]["registrations"] == 60 and stats["rd_failures"] == 0
        assert stats["faults"]["loss"] == 60 // processes * processes // 2
        assert "registered 60" in out.stderr  # the progress line
        assert rd.counts["register"] == 60 and rd.counts["remove"] == 60 and len(rd) == 0
        assert {ep for _, ep, _ in rd.history} == {f"cli-{i}" for i in range(60)}
    finally:
        server.stop()


def test_command_line_summary_and_errors(hub):
    out = run_cli(hub, "--devices", "5", "--duration", "0.5")
    assert out.returncode == 0, out.stderr
    assert "devices" in out.stdout and "requests served" in out.stdout
    bad = run_cli(hub, "--devices", "5", "--template", "nosuchmodule:fn")
    assert bad.returncode == 2 and "cannot load template nosuchmodule:fn" in bad.stderr
    dead = run_cli(hub, "--devices", "5", "--register", f"coap://127.0.0.1:{free_port()}/rd")
    assert dead.returncode == 2 and "no CoAP server answers" in dead.stderr
    assert dead.stderr.count("no CoAP server answers") == 1  # once, not per device


def test_events_hook_hears_every_rd_exchange(hub, rd):
    seen = []
    with Fleet(count=4, register=rd.uri, events=lambda *e: seen.append(e)) as fleet:
        assert fleet.wait_registered(5)
    kinds = sorted(k for k, *_ in seen)
    assert kinds == ["register"] * 4 + ["remove"] * 4
    assert all(err is None and secs >= 0 for _, _, secs, _, err in seen)
    assert all(size > 0 for k, _, _, size, _ in seen if k == "register")


def test_a_stopped_fleet_leaves_no_socket_behind(hub):
    fds = len(os.listdir("/proc/self/fd"))
    fleet = Fleet(lively, count=200).start()
    assert len(os.listdir("/proc/self/fd")) >= fds + 200
    fleet.stop()
    assert len(os.listdir("/proc/self/fd")) <= fds + 1
    with pytest.raises(CoapError):
        with Client(timeout=0.5) as c:
            c.get(fleet[0].uri + "/whoami")


def test_the_gateway_example_runs(hub):
    """``examples/fleet_gateway.py``: fleet, RD, a gateway observing them all."""
    example = Path(__file__).resolve().parent.parent / "examples" / "fleet_gateway.py"
    env = dict(os.environ, GREENCOAP_HUB=hub.backend)
    out = hub.run_in_thread(
        lambda: subprocess.run(
            [sys.executable, str(example), "--devices", "100", "--duration", "3"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        ),
        timeout=65,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("100 devices registered")
    assert lines[1] == "the RD lists 100 temperature sensors; observing them all"
    first = int(lines[2].split()[0])
    assert first >= 100  # each observation's first answer at least
    assert lines[-1] == "fleet stopped: 0 registrations left in the RD"


def test_command_line_spreads_processes_over_several_addresses(hub):
    """``--host A,B --processes 2``: process i binds the i-th address, each with
    its own port range from ``--base-port`` (more devices than one address has
    ports); several addresses without enough processes is a usage error."""
    base = free_port()
    env = dict(os.environ, GREENCOAP_HUB=hub.backend)
    args = ["--devices", "6", "--processes", "2", "--host", "127.0.0.1,127.0.0.2"]
    cmd = [sys.executable, "-m", "greencoap", "fleet", *args, "--base-port", str(base)]
    p = subprocess.Popen(
        [*cmd, "--duration", "30", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        names = {}
        deadline = monotonic() + 20
        with Client(timeout=0.5, max_retransmit=0) as c:
            for host in ("127.0.0.1", "127.0.0.2"):
                for k in range(3):
                    while (host, k) not in names:
                        assert monotonic() < deadline, (names, p.poll())
                        try:
                            r = c.get(f"coap://{host}:{base + k}/device")
                        except RequestTimeoutError:
                            continue
                        names[host, k] = json.loads(r.payload)["name"]
        assert names == {
            **{("127.0.0.1", k): f"dev-{k}" for k in range(3)},
            **{("127.0.0.2", k): f"dev-{3 + k}" for k in range(3)},
        }
    finally:
        p.send_signal(2)  # Ctrl-C
        out, err = hub.run_in_thread(p.communicate, timeout=30)
    assert p.returncode == 0, err
    assert json.loads(out)["devices_total"] == 6
    bad = run_cli(hub, "--devices", "4", "--host", "127.0.0.1,127.0.0.2")
    assert bad.returncode == 2 and "need --processes 2 or more" in bad.stderr
    past = run_cli(hub, "--devices", "70000", "--base-port", "1000")
    assert past.returncode == 2 and "runs past port 65535" in past.stderr


def test_a_fleet_raises_its_open_file_limit_or_says_what_to_do():
    """The soft RLIMIT_NOFILE is raised to fit the sockets; past the hard limit
    start() fails at once, with what to do (a child: the limit cannot go back up)."""
    code = """if True:
        import resource
        from greencoap.fleet import Fleet, FleetError
        resource.setrlimit(resource.RLIMIT_NOFILE, (150, 300))
        with Fleet(count=200):
            print("soft", resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        try:
            Fleet(count=400).start()
        except FleetError as e:
            print("error", e)
    """
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    soft, error = out.stdout.splitlines()
    assert 200 < int(soft.split()[1]) <= 300
    assert error.startswith("error 400 device sockets need") and "--processes" in error


def test_a_fleet_keeps_its_objects_out_of_the_collectors_sight(hub):
    """Building pauses the garbage collector and leaves it on again; a started
    fleet's objects are frozen (a full collection of 10,000 devices would stop
    the hub for about a second) and given back on stop; ``freeze_gc=False``
    leaves the collector alone."""
    import gc

    assert gc.isenabled() and gc.get_freeze_count() == 0
    with Fleet(lively, count=50) as fleet:
        assert gc.isenabled()
        assert gc.get_freeze_count() > 50 * 20
        assert fleet[0].server.housekeeping_interval is None  # swept by the fleet's ticker
    assert gc.get_freeze_count() == 0
    with Fleet(lively, count=5, freeze_gc=False):
        assert gc.get_freeze_count() == 0 and gc.isenabled()


def test_the_fleet_sweeps_its_devices_tables_from_one_timer(any_hub):
    """No device has a housekeeping timer of its own, yet abandoned block-wise
    state on any device goes within the fleet's ``housekeeping`` sweep; the
    telemetry ticker visits only the devices that have observers."""
    opts = {"upload_timeout": 0.2}
    with Fleet(count=30, tick=0.05, housekeeping=0.3, server_options=opts) as fleet:
        assert all(d.server._housekeeper is None for d in fleet)
        with Client(timeout=5) as c:
            for k in (0, 17, 29):  # a 64 KiB body leaves its Block2 rendering cached
                r = c.get(f"coap://127.0.0.1:{fleet.ports[k]}/firmware")
                assert len(r.payload) == 64 * 1024
            held = [fleet[k].server.table_sizes()["block2_bodies"] for k in (0, 17, 29)]
            assert held == [1, 1, 1]
            assert fleet._observed == {}
            obs = c.observe(f"coap://127.0.0.1:{fleet.ports[5]}/sensors/temp")
            next(iter(obs))
            assert list(fleet._observed) == [fleet[5]]
            deadline = monotonic() + 5
            while monotonic() < deadline:
                if all(fleet[k].server.table_sizes()["block2_bodies"] == 0 for k in (0, 17, 29)):
                    break
                sleep(0.05)
            assert [fleet[k].server.table_sizes()["block2_bodies"] for k in (0, 17, 29)] == [0] * 3
            obs.cancel()
            deadline = monotonic() + 5
            while fleet._observed and monotonic() < deadline:
                sleep(0.05)
            assert fleet._observed == {}


def test_placement_of_devices_over_processes_and_addresses():
    """`greencoap fleet --processes K --host A,B` (and bench/fleet.py, which
    finds devices by it): contiguous shares, processes round-robin over the
    addresses, each address's ports one run from the base port."""
    from greencoap.fleet.cli import placement

    assert placement(10, 3, ("a", "b")) == [(0, 4, "a", 0), (4, 3, "b", 0), (7, 3, "a", 4)]
    assert placement(2, 4, ("a",), first_index=5) == [(5, 1, "a", 0), (6, 1, "a", 1)]
    for devices, processes, hosts in [(100_000, 8, ("h1", "h2", "h3", "h4")), (7, 7, ("x", "y"))]:
        place = placement(devices, processes, hosts)
        indices = [g for first, share, _, _ in place for g in range(first, first + share)]
        assert indices == list(range(devices))  # every device once, in order
        for host in hosts:
            ports = sorted(off + j for _, share, h, off in place if h == host for j in range(share))
            assert ports == list(range(len(ports)))  # one run of ports per address
