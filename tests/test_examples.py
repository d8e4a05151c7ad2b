"""Every script in ``examples/`` runs as its docstring says, against the demo
server on each hub (or self-contained), and one that needs a server says so
in one line when none is running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import free_port, require_or_skip

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NEEDS_SERVER = ("get", "fanout", "observe", "discover", "upload")

pytestmark = pytest.mark.timeout(120)


def run(hub, name: str, *args: str, timeout: float = 60):
    env = {k: v for k, v in os.environ.items() if k != "LOCUST_SKIP_MONKEY_PATCH"}
    env["GREENCOAP_HUB"] = hub.backend
    cmd = [sys.executable, str(EXAMPLES / f"{name}.py"), *args]
    return hub.run_in_thread(
        lambda: subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=EXAMPLES
        ),
        timeout=timeout + 5,
    )


def test_every_example_is_tested():
    scripts = {p.stem for p in EXAMPLES.glob("*.py") if not p.stem.startswith("_")}
    tested = {*NEEDS_SERVER, "server", "slow_handler", "dtls", "locustfile"}
    tested |= {"tour", "coapthon_legacy", "fleet_gateway"}  # test_tour, test_coapthon, test_fleet
    tested |= {"multicast"}  # test_multicast (in network namespaces of its own)
    assert scripts == tested


def test_blocking_script(hub, demo_proc):
    r = run(hub, "get", demo_proc.uri)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "GET /hello: 2.05 Content 'Hello, world!'",
        "POST /echo: 2.05 Content {'sent': 'from a script'}",
        "PUT /store: 2.04 Changed, GET /store gives it back: True",
    ]


def test_fan_out(hub, demo_proc):
    r = run(hub, "fanout", demo_proc.uri)
    assert r.returncode == 0, r.stderr
    line = r.stdout.strip()
    assert line.endswith("180 answered, 10 refused (4.04), 10 timed out"), line
    assert float(line.split(" in ")[1].split(" s")[0]) < 5  # concurrently, not 40 s


def test_observer(hub, demo_proc):
    r = run(hub, "observe", demo_proc.uri, "4")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 4 and all(x.startswith("notification ") for x in lines)
    values = [int(x.rsplit("= ", 1)[1]) for x in lines]
    assert values == sorted(values)


def test_discovery(hub, demo_proc):
    r = run(hub, "discover", demo_proc.uri)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == "3 temperature sensors: /sensors/1 /sensors/2 /sensors/3"
    assert f"{demo_proc.uri}/hello  rt=greeting" in r.stdout


def test_block_wise_upload(hub, demo_proc):
    r = run(hub, "upload", demo_proc.uri)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "uploaded 102400 bytes in 100 blocks: 2.04 Changed",
        "downloaded 102400 bytes, identical: True",
    ]


def test_server_with_routes(hub):
    port = free_port()
    env = dict(os.environ, GREENCOAP_HUB=hub.backend)
    cmd = [sys.executable, str(EXAMPLES / "server.py"), str(port), "20"]

    def scenario():
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=EXAMPLES)
        try:
            first = p.stdout.readline()
            g = [sys.executable, "-m", "greencoap"]
            uri = f"coap://127.0.0.1:{port}"
            got = subprocess.run([*g, "get", uri + "/rooms/kitchen"], capture_output=True)
            put = subprocess.run([*g, "put", uri + "/rooms/attic", "-p", "30"], capture_output=True)
            attic = subprocess.run([*g, "get", uri + "/rooms/attic"], capture_output=True)
            nope = subprocess.run([*g, "get", uri + "/rooms/moon"], capture_output=True)
            clock = subprocess.run(
                [*g, "observe", uri + "/clock", "--count", "2"], capture_output=True, timeout=20
            )
            return first, got, put, attic, nope, clock
        finally:
            p.terminate()
            p.wait(10)

    first, got, put, attic, nope, clock = hub.run_in_thread(scenario, timeout=60)
    assert first.startswith(f"serving coap://127.0.0.1:{port}")
    assert json.loads(got.stdout) == {"room": "kitchen", "celsius": 21.5}
    assert put.returncode == 0 and json.loads(attic.stdout)["celsius"] == 30.0
    assert nope.returncode == 1
    assert clock.stdout.split() == [b"0", b"1"]


def test_slow_handler_and_separate_response(hub):
    r = run(hub, "slow_handler")
    assert r.returncode == 0, r.stderr
    slow, fast = r.stdout.splitlines()
    assert slow.startswith("slow: 2.05 Content 'done after 1.5 s' (separate response: True)")
    assert fast.startswith("fast, meanwhile: 2.05 Content 'quick'")


def test_dtls_client_and_server(hub):
    r = run(hub, "dtls")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "sensor-1: 2.05 Content 'hello sensor-1'",
        "sensor-2: 2.05 Content 'hello sensor-2'",
        "wrong key: HandshakeError",
    ]


def test_locust_file(hub, demo_proc, tmp_path):
    import importlib.util

    # (not imported here: importing locust monkey-patches this whole process)
    require_or_skip(importlib.util.find_spec("locust") is not None, "locust")
    env = {k: v for k, v in os.environ.items() if k != "LOCUST_SKIP_MONKEY_PATCH"}
    cmd = [sys.executable, "-m", "locust", "-f", str(EXAMPLES / "locustfile.py"), "--headless"]
    cmd += ["-u", "5", "-r", "5", "-t", "3s", "--host", demo_proc.uri, "--json", "--only-summary"]
    out = hub.run_in_thread(
        lambda: subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env),
        timeout=65,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    stats = {(r["method"], r["name"]): r for r in json.loads(out.stdout)}
    assert stats[("GET", "/hello")]["num_requests"] > 10
    assert stats[("POST", "/echo")]["num_requests"] > 0
    assert sum(r["num_failures"] for r in stats.values()) == 0


@pytest.mark.parametrize("name", NEEDS_SERVER)
def test_without_a_server_one_line_and_a_non_zero_status(hub, name):
    r = run(hub, name, f"coap://127.0.0.1:{free_port()}")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        f"no CoAP server answers at coap://127.0.0.1:{r.args[-1].rsplit(':', 1)[1]}; "
        "start one with: greencoap demo-server"
    ]
