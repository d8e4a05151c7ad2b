"""coaps:// against libcoap: its OpenSSL and GnuTLS clients against the
greencoap demo server, and greencoap's client against coap-server-openssl.

The demo server runs as a subprocess (``--dtls-port --psk``) on the same hub
backend as the test; libcoap's binaries come from ``libcoap3-bin``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from greencoap import Client, HandshakeError
from tests.conftest import Proc, demo_command, free_port, which_or_skip

IDENTITY, KEY = "interop", "s3cr3t-key"
CLIENTS = ("coap-client-openssl", "coap-client-gnutls")


@pytest.fixture
def secure_demo(hub):
    """The demo server with DTLS on port+1 (plain port for readiness)."""
    port = free_port()
    dport = free_port()
    env = dict(os.environ, GREENCOAP_HUB=hub.backend)
    p = Proc(
        demo_command(
            port, "--dtls-port", str(dport), "--psk", f"{IDENTITY}:{KEY}", "--psk-hint", "greencoap"
        ),
        port,
        env=env,
    )
    p.suri = f"coaps://127.0.0.1:{dport}"
    yield p
    p.stop()


def _libcoap(binary: str, *args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    path = which_or_skip(binary)
    return subprocess.run([path, "-B", "8", *args], capture_output=True, timeout=timeout)


@pytest.mark.parametrize("binary", CLIENTS)
def test_libcoap_dtls_client_gets(secure_demo, binary):
    out = _libcoap(binary, "-k", KEY, "-u", IDENTITY, secure_demo.suri + "/hello")
    assert out.stdout.decode().strip() == "Hello, world!", out
    out = _libcoap(binary, "-k", KEY, "-u", IDENTITY, secure_demo.suri + "/whoami")
    assert out.stdout.decode().strip() == IDENTITY, out


@pytest.mark.parametrize("binary", CLIENTS)
def test_libcoap_dtls_client_blockwise_put_and_get(secure_demo, binary, tmp_path):
    body = bytes((i * 7 + 3) % 251 for i in range(3000))
    src = tmp_path / "body.bin"
    src.write_bytes(body)
    out = _libcoap(
        binary,
        "-k",
        KEY,
        "-u",
        IDENTITY,
        "-m",
        "put",
        "-b",
        "64",
        "-f",
        str(src),
        secure_demo.suri + "/store",
    )
    assert out.returncode == 0, out
    dst = tmp_path / "back.bin"
    out = _libcoap(
        binary, "-k", KEY, "-u", IDENTITY, "-b", "64", "-o", str(dst), secure_demo.suri + "/store"
    )
    assert out.returncode == 0, out
    assert dst.read_bytes() == body


@pytest.mark.parametrize("binary", CLIENTS)
def test_libcoap_dtls_client_observes(secure_demo, binary):
    out = _libcoap(
        binary, "-k", KEY, "-u", IDENTITY, "-s", "3", secure_demo.suri + "/counter?interval=0.4"
    )
    # libcoap prints each notification's payload as it comes, without separators
    assert out.stdout.decode().startswith("01234"), out


@pytest.mark.parametrize("binary", CLIENTS)
def test_libcoap_dtls_client_with_a_wrong_key_gets_nothing(secure_demo, binary):
    t0 = time.monotonic()
    out = _libcoap(binary, "-k", "wrong-key", "-u", IDENTITY, secure_demo.suri + "/hello")
    assert time.monotonic() - t0 < 9
    assert b"Hello" not in out.stdout, out
    stats = secure_demo.stop()
    assert "dtls_handshakes_failed" in stats, stats
    assert "'requests'" not in stats or "'requests': 0" in stats


@pytest.fixture
def libcoap_dtls_server():
    """coap-server-openssl with a PSK and a hint; DTLS listens on port + 1."""
    binary = which_or_skip("coap-server-openssl")
    port = free_port(count=2)
    p = Proc([binary, "-A", "127.0.0.1", "-p", str(port), "-k", KEY, "-h", "libcoap-hint"], port)
    p.suri = f"coaps://127.0.0.1:{port + 1}"
    yield p
    p.stop()


def test_greencoap_client_against_libcoap_dtls_server(any_hub, libcoap_dtls_server):
    with Client(timeout=10, psk=(IDENTITY, KEY)) as c:
        r = c.get(libcoap_dtls_server.suri + "/")
        assert r.code == 0x45, r
        assert b"libcoap" in r.payload
        r = c.get(libcoap_dtls_server.suri + "/time")
        assert r.code == 0x45, r
        links = c.discover(libcoap_dtls_server.suri)
        assert any(link.target.endswith("/time") for link in links)
        assert c.stats["dtls_sessions"] == 1


def test_greencoap_client_wrong_key_against_libcoap(any_hub, libcoap_dtls_server):
    t0 = time.monotonic()
    with Client(timeout=60, psk=(IDENTITY, "wrong-key")) as c:
        with pytest.raises(HandshakeError, match="wrong PSK"):
            c.get(libcoap_dtls_server.suri + "/")
    # OpenSSL drops a Finished that fails authentication without an alert
    # (RFC 6347 §4.1.2.7) and repeats its flight: the client gives up after the
    # third repeat (1 + 2 + 4 s), far sooner than the request's 60 s
    assert time.monotonic() - t0 < 10


def test_cli_over_dtls(secure_demo):
    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "greencoap", *args], capture_output=True, text=True, timeout=30
        )

    r = cli("get", secure_demo.suri + "/whoami", "--psk-identity", IDENTITY, "--psk-key", KEY)
    assert r.returncode == 0 and r.stdout == IDENTITY and r.stderr.startswith("2.05 Content"), r
    r = cli("get", secure_demo.suri + "/whoami", "--psk-identity", IDENTITY, "--psk-key", "bad")
    assert r.returncode == 3 and "decrypt_error" in r.stderr, r
    r = cli("get", secure_demo.suri + "/whoami")
    assert r.returncode == 2 and "coaps:// needs --psk-identity and --psk-key" in r.stderr, r
    r = cli("get", secure_demo.suri + "/whoami", "--psk-key", KEY)
    assert r.returncode == 2, r
