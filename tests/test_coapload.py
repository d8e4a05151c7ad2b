"""The project's own C benchmark tools: bench/coapload.c driving bench/coapecho.c.

Both are compiled with ``cc`` into a tmp dir (skipped only when ``cc`` is
missing); every process is stopped by its PID in a ``finally``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import free_port, require_or_skip, wait_udp_ready

ROOT = Path(__file__).resolve().parent.parent

INT_FIELDS = (
    "window",
    "sockets",
    "rps",
    "p50_us",
    "p99_us",
    "p999_us",
    "lost",
    "errors",
    "unmatched",
)
FIELDS = ("type", *INT_FIELDS, "client_cpu")


@pytest.fixture(scope="module")
def tools(tmp_path_factory) -> dict[str, str]:
    require_or_skip(shutil.which("cc") is not None, "a C compiler (cc)")
    out = tmp_path_factory.mktemp("tools")
    built = {}
    for name in ("coapload", "coapecho"):
        exe = out / name
        src = ROOT / "bench" / f"{name}.c"
        cmd = ["cc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(exe), str(src)]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
        built[name] = str(exe)
    return built


def stop(p: subprocess.Popen) -> None:
    """Stop one process we started, by its PID (SIGTERM, then SIGKILL)."""
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(3)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(3)


def start_echo(tools, host: str, port: int) -> subprocess.Popen:
    cmd = [tools["coapecho"], "-a", host, "-p", str(port), "-b", "11", "-t", "12"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_udp_ready(port, host, timeout=5)
    except BaseException:
        stop(p)
        raise
    return p


def parse(out: str) -> dict:
    last = out.strip().splitlines()[-1]
    assert last.startswith("RESULT "), out
    kv = dict(f.split("=", 1) for f in last.split()[1:])
    assert tuple(kv)[: len(FIELDS)] == FIELDS, last  # the fixed fields, in this order
    r = {k: int(kv[k]) for k in INT_FIELDS}
    r["type"] = kv["type"]
    r["client_cpu"] = float(kv["client_cpu"])
    r["sent"] = int(kv["sent"])
    return r


def load(tools, port: int, *args: str, host: str = "127.0.0.1") -> tuple[int, dict]:
    cmd = [tools["coapload"], "--host", host, "--port", str(port), "--path", "hello"]
    cmd += ["--duration", "1", "--warmup", "0.2", *args]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=10)
    finally:
        stop(p)
    return p.returncode, parse(out)


@pytest.mark.parametrize("type_", ["con", "non"])
def test_coapload_against_coapecho(tools, type_):
    port = free_port()
    echo = start_echo(tools, "127.0.0.1", port)
    try:
        rc, r = load(tools, port, "--type", type_, "--window", "16", "--sockets", "2")
        assert rc == 0, r
        assert r["type"] == type_ and r["window"] == 16 and r["sockets"] == 2
        assert r["rps"] > 0 and r["p50_us"] > 0 and r["p50_us"] <= r["p99_us"] <= r["p999_us"]
        assert r["lost"] == 0 and r["errors"] == 0, r
    finally:
        stop(echo)
    out = echo.communicate()[0]
    assert "answered" in out


def test_coapload_rate_limit(tools):
    port = free_port()
    echo = start_echo(tools, "127.0.0.1", port)
    try:
        rc, r = load(tools, port, "--rate", "500", "--query", "a=1", "--query", "b=2")
        assert rc == 0 and r["lost"] == 0 and r["errors"] == 0, r
        assert 300 <= r["rps"] <= 600, r
    finally:
        stop(echo)


def test_coapload_ipv6(tools):
    try:
        port = free_port(socket.AF_INET6, "::1")
    except OSError:
        pytest.skip("no IPv6 loopback")
    echo = start_echo(tools, "::1", port)
    try:
        rc, r = load(tools, port, "--type", "con", host="::1")
        assert rc == 0 and r["rps"] > 0 and r["lost"] == 0 and r["errors"] == 0, r
    finally:
        stop(echo)


def test_coapload_nothing_listening(tools):
    port = free_port()  # closed again: nobody answers there
    rc, r = load(tools, port, "--timeout-ms", "200")
    assert r["rps"] == 0
    assert r["lost"] > 0 or rc == 1, r
    assert rc == 1


def test_coapload_usage_error(tools):
    p = subprocess.run(
        [tools["coapload"], "--type", "tcp"], capture_output=True, text=True, timeout=5
    )
    assert p.returncode == 2 and "--type" in p.stderr
