"""bench/dtlsload.c, the project's DTLS load generator, against the demo server's coaps://.

It is compiled with ``-Werror`` into a tmp dir (it needs OpenSSL's headers:
skipped without them, a failure under GREENCOAP_REQUIRE_PEERS=1 as CI sets
it); the demo server runs as a subprocess on the test's hub backend and is
stopped by its PID.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Proc, demo_command, free_port, require_or_skip

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dtlsload(tmp_path_factory) -> str:
    have = shutil.which("cc") is not None and Path("/usr/include/openssl/ssl.h").exists()
    require_or_skip(have, "a C compiler and OpenSSL's headers (libssl-dev)")
    exe = tmp_path_factory.mktemp("tools") / "dtlsload"
    src = ROOT / "bench" / "dtlsload.c"
    cmd = ["cc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(exe), str(src)]
    subprocess.run([*cmd, "-lssl", "-lcrypto"], check=True, capture_output=True, timeout=120)
    return str(exe)


@pytest.fixture
def coaps_demo(hub):
    """The demo server with coaps:// on the port after its coap:// one (PSK bench:benchkey)."""
    port = free_port(count=2)
    env = dict(os.environ, GREENCOAP_HUB=hub.backend)
    extra = ("--dtls-port", str(port + 1), "--psk", "bench:benchkey")
    p = Proc(demo_command(port, *extra), port, env=env)
    yield p
    p.stop()


def run(exe: str, port: int, *args: str) -> tuple[int, str, str]:
    cmd = [exe, "--port", str(port), "--duration", "1", "--warmup", "0.2", *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    return p.returncode, p.stdout, p.stderr


def result(out: str) -> dict[str, str]:
    last = out.strip().splitlines()[-1]
    assert last.startswith("RESULT "), out
    return dict(f.split("=", 1) for f in last.split()[1:])


@pytest.mark.parametrize("type_", ["con", "non"])
def test_dtlsload_loads_the_demo_over_dtls(dtlsload, coaps_demo, type_):
    rc, out, err = run(
        dtlsload, coaps_demo.port + 1, "--type", type_, "--window", "8", "--sessions", "2"
    )
    assert rc == 0, err
    r = result(out)
    assert r["type"] == type_ and r["window"] == "8" and r["sessions"] == "2"
    assert int(r["rps"]) > 100, r
    assert int(r["lost"]) == 0 and int(r["errors"]) == 0 and int(r["unmatched"]) == 0, r
    assert int(r["p50_us"]) <= int(r["p99_us"]) <= int(r["p999_us"])
    said = coaps_demo.stop()
    # the server saw two sessions made and (close_notify at the end) closed
    assert "'dtls_sessions_created': 2" in said and "'dtls_sessions_closed': 2" in said, said


def test_dtlsload_a_wrong_key_fails_clearly(dtlsload, coaps_demo):
    rc, out, err = run(dtlsload, coaps_demo.port + 1, "--key", "not the key")
    assert rc == 2
    assert "handshake failed" in err
    assert "RESULT" not in out


def test_dtlsload_usage_errors(dtlsload):
    for args, message in (
        (["--window", "0"], "--window wants an integer"),
        (["--type", "get"], "usage"),
        (["--bogus", "1"], "unknown option"),
        (["--duration"], "needs a value"),
    ):
        p = subprocess.run([dtlsload, *args], capture_output=True, text=True, timeout=10)
        assert p.returncode == 2 and message in p.stderr, (args, p.stderr)
