"""The project's own C benchmark tools: bench/coapload.c driving bench/coapecho.c.

Both are compiled with ``cc`` into a tmp dir (skipped only when ``cc`` is
missing); every process is stopped by its PID in a ``finally``.
"""

from __future__ import annotations

import random
import re
import selectors
import shutil
import socket
import subprocess
import threading
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
    r["separate"] = int(kv["separate"])
    r["ports"] = int(kv["ports"])
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
        assert r["ports"] == 1
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


# -- --port-count: a fleet of devices, one port each ----------------------------------------
def bind_consecutive(n: int, host: str = "127.0.0.1") -> tuple[int, list[socket.socket]]:
    """n UDP sockets bound to n consecutive free ports (below the ephemeral range, where
    free_port() and the kernel's own picks live); returns the first port and the sockets."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            ephemeral_lo = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_lo = 32768
    hi = ephemeral_lo - n if ephemeral_lo - n > 11000 else 65535 - n
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(10000, hi)
        socks: list[socket.socket] = []
        try:
            for k in range(n):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind((host, base + k))
        except OSError:
            for s in socks:
                s.close()
            continue
        return base, socks
    raise RuntimeError(f"no block of {n} consecutive free UDP ports")


def start_echo_fleet(tools, n: int) -> tuple[int, list[subprocess.Popen]]:
    """n coapecho responders on n consecutive ports of 127.0.0.1."""
    for _ in range(3):
        base, socks = bind_consecutive(n)
        for s in socks:
            s.close()
        echoes: list[subprocess.Popen] = []
        try:
            for k in range(n):
                echoes.append(start_echo(tools, "127.0.0.1", base + k))
        except RuntimeError:  # a port was taken in the meantime: another block
            for e in echoes:
                stop(e)
            continue
        except BaseException:
            for e in echoes:
                stop(e)
            raise
        return base, echoes
    raise RuntimeError(f"could not start {n} coapecho on consecutive ports")


@pytest.mark.parametrize("type_", ["con", "non"])
def test_coapload_port_count_spreads_evenly(tools, type_):
    """--port-count 8: every one of 8 responders answers a near-equal share of the
    requests, with socket and window counts that are not multiples of 8."""
    n = 8
    base, echoes = start_echo_fleet(tools, n)
    try:
        rc, r = load(
            tools, base, "--port-count", str(n), "--type", type_, "--sockets", "3", "--window", "5"
        )
    finally:
        for e in echoes:
            stop(e)
    outs = [e.communicate()[0] for e in echoes]
    counts = [int(re.search(r"answered (\d+) requests", out).group(1)) for out in outs]
    assert rc == 0, r
    assert r["ports"] == n and r["type"] == type_ and r["sockets"] == 3 and r["window"] == 5
    assert r["rps"] > 0 and r["lost"] == 0 and r["errors"] == 0 and r["unmatched"] == 0, r
    total = sum(counts)
    assert total >= r["sent"], (counts, r)  # warm-up requests are answered too
    for c in counts:
        assert abs(c - total / n) <= 0.2 * total / n, counts


@pytest.mark.parametrize("shifted", [False, True], ids=["same-port", "other-port"])
def test_coapload_port_count_separate_responses(tools, shifted):
    """Separate CON responses over 3 ports: coapload ACKs each to the address it came
    from.  shifted: the response comes from the next device's port (an unexpected
    address), and still matches by token."""
    n, window, sockets = 3, 4, 2
    base, socks = bind_consecutive(n)
    answered = [0] * n  # requests each port received (and answered separately)
    acked = [0] * n  # ACKs each port received for its separate responses
    pending: list[set[int]] = [set() for _ in range(n)]
    done = threading.Event()

    def serve() -> None:
        sel = selectors.DefaultSelector()
        for k, s in enumerate(socks):
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, k)
        mid = 1000
        while not done.is_set():
            for key, _ in sel.select(0.05):
                k = key.data
                while True:
                    try:
                        d, peer = socks[k].recvfrom(2048)
                    except BlockingIOError:
                        break
                    if len(d) < 4:
                        continue
                    type_, code, m = d[0] >> 4 & 3, d[1], int.from_bytes(d[2:4], "big")
                    if type_ == 2 and code == 0:  # the ACK of one of our responses
                        if m in pending[k]:
                            pending[k].discard(m)
                            acked[k] += 1
                        continue
                    if type_ != 0 or code == 0 or code >> 5 != 0:
                        continue  # only CON requests
                    tkl = d[0] & 15
                    answered[k] += 1
                    socks[k].sendto(bytes([0x60, 0, d[2], d[3]]), peer)  # empty ACK
                    src = (k + 1) % n if shifted else k
                    mid = (mid + 1) & 0xFFFF
                    head = bytes([0x40 | tkl, 0x45]) + mid.to_bytes(2, "big")
                    pending[src].add(mid)
                    socks[src].sendto(head + d[4 : 4 + tkl] + b"\xffhi", peer)
        sel.close()

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    try:
        rc, r = load(
            tools,
            base,
            *("--port-count", str(n), "--type", "con", "--rate", "600"),
            *("--window", str(window), "--sockets", str(sockets)),
        )
    finally:
        done.set()
        th.join(5)
        for s in socks:
            s.close()
    assert rc == 0, r
    assert r["ports"] == n and r["rps"] > 0, r
    assert r["lost"] == 0 and r["errors"] == 0 and r["unmatched"] == 0, r
    assert r["separate"] > 0.9 * r["sent"], r
    total = sum(answered)
    for k in range(n):
        assert abs(answered[k] - total / n) <= 0.2 * total / n, answered
        # every separate response is ACKed to the port that sent it (bar those in flight at the end)
        assert acked[k] >= answered[k] - window * sockets and acked[k] > 0, (answered, acked)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--port-count", "0"], "--port-count"),
        (["--port-count", "65536"], "--port-count"),
        (["--port", "65530", "--port-count", "7"], "past 65535"),
        (["--port-count", "7", "--port", "65530"], "past 65535"),
    ],
)
def test_coapload_port_count_usage_errors(tools, args, message):
    p = subprocess.run([tools["coapload"], *args], capture_output=True, text=True, timeout=5)
    assert p.returncode == 2 and message in p.stderr and "usage:" in p.stderr, p.stderr
    assert "RESULT" not in p.stdout


def test_coapecho_many_sockets(tools):
    """``coapecho -n 200``: one process answers on 200 consecutive ports (the C
    reference for a device fleet) and coapload spread over them loses nothing."""
    n = 200
    for _ in range(3):
        base, socks = bind_consecutive(n)
        for s in socks:
            s.close()
        cmd = [tools["coapecho"], "-a", "127.0.0.1", "-p", str(base), "-n", str(n), "-t", "12"]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            wait_udp_ready(base + n - 1, "127.0.0.1", timeout=5)
            break
        except RuntimeError:  # a port was taken meanwhile (the process failed to bind)
            stop(p)
    else:
        raise RuntimeError("could not start coapecho -n on consecutive ports")
    try:
        rc, r = load(tools, base, "--port-count", str(n), "--sockets", "2", "--window", "16")
    finally:
        stop(p)
    out = p.communicate()[0]
    assert f"ports {base}-{base + n - 1}" in out, out
    assert rc == 0 and r["ports"] == n and r["lost"] == 0 and r["errors"] == 0, r
    answered = int(re.search(r"answered (\d+) requests", out).group(1))
    assert answered >= r["sent"] > n, (answered, r)
