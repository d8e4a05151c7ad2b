"""Backend selection: GREENCOAP_HUB, the automatic fallback to epoll when
io_uring is forbidden (a seccomp filter, as in containers), and
GREENCOAP_REQUIRE_URING."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
PROBE = "import greencoap; print(greencoap.get_hub().backend)"


@pytest.fixture(scope="module")
def noring(tmp_path_factory):
    """tests/helpers/noring.c compiled: runs a command with io_uring_setup → EPERM."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.fail("a C compiler is needed to build the seccomp helper")
    out = tmp_path_factory.mktemp("noring") / "noring"
    subprocess.run([cc, "-O2", "-o", str(out), str(HERE / "helpers" / "noring.c")], check=True)
    return str(out)


def clean_env(**env):
    """os.environ without GREENCOAP_* (CI sets GREENCOAP_REQUIRE_URING), plus ``env``."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("GREENCOAP_")}
    full.update(env)
    return full


def run(args, **env):
    return subprocess.run(args, capture_output=True, text=True, timeout=60, env=clean_env(**env))


def test_env_var_selects_backend():
    for name in ("epoll", "gevent"):
        r = run([sys.executable, "-c", PROBE], GREENCOAP_HUB=name)
        assert r.returncode == 0 and r.stdout.strip() == name, r.stderr
    r = run([sys.executable, "-c", PROBE], GREENCOAP_HUB="kqueue")
    assert r.returncode != 0 and "unknown greencoap hub backend" in r.stderr


def test_default_is_uring_where_it_works():
    from .conftest import require_or_skip, uring_usable

    reason = uring_usable()
    require_or_skip(reason is None, f"io_uring ({reason})", "GREENCOAP_REQUIRE_URING")
    r = run([sys.executable, "-c", PROBE])
    assert r.stdout.strip() == "uring" and r.stderr == ""


def test_forbidden_io_uring_falls_back_to_epoll_with_one_warning(noring):
    r = run([noring, sys.executable, "-c", PROBE + "; greencoap.sleep(0.01); print('ok')"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["epoll", "ok"]
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "io_uring" in lines[0] and "EPERM" in lines[0], r.stderr


def test_forbidden_io_uring_is_an_error_when_required(noring):
    r = run([noring, sys.executable, "-c", PROBE], GREENCOAP_REQUIRE_URING="1")
    assert r.returncode != 0 and "io_uring backend unavailable" in r.stderr
    r = run([noring, sys.executable, "-c", PROBE], GREENCOAP_HUB="uring")
    assert r.returncode != 0 and "EPERM" in r.stderr


def test_demo_server_serves_on_the_fallback(noring):
    from .conftest import demo_command, free_port, wait_udp_ready

    port = free_port()
    p = subprocess.Popen(
        [noring, *demo_command(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=clean_env(),
    )
    try:
        wait_udp_ready(port)
    finally:
        p.terminate()
        out, _ = p.communicate(timeout=10)
    assert "(epoll hub)" in out


def test_every_backend_and_channel_meets_the_protocols(any_hub):
    """uring, epoll and gevent backends, their channels and the DTLS channel
    all provide what backends.IoBackend / DatagramChannel promise."""
    from greencoap import Client, Server
    from greencoap.backends import DatagramChannel, IoBackend, PollingBackend
    from greencoap.demo import build_router

    assert isinstance(any_hub.io, IoBackend)
    assert isinstance(any_hub.io, PollingBackend) == (any_hub.backend != "gevent")
    srv = Server(build_router(), host="127.0.0.1", port=0).start()
    try:
        assert isinstance(srv.endpoint.channel, DatagramChannel)
        with Client(timeout=3) as c:
            c.get(f"coap://127.0.0.1:{srv.port}/hello")
            assert isinstance(c.endpoint.channel, DatagramChannel)
    finally:
        srv.stop()
    dsrv = Server(
        build_router(), host="127.0.0.1", port=0, dtls_port=0, psk={b"id": b"secret"}
    ).start()
    try:
        secure = dsrv.secure_endpoint.channel
        assert isinstance(secure, DatagramChannel) and type(secure).__name__ == "DtlsChannel"
    finally:
        dsrv.stop()
