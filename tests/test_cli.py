"""The ``greencoap`` command line, called as a user calls it: a subprocess
against the demo server (on each hub), libcoap's server and the lossy relay,
with payloads through files and pipes, and every documented exit status."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .conftest import Proc, free_port, which_or_skip
from .lossy import LossyRelay

pytestmark = pytest.mark.timeout(120)


def cli(hub, *args, stdin: bytes | None = None, timeout: float = 30):
    """Run ``python -m greencoap ARGS`` (off the test's hub); bytes out."""
    env = dict(os.environ, GREENCOAP_HUB=hub.backend)
    cmd = [sys.executable, "-m", "greencoap", *args]
    return hub.run_in_thread(
        lambda: subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout, env=env),
        timeout=timeout + 5,
    )


def test_get_writes_the_payload_to_stdout_and_the_status_to_stderr(hub, demo_proc):
    r = cli(hub, "get", demo_proc.uri + "/hello")
    assert r.returncode == 0
    assert r.stdout == b"Hello, world!"  # exactly the payload: no status, no newline added
    assert r.stderr.decode().strip() == "2.05 Content (13 bytes, text/plain;charset=utf-8)"


def test_binary_round_trip_is_byte_exact_through_files_and_pipes(hub, demo_proc, tmp_path):
    body = bytes(range(256)) * 12  # 3,072 bytes, every byte value, newlines and NULs
    src = tmp_path / "fw.bin"
    src.write_bytes(body)
    r = cli(hub, "put", demo_proc.uri + "/store", "--payload", f"@{src}", "-t", "octet")
    assert r.returncode == 0, r.stderr
    r = cli(hub, "get", demo_proc.uri + "/store")
    assert r.stdout == body  # ``> fw.bin`` gets what the server holds
    out = tmp_path / "out.bin"
    assert cli(hub, "get", demo_proc.uri + "/store", "-o", str(out)).returncode == 0
    assert out.read_bytes() == body
    reversed_body = body[::-1]
    r = cli(hub, "put", demo_proc.uri + "/store", "--payload", "@-", stdin=reversed_body)
    assert r.returncode == 0, r.stderr
    assert cli(hub, "get", demo_proc.uri + "/store").stdout == reversed_body


def test_every_method_and_named_content_formats(hub, demo_proc):
    r = cli(hub, "post", demo_proc.uri + "/echo", "-p", '{"a": 1}', "-t", "application/json", "-v")
    assert r.returncode == 0 and r.stdout == b'{"a": 1}'
    assert "Content-Format: application/json" in r.stderr.decode()
    for method in ("fetch", "patch", "ipatch", "delete"):
        r = cli(hub, method, demo_proc.uri + "/echo", "-p", "x")
        assert r.returncode in (0, 1), r.stderr  # answered (2.xx, or 4.05 where not routed)
        assert r.stderr.decode()[:1] in "245"
    r = cli(hub, "get", demo_proc.uri + "/hello", "--accept", "text/plain;charset=utf-8", "-v")
    assert r.returncode == 0 and "Accept: text/plain;charset=utf-8" in r.stderr.decode()
    bad = cli(hub, "post", demo_proc.uri + "/echo", "-t", "application/nonsense")
    assert bad.returncode == 2 and b"unknown content format" in bad.stderr


def test_observe_prints_a_line_per_notification(hub, demo_proc):
    r = cli(hub, "observe", demo_proc.uri + "/counter?interval=0.05", "--count", "3")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.decode().splitlines()
    assert len(lines) == 3 and [int(x) for x in lines] == sorted(int(x) for x in lines)
    r = cli(hub, "observe", demo_proc.uri + "/counter?interval=0.05", "--count", "2", "--json")
    notes = [json.loads(line) for line in r.stdout.decode().splitlines()]
    assert len(notes) == 2 and all(n["code"] == "2.05" for n in notes)
    assert notes[1]["observe"] > notes[0]["observe"]
    r = cli(hub, "observe", demo_proc.uri + "/counter?interval=0.05", "--duration", "0.6")
    assert r.returncode == 0 and 3 <= len(r.stdout.splitlines()) <= 20


def test_discover_lists_links_as_a_table_or_json(hub, demo_proc):
    r = cli(hub, "discover", demo_proc.uri)
    assert r.returncode == 0, r.stderr
    table = r.stdout.decode().splitlines()
    assert table[0].split()[:2] == ["target", "rt"] and set(table[1]) <= {"-", " "}
    assert any(line.split()[0].endswith("/hello") for line in table[2:])
    r = cli(hub, "discover", demo_proc.uri, "--rt", "temperature", "--json")
    links = json.loads(r.stdout)
    assert len(links) == 3 and all(link["rt"] == "temperature" for link in links)


def test_ping_prints_round_trip_times(hub, demo_proc):
    r = cli(hub, "ping", demo_proc.uri, "--count", "2", "--interval", "0.1")
    lines = r.stdout.decode().splitlines()
    assert r.returncode == 0 and len(lines) == 2 and all(" ms" in x for x in lines)
    silent = free_port()
    r = cli(hub, "ping", f"coap://127.0.0.1:{silent}", "--timeout", "0.5")
    assert r.returncode == 3 and b"no answer" in r.stderr


def test_verbose_shows_the_block_wise_exchange(hub, demo_proc):
    r = cli(hub, "get", demo_proc.uri + "/large?size=3000", "-v", "--block-size", "1024")
    assert r.returncode == 0 and len(r.stdout) == 3000
    err = r.stderr.decode()
    assert "Block2: 0/1/1024" in err and "Block2: 2/0/1024" in err
    assert err.count("→ ") >= 3 and err.count("← ") >= 3 and "Uri-Path: large" in err
    vv = cli(hub, "get", demo_proc.uri + "/hello", "-vv").stderr.decode()
    assert "48 65 6c 6c 6f" in vv  # the datagram's bytes ("Hello")


def test_exit_statuses_and_errors_without_tracebacks(hub, demo_proc, tmp_path):
    cases = [
        (("get", demo_proc.uri + "/nope"), 1, "4.04 Not Found"),
        (("get", "coaps://127.0.0.1/x"), 2, "coaps:// needs --psk-identity and --psk-key"),
        (("get", "http://127.0.0.1/x"), 2, "http"),
        (("get", demo_proc.uri + "/hello", "--timeout", "-1"), 2, "--timeout"),
        (("post", demo_proc.uri + "/echo", "-p", "@/no/such/file"), 4, "cannot read"),
        (("get", demo_proc.uri + "/hello", "-o", str(tmp_path / "no/dir/x")), 4, "cannot write"),
        (("get", f"coap://127.0.0.1:{free_port()}/x", "--timeout", "0.5"), 3, "no response"),
        (("post", demo_proc.uri + "/echo", "-p", "a", "--payload-file", "b"), 2, "once"),
    ]
    for args, status, text in cases:
        r = cli(hub, *args)
        err = r.stderr.decode()
        assert r.returncode == status, (args, err)
        assert text in err and "Traceback" not in err, (args, err)


def test_a_closed_pipe_ends_quietly(hub, demo_proc):
    """``greencoap observe ... | head -1``: the reader goes away; no traceback."""
    env = dict(os.environ, GREENCOAP_HUB=hub.backend)
    cmd = [sys.executable, "-m", "greencoap", "observe", demo_proc.uri + "/counter?interval=0.02"]

    def run():
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        first = p.stdout.readline()
        p.stdout.close()  # head -1
        try:
            _, err = p.communicate(timeout=20)
        finally:
            if p.poll() is None:
                p.kill()
        return first, p.returncode, err

    first, rc, err = hub.run_in_thread(run, timeout=30)
    assert first.strip().isdigit() and rc == 0 and b"Traceback" not in err, err


def test_against_libcoap_and_like_coap_client(hub):
    server = which_or_skip("coap-server-notls")
    client = which_or_skip("coap-client-notls")
    port = free_port()
    proc = Proc([server, "-A", "127.0.0.1", "-p", str(port), "-d", "20"], port)
    try:
        uri = f"coap://127.0.0.1:{port}/thing"
        body = bytes(range(256)) * 4
        r = cli(hub, "put", uri, "--payload", "@-", "-t", "octet", stdin=body)
        assert r.returncode == 0, r.stderr
        ours = cli(hub, "get", uri)
        theirs = subprocess.run([client, "-m", "get", uri], capture_output=True, timeout=30)
        assert ours.stdout == body and theirs.stdout.rstrip(b"\n") == body.rstrip(b"\n")
        r = cli(hub, "discover", f"coap://127.0.0.1:{port}")
        assert r.returncode == 0 and b"/thing" in r.stdout
        base = f"coap://127.0.0.1:{port}"
        r = cli(hub, "observe", base + "/time", "--count", "2", timeout=40)  # a tick a second
        assert r.returncode == 0 and len(r.stdout.splitlines()) == 2, r.stderr
        r = cli(hub, "ping", base, "--count", "2", "--interval", "0.1")
        assert r.returncode == 0 and r.stdout.count(b" ms") == 2
        r = cli(hub, "post", uri, "-p", "x", "-v")
        assert r.returncode in (0, 1) and b"POST" in r.stderr  # answered, whatever its code
        r = cli(hub, "delete", uri)
        assert r.returncode == 0 and r.stderr.startswith(b"2.02 Deleted"), r.stderr
        assert cli(hub, "get", uri).returncode == 1  # 4.04 now
    finally:
        proc.stop()


def test_through_the_lossy_relay(hub, demo_proc):
    with LossyRelay(("127.0.0.1", demo_proc.port), loss=0.2, seed=3) as relay:
        r = cli(hub, "get", relay.uri + "/large?size=3000", "--timeout", "60", timeout=90)
        assert r.returncode == 0 and r.stdout == b"0123456789abcdef" * 187 + b"01234567"
        r = cli(hub, "observe", relay.uri + "/counter?interval=0.05", "--count", "3")
        assert r.returncode == 0 and len(r.stdout.splitlines()) == 3


def test_on_a_terminal_json_is_pretty_and_link_format_a_table(hub, demo_proc):
    """stdout a terminal (a pty): JSON indented, link-format as a table; --raw
    and a pipe get the bytes as they came."""
    import pty

    def on_tty(*args):
        master, slave = pty.openpty()
        env = dict(os.environ, GREENCOAP_HUB=hub.backend)
        try:
            p = subprocess.run(
                [sys.executable, "-m", "greencoap", *args],
                stdout=slave,
                stderr=subprocess.PIPE,
                timeout=30,
                env=env,
            )
            os.close(slave)
            slave = -1
            chunks = []
            while True:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the other side is closed and drained
                    break
                if not data:
                    break
                chunks.append(data)
            return p.returncode, b"".join(chunks).replace(b"\r\n", b"\n")
        finally:
            os.close(master)
            if slave >= 0:
                os.close(slave)

    rc, out = hub.run_in_thread(on_tty, "get", demo_proc.uri + "/sensors/1", timeout=40)
    assert rc == 0 and out.startswith(b"{\n  ") and json.loads(out)["id"] == "1", out
    rc, raw = hub.run_in_thread(on_tty, "get", demo_proc.uri + "/sensors/1", "--raw", timeout=40)
    assert rc == 0 and b"\n  " not in raw.rstrip(b"\n")
    rc, table = hub.run_in_thread(on_tty, "get", demo_proc.uri + "/.well-known/core", timeout=40)
    lines = table.decode().splitlines()
    assert rc == 0 and lines[0].startswith("target") and any("</" not in x for x in lines)
    assert any(line.split()[0] == "/hello" for line in lines[2:]), lines
    piped = cli(hub, "get", demo_proc.uri + "/sensors/1").stdout
    assert b"\n  " not in piped and json.loads(piped)["id"] == "1"
