"""greencoap.compat.coapthon: CoAPthon3's API on greencoap.

* the message model (attributes, setters, types) and the serializer, also
  against CoAPthon3 1.0.2's own serializer on the same messages;
* CoAPthon3's own example server (``coapserver.py`` + ``exampleresources.py``
  from its wheel, unmodified but for the import lines) driven by libcoap's
  client: GET, PUT, POST creating a child, DELETE, Block2 with ``-b 64``, the
  separate resource, ``.well-known/core``, observe;
* a blocking legacy resource (``/long`` sleeps 10 s) does not hold up others;
* a HelperClient script written against CoAPthon3's documented API, against
  the demo server and libcoap's server, from many threads, without leaks.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from greencoap.compat import coapthon as compat
from greencoap.compat.coapthon import defines
from greencoap.compat.coapthon.client.helperclient import HelperClient
from greencoap.compat.coapthon.messages.option import Option
from greencoap.compat.coapthon.messages.request import Request
from greencoap.compat.coapthon.messages.response import Response
from greencoap.compat.coapthon.resources.resource import Resource
from greencoap.compat.coapthon.serializer import Serializer

from .conftest import Proc, free_port, require_or_skip, wait_udp_ready, which_or_skip

pytestmark = pytest.mark.timeout(120)

VENV_BIN = Path(sys.executable).parent


# -- the message model -----------------------------------------------------------------


def test_request_attributes_and_setters():
    r = Request()
    r.type = defines.Types["CON"]
    r.mid = 4660
    r.token = "ab"  # text becomes bytes, as CoAPthon3
    r.code = defines.Codes.PUT.number
    r.uri_path = "/sensors/temp?unit=c&x=1"
    r.payload = (defines.Content_types["application/json"], '{"v": 1}')
    r.accept = defines.Content_types["text/plain"]
    r.if_match = [b"e1", b"e2"]
    r.add_if_none_match()
    r.observe = 0
    r.block1 = (2, 1, 64)
    r.etag = "tag"
    assert r.token == b"ab" and r.mid == 4660 and r.code == 3
    assert r.uri_path == "sensors/temp" and r.uri_query == "unit=c&x=1"
    assert r.content_type == 50 and r.payload == '{"v": 1}'
    assert r.accept == 0 and r.if_match == [b"e1", b"e2"] and r.if_none_match
    assert r.observe == 0 and r.block1 == (2, 1, 64) and r.etag == [b"tag"]
    with pytest.raises(AttributeError):
        r.type = 7
    with pytest.raises(AttributeError):
        r.code = 99
    with pytest.raises(TypeError):  # Observe is not repeatable
        o = Option()
        o.number = defines.OptionRegistry.OBSERVE.number
        o.value = 1
        r.add_option(o)
    assert "Uri-Path: sensors" in r.pretty_print() and "PUT" in str(r)


def test_response_attributes():
    r = Response()
    r.code = defines.Codes.CREATED.number
    r.location_path = "things/7"
    r.location_query = "a=1&b=2"
    r.max_age = 30
    assert r.location_path == "things/7" and r.location_query == ["a=1", "b=2"]
    assert r.max_age == 30 and Response().max_age == 60  # the default, as RFC 7252
    a, b = Option(), Option()
    a.number = b.number = 11
    a.value = b.value = "x"
    assert a == b


def test_codes_as_the_rfc_says():
    assert defines.Codes.LIST[66].name == "DELETED"  # CoAPthon3 maps 66 to the DELETE method
    assert defines.Codes.CONTENT.number == 69 and defines.Codes.LIST[69] is defines.Codes.CONTENT
    assert defines.Codes.LIST[129].name == "UNAUTHORIZED"


def test_serializer_round_trip_and_errors():
    r = Request()
    r.type, r.mid, r.token = 0, 7, b"tk"
    r.code = defines.Codes.GET.number
    r.uri_path = "a/b?q=1"
    r.observe = 0
    data = Serializer.serialize(r)
    back = Serializer.deserialize(data, ("127.0.0.1", 5683))
    assert isinstance(back, Request) and back.uri_path == "a/b" and back.uri_query == "q=1"
    assert back.observe == 0 and back.token == b"tk" and back.source == ("127.0.0.1", 5683)
    assert Serializer.deserialize(b"\x40", ("h", 1)) == defines.Codes.BAD_REQUEST.number
    # an unknown critical option: CoAPthon3 gives BAD_OPTION instead of a message
    assert Serializer.deserialize(b"\x40\x01\x00\x01\xd1\x00\x00", ("h", 1)) == 130


def test_serializer_agrees_with_coapthon3():
    """The same Request serialized by CoAPthon3 1.0.2 and by the compat
    package gives the same bytes, and each parses the other's."""
    require_or_skip(shutil.which(str(VENV_BIN / "coapserver.py")) is not None, "CoAPthon3 1.0.2")
    code = """
import sys, binascii
from coapthon.messages.request import Request
from coapthon.serializer import Serializer
r = Request(); r.type = 0; r.mid = 7; r.token = b"tk"; r.code = 3
r.uri_path = "a/b?q=1"; r.payload = "hello"; r.content_type = 0; r.etag = b"e"
print(binascii.hexlify(Serializer().serialize(r)).decode())
"""
    theirs = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    r = Request()
    r.type, r.mid, r.token, r.code = 0, 7, b"tk", 3
    r.uri_path = "a/b?q=1"
    r.payload = "hello"
    r.content_type = 0
    r.etag = b"e"
    ours = Serializer.serialize(r)
    assert ours == bytes.fromhex(theirs.stdout.strip())


def test_install_makes_coapthon_imports_resolve_here():
    code = """
import greencoap.compat.coapthon as c
c.install()
from coapthon.server.coap import CoAP
from coapthon.client.helperclient import HelperClient
from coapthon import defines
import coapthon.resources.resource as r
print(CoAP.__module__, HelperClient.__module__, defines.__name__, r.Resource.__module__)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [
        "greencoap.compat.coapthon.server.coap",
        "greencoap.compat.coapthon.client.helperclient",
        "greencoap.compat.coapthon.defines",
        "greencoap.compat.coapthon.resources.resource",
    ]
    assert "messages.response" in compat.MODULES


# -- CoAPthon3's own example server, unmodified but for the imports ------------------------


@pytest.fixture
def legacy_server(hub, tmp_path):
    src = VENV_BIN / "coapserver.py"
    require_or_skip(src.exists(), "CoAPthon3 1.0.2's example scripts (pip install CoAPthon3)")
    for name in ("coapserver.py", "exampleresources.py"):
        text = (VENV_BIN / name).read_text()
        text = text.replace("from coapthon", "from greencoap.compat.coapthon")
        (tmp_path / name).write_text(text.replace("#!python", "#!/usr/bin/env python3"))
    port = free_port()
    env = dict(os.environ, GREENCOAP_HUB=hub.backend, PYTHONPATH=str(Path.cwd()))
    p = Proc(
        [sys.executable, str(tmp_path / "coapserver.py"), "-i", "127.0.0.1", "-p", str(port)],
        port,
        cwd=tmp_path,
        env=env,
    )
    yield p
    p.stop()


def coap_client(hub, *args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    client = which_or_skip("coap-client-notls")
    return hub.run_in_thread(
        lambda: subprocess.run([client, *args], capture_output=True, timeout=timeout),
        timeout=timeout + 5,
    )


def test_libcoap_client_against_the_legacy_example_server(hub, legacy_server):
    u = legacy_server.uri
    assert coap_client(hub, "-m", "get", u + "/basic").stdout.strip() == b"Basic Resource"
    assert coap_client(hub, "-m", "put", "-e", "hello", u + "/basic").returncode == 0
    assert coap_client(hub, "-m", "get", u + "/basic").stdout.strip() == b"hello"
    created = coap_client(hub, "-v", "7", "-m", "post", "-e", "kid", u + "/storage/new1")
    assert b"2.01" in created.stdout + created.stderr
    assert b"Location-Path:storage" in (created.stdout + created.stderr).replace(b" ", b"")
    assert coap_client(hub, "-m", "get", u + "/storage/new1").stdout.strip() == b"kid"
    deleted = coap_client(hub, "-v", "7", "-m", "delete", u + "/storage/new1")
    assert b"2.02" in deleted.stdout + deleted.stderr
    gone = coap_client(hub, "-v", "7", "-m", "get", u + "/storage/new1")
    assert b"4.04" in gone.stdout + gone.stderr
    big = coap_client(hub, "-b", "64", "-m", "get", u + "/big").stdout.rstrip(b"\n")
    assert len(big) == 2041 and big.startswith(b"Lorem ipsum") and big.endswith(b"cras amet.")
    sep = coap_client(hub, "-m", "get", u + "/separate", timeout=30)
    assert sep.stdout.strip() == b"Separate"
    core = coap_client(hub, "-m", "get", u + "/.well-known/core").stdout
    assert b'</basic>;ct=0;if="if1";obs;rt="rt1"' in core and b"</big>;obs" in core
    enc = coap_client(hub, "-A", "41", "-m", "get", u + "/encoding").stdout.strip()
    assert enc == b"<value>0</value>"
    obs = coap_client(hub, "-s", "2", "-m", "get", u + "/basic")
    assert obs.stdout.strip().startswith(b"hello")


def test_a_sleeping_legacy_resource_does_not_hold_up_the_others(hub, legacy_server):
    """``/long`` sleeps 10 s in its render_GET (a blocking legacy call): its
    CON request gets an empty ACK at once and the answer later as a separate
    CON; a GET to another resource meanwhile is answered at once."""
    u = legacy_server.uri
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    raw.settimeout(15)
    try:
        raw.sendto(b"\x41\x01\x12\x34\x77\xb4long", ("127.0.0.1", legacy_server.port))
        t0 = time.monotonic()
        ack, _ = raw.recvfrom(1500)
        assert ack == b"\x60\x00\x12\x34" and time.monotonic() - t0 < 1.5  # empty ACK
        t0 = time.monotonic()
        fast = coap_client(hub, "-m", "get", u + "/basic")
        elapsed = time.monotonic() - t0
        assert fast.stdout.strip() == b"Basic Resource" and elapsed < 0.5, elapsed
        late, _ = raw.recvfrom(1500)
        assert late[0] >> 4 == 0x4 and late[1] == 69 and late[4:5] == b"\x77"  # CON 2.05
        assert late.endswith(b"\xffLong Time")
        raw.sendto(bytes([0x60, 0]) + late[2:4], ("127.0.0.1", legacy_server.port))
    finally:
        raw.close()


# -- HelperClient --------------------------------------------------------------------------

LEGACY_CLIENT = """
from coapthon.client.helperclient import HelperClient
from coapthon import defines
host, port = "127.0.0.1", {port}
client = HelperClient(server=(host, port))
response = client.get("hello")
print("GET", response.code, response.payload)
response = client.post("echo", (defines.Content_types["text/plain"], "legacy"))
print("POST", response.code, response.payload, response.content_type)
response = client.get("large?size=3000")
print("BIG", response.code, len(response.payload))
response = client.discover()
print("CORE", response.code, "</hello>" in response.payload)
client.stop()
"""


def test_a_helperclient_script_against_the_demo_server(hub, demo_proc_no_echo):
    script = "import greencoap.compat.coapthon as c\nc.install()\n" + LEGACY_CLIENT.format(
        port=demo_proc_no_echo.port
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "GET 69 Hello, world!"
    assert lines[1] == "POST 69 legacy 0"
    assert lines[2] == "BIG 69 3000"  # block-wise, reassembled
    assert lines[3] == "CORE 69 True"


def test_a_helperclient_against_libcoap_server(hub, libcoap_server):
    client = HelperClient(server=("127.0.0.1", libcoap_server.port), timeout=5)
    try:
        r = client.get("")
        assert r.code == defines.Codes.CONTENT.number and "libcoap" in r.payload
        r = client.put("example_data", "legacy data")
        assert r.code in (defines.Codes.CHANGED.number, defines.Codes.CREATED.number)
        assert client.get("example_data").payload == "legacy data"
        got = []
        client.observe("time?ticks", got.append)
        deadline = time.monotonic() + 6
        while len(got) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(got) >= 2 and all(g.code == 69 for g in got)
        client.cancel_observing(got[-1], True)
        assert client.get("").code == 69  # cancel_observing ends the observation, not the client
    finally:
        client.stop()


def test_helperclient_callbacks_threads_and_no_leaks(hub, demo_proc):
    base_threads = threading.active_count()
    base_fds = len(os.listdir("/proc/self/fd"))
    client = HelperClient(server=("127.0.0.1", demo_proc.port), timeout=5)
    results, done = [], threading.Event()

    def work():
        for i in range(50):
            r = client.post("echo", str(i))
            results.append(r.payload == str(i))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [True] * 400
    answers = []

    def callback(response):
        answers.append(response.code)
        if len(answers) == 20:
            done.set()

    for _ in range(20):
        client.get("hello", callback=callback)
    assert done.wait(10) and answers == [69] * 20
    for _ in range(20):  # observe cycles
        notes = []
        client.observe("counter?interval=0.05", notes.append)
        deadline = time.monotonic() + 3
        while len(notes) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        client.cancel_observing(notes[-1], False)
    client.stop()
    time.sleep(0.5)
    assert threading.active_count() <= base_threads + 1  # the shared hub thread, if others use it
    assert len(os.listdir("/proc/self/fd")) <= base_fds + 2


class Greeting(Resource):
    """A CoAPthon3-style resource written in a test: GET and PUT."""

    def __init__(self, name="Greeting", coap_server=None):
        super().__init__(name, coap_server, visible=True, observable=True, allow_children=False)
        self.payload = "hi"

    def render_GET(self, request):
        return self

    def render_PUT(self, request):
        self.edit_resource(request)
        return self


def test_compat_server_and_helperclient_over_ipv6_and_dtls(hub):
    """The compat server on ::1 with a DTLS port (the documented ``dtls_port=``
    / ``psk=`` keywords) and HelperClient over IPv6, plain and with
    ``psk=(identity, key)``; a wrong key is a clear error, not a hang."""
    from greencoap.compat.coapthon.server.coap import CoAP
    from greencoap.errors import HandshakeError

    port, dport = free_port(socket.AF_INET6, "::1"), free_port(socket.AF_INET6, "::1")
    server = CoAP(("::1", port), dtls_port=dport, psk={"legacy": b"secret-key"})
    server.add_resource("greet/", Greeting())
    t = threading.Thread(target=server.listen, daemon=True)
    t.start()
    try:
        wait_udp_ready(port, "::1")
        plain = HelperClient(server=("::1", port), timeout=5)
        secure = HelperClient(server=("::1", dport), timeout=5, psk=("legacy", b"secret-key"))
        wrong = HelperClient(server=("::1", dport), timeout=2, psk=("legacy", b"other-key"))
        try:
            assert plain.get("greet").payload == "hi"
            assert secure.put("greet", "hello over DTLS").code == defines.Codes.CHANGED.number
            assert plain.get("greet").payload == "hello over DTLS"
            with pytest.raises(HandshakeError, match="wrong PSK"):
                wrong.get("greet")  # not a silent None: the key is wrong
        finally:
            for c in (plain, secure, wrong):
                c.stop()
    finally:
        server.close()
        t.join(10)
    assert not t.is_alive()


def test_the_worked_example_runs(hub):
    """``examples/coapthon_legacy.py`` (the README's migration example)."""
    example = Path(__file__).resolve().parent.parent / "examples" / "coapthon_legacy.py"
    env = dict(os.environ, GREENCOAP_HUB=hub.backend)
    out = subprocess.run(
        [sys.executable, str(example), str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("40 GETs from 8 threads") and lines[0].endswith("{'20.5'}")
    assert lines[1:4] == [
        "PUT -> CHANGED",
        "observed: ['20.5', '21.0']",
        "slow GET -> monthly report: 42 kWh",
    ]
    assert lines[4] == 'discover -> </report>,</thermostat>;ct=0;obs;rt="thermostat"'


def _sockets() -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return n


def test_a_helperclient_dropped_after_cancel_observing_lets_go(hub, demo_proc):
    """CoAPthon3's idiom ends an observation with ``cancel_observing`` (which
    stopped the whole client there) and drops the client: the drop-in's
    client, never stopped, gives its sockets and threads back when collected."""
    import gc

    base = _sockets()
    stopped = HelperClient(server=("127.0.0.1", demo_proc.port), timeout=5)
    assert stopped.get("hello").code == 69 and _sockets() > base
    stopped.stop()
    assert _sockets() == base  # stop() is done when it returns
    for _ in range(10):
        client = HelperClient(server=("127.0.0.1", demo_proc.port), timeout=5)
        got, enough = [], threading.Event()

        def callback(response, got=got, enough=enough):
            got.append(response)
            if len(got) >= 3:
                enough.set()

        client.observe("counter?interval=0.05", callback)
        assert enough.wait(5)
        client.cancel_observing(got[-1], True)
        del client
    deadline = time.monotonic() + 5
    while _sockets() > base and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.1)
    assert _sockets() <= base
