"""Rate limiting and load shedding: the sans-I/O pieces with a fake clock, a
flooding peer held to its rate while another is served, and shedding under a
real overload from coapload (bench/coapload.c) with recovery afterwards."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

import greencoap
from greencoap import Client, Code, Router, Server, Type
from greencoap.message import Message
from greencoap.protocol.limits import NORMAL, SHEDDING, THROTTLED, LoadLevels, TokenBuckets

from .conftest import require_or_skip

ROOT = Path(__file__).resolve().parent.parent


def test_load_levels_with_hysteresis():
    lv = LoadLevels(throttle_at=10, shed_at=100)
    assert [lv.update(x) for x in (0, 9, 10, 50, 100, 60, 51, 50, 20, 6, 5, 0)] == [
        NORMAL,
        NORMAL,
        THROTTLED,
        THROTTLED,
        SHEDDING,
        SHEDDING,
        SHEDDING,
        THROTTLED,
        THROTTLED,
        THROTTLED,
        NORMAL,
        NORMAL,
    ]
    assert lv.changes == 4
    with pytest.raises(ValueError):
        LoadLevels(10, 5)


def test_token_bucket_rate_and_burst():
    tb = TokenBuckets(rate=10, burst=3)
    assert [tb.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert tb.allow("b", 0.0)  # another peer has its own bucket
    assert not tb.allow("a", 0.05) and tb.allow("a", 0.1)  # 10/s: one token per 0.1 s
    assert 9 <= sum(tb.allow("a", 0.1 + i * 0.01) for i in range(100)) <= 10  # ~1 s at 10/s


def test_token_buckets_are_bounded():
    tb = TokenBuckets(rate=1, burst=1, max_peers=10)
    for i in range(100):
        tb.allow(i, 0.0)
    assert len(tb) == 10


def flood(port, n, mid0):
    """n CON GETs of /hello from one socket; return the response codes."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1.0)
        for i in range(n):
            m = Message(Type.CON, Code.GET, mid0 + i, i.to_bytes(2, "big"), [(11, b"hello")])
            s.sendto(m.encode(), ("127.0.0.1", port))
        codes = []
        try:
            while len(codes) < n:
                codes.append(Message.decode(s.recvfrom(2048)[0]).code)
        except TimeoutError:
            pass
        return codes


def test_flooding_peer_is_held_to_its_rate_under_load(hub):
    from greencoap.demo import build_router

    srv = Server(
        build_router(), host="127.0.0.1", port=0, throttle_at=1, shed_at=10_000, rate=20, burst=10
    ).start()
    try:
        with Client(timeout=10) as c:
            busy = [
                greencoap.spawn(c.get, f"coap://127.0.0.1:{srv.port}/slow?ms=2000")
                for _ in range(3)
            ]
            greencoap.sleep(0.2)  # three handlers running: the server is under load
            codes = hub.run_in_thread(flood, srv.port, 100, 1000, timeout=30)
            assert codes.count(Code.CONTENT) <= 20  # burst 10 plus a little refill
            assert codes.count(Code.TOO_MANY_REQUESTS) >= 75
            other = hub.run_in_thread(flood, srv.port, 5, 5000, timeout=30)
            assert other == [Code.CONTENT] * 5  # another peer is served normally
            greencoap.joinall(busy, timeout=10)
        assert srv.stats["throttled"] >= 75 and srv.stats["load_level_changes"] >= 1
        # idle again: a lone fast client is never limited
        codes = hub.run_in_thread(flood, srv.port, 100, 9000, timeout=30)
        assert codes == [Code.CONTENT] * 100
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def coapload(tmp_path_factory):
    """The project's own load generator, compiled from bench/coapload.c into a tmp dir."""
    require_or_skip(shutil.which("cc") is not None, "a C compiler (cc)")
    built = tmp_path_factory.mktemp("coapload") / "coapload"
    src = ROOT / "bench" / "coapload.c"
    cmd = ["cc", "-O2", "-Wall", "-Wextra", "-o", str(built), str(src)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    return str(built)


def test_shedding_engages_under_overload_and_recovers(hub, coapload):
    router = Router()

    @router.get("/sleepy")
    def sleepy(request):
        greencoap.sleep(0.2)
        return "zz"

    srv = Server(router, host="127.0.0.1", port=0, throttle_at=16, shed_at=64).start()
    try:
        p = subprocess.Popen(
            [
                coapload,
                "--port",
                str(srv.port),
                "--path",
                "sleepy",
                "--type",
                "con",
                "--window",
                "64",
                "--sockets",
                "4",
                "--duration",
                "2",
                "--warmup",
                "0",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ},
        )
        out = hub.run_in_thread(lambda: p.communicate(timeout=30)[0], timeout=40)
        result = re.search(r"RESULT .*", out).group(0)
        errors = int(re.search(r"errors=(\d+)", result).group(1))
        assert errors > 0, result  # 5.03 (and 4.29) answers counted as errors
        assert srv.stats["shed"] > 0
        greencoap.sleep(0.5)  # the overload is over
        with Client(timeout=5) as c:
            r = c.get(f"coap://127.0.0.1:{srv.port}/sleepy")
            assert r.code == Code.CONTENT
        assert srv.load.level == NORMAL
    finally:
        srv.stop()
