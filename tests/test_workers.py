"""Server(workers=N): N processes share the port (SO_REUSEPORT); SIGTERM stops
them all gracefully (running handlers finish, exit status 0)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import greencoap
from greencoap import Client

from .conftest import free_port, wait_udp_ready

SCRIPT = textwrap.dedent("""
    import os, sys
    from greencoap import Router, Server, sleep

    router = Router()

    @router.get("/pid")
    def pid(request):
        return str(os.getpid())

    @router.get("/slow")
    def slow(request):
        sleep(1.0)
        return "finished"

    Server(router, host="127.0.0.1", port=int(sys.argv[1]), workers=2).serve_forever()
""")


def start(tmp_path, hub):
    script = tmp_path / "workers.py"
    script.write_text(SCRIPT)
    port = free_port()
    env = dict(os.environ, GREENCOAP_HUB=hub.backend)
    p = subprocess.Popen(
        [sys.executable, str(script), str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    wait_udp_ready(port)
    return p, port


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
    try:
        return p.wait(timeout=15), p.stdout.read()
    except subprocess.TimeoutExpired:
        p.kill()
        raise


def test_two_workers_both_serve(hub, tmp_path):
    p, port = start(tmp_path, hub)
    try:
        pids = set()
        # many clients (source ports): the kernel spreads them over both
        # workers -- once both are bound: the first to bind answers the
        # readiness probe, the second may still be importing on a loaded
        # machine, so ask for up to 20 s rather than a fixed number of times
        deadline = time.monotonic() + 20
        while len(pids) < 2 and time.monotonic() < deadline:
            with Client(timeout=5) as c:
                pids.add(c.get(f"coap://127.0.0.1:{port}/pid").text)
            if len(pids) < 2:
                greencoap.sleep(0.02)
        assert len(pids) == 2 and str(p.pid) not in pids
    finally:
        code, out = stop(p)
    assert code == 0, out


def test_sigterm_lets_running_handlers_finish(hub, tmp_path):
    p, port = start(tmp_path, hub)
    with Client(timeout=10) as c:
        gs = [greencoap.spawn(c.get, f"coap://127.0.0.1:{port}/slow") for _ in range(8)]
        greencoap.sleep(0.3)  # the handlers are running now
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        greencoap.joinall(gs, timeout=10)
        assert [g.value.text for g in gs] == ["finished"] * 8
    code, out = stop(p)
    assert code == 0, out
    assert time.monotonic() - t0 < 6
