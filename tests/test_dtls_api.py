"""coaps:// end to end: greencoap's client and server over DTLS 1.2 PSK, real sockets.

Every test runs on the io_uring and epoll hubs; the client-side ones also
inside gevent (``any_hub``).  Interop with libcoap is in test_dtls_interop.py.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from greencoap import (
    Client,
    HandshakeError,
    RequestTimeoutError,
    Response,
    Router,
    Server,
    UriError,
    sleep,
    spawn,
)
from greencoap.demo import build_router
from greencoap.dtls_channel import client_credentials
from greencoap.protocol.dtls import ESTABLISHED, DtlsSession
from tests.lossy import LossyRelay

KEYS = {"client1": b"sesame", "other": b"second key"}
PSK = ("client1", b"sesame")


def _secure_server(**kw) -> Server:
    router = build_router()
    srv = Server(
        router,
        host="127.0.0.1",
        port=0,
        dtls_port=0,
        psk=KEYS,
        psk_hint="greencoap",
        **kw,
    ).start()
    srv.uri = f"coap://127.0.0.1:{srv.port}"
    srv.suri = f"coaps://127.0.0.1:{srv.dtls_port}"
    return srv


@pytest.fixture
def secure_server(any_hub):
    srv = _secure_server()
    yield srv
    srv.stop()


def _wait(cond, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        sleep(0.01)
    return cond()


def test_get_over_dtls_and_identity(secure_server):
    with Client(timeout=5, psk=PSK) as c:
        r = c.get(secure_server.suri + "/hello")
        assert r.text == "Hello, world!"
        assert c.get(secure_server.suri + "/whoami").text == "client1"
        # the same router over plain CoAP: no identity there
        assert c.get(secure_server.uri + "/whoami").text == "anonymous"
        assert c.stats["dtls_sessions"] == 1


def test_identity_chosen_per_host_by_a_callable(secure_server):
    asked = []

    def keys(host: str):
        asked.append(host)
        return ("other", b"second key")

    with Client(timeout=5, psk=keys) as c:
        assert c.get(secure_server.suri + "/whoami").text == "other"
        assert c.get(secure_server.suri + "/whoami").text == "other"
    assert asked == ["127.0.0.1"]


def test_session_reused_across_requests_and_greenlets(secure_server):
    with Client(timeout=5, psk=PSK) as c:
        gs = [spawn(c.get, f"{secure_server.suri}/sensors/{i}") for i in range(50)]
        for i, g in enumerate(gs):
            assert g.get(timeout=10).json()["id"] == str(i)
        for _ in range(20):
            c.get(secure_server.suri + "/hello")
    s = secure_server.stats
    assert s["dtls_sessions_created"] == 1
    assert s["dtls_hello_verify_sent"] == 1


def test_blockwise_both_ways_over_dtls(secure_server):
    body = bytes(range(256)) * 23  # 5,888 bytes: Block1 up, Block2 down
    with Client(timeout=10, psk=PSK) as c:
        assert c.put(secure_server.suri + "/store", body).code == 0x44
        assert c.get(secure_server.suri + "/store").payload == body
        big = c.get(secure_server.suri + "/large?size=3000").payload
        assert big == (b"0123456789abcdef" * 200)[:3000]
    assert secure_server.stats["block2_served"] >= 9


def test_observe_over_dtls(secure_server):
    with Client(timeout=5, psk=PSK) as c:
        seen = []
        with c.observe(secure_server.suri + "/counter?interval=0.05") as obs:
            for r in obs:
                seen.append(r.text)
                if len(seen) == 5:
                    break
        assert seen == ["0", "1", "2", "3", "4"]
        assert _wait(lambda: secure_server.stats["observers"] == 0)


def test_observer_dropped_when_its_session_closes(secure_server):
    c = Client(timeout=5, psk=PSK)
    it = c.observe(secure_server.suri + "/counter?interval=0.05").iter(timeout=5)
    assert [next(it).text, next(it).text] == ["0", "1"]
    assert secure_server.stats["observers"] == 1
    c.close()  # close_notify, no deregistration
    assert _wait(lambda: secure_server.stats["observers"] == 0)
    assert secure_server.stats["observers_dropped_session_closed"] == 1


def test_separate_response_over_dtls(any_hub):
    srv = _secure_server(separate_delay=0.1)
    try:
        with Client(timeout=5, psk=PSK) as c:
            r = c.get(srv.suri + "/slow?ms=400")
            assert r.text == "slept 400 ms"
            assert r.mtype == 0  # the separate response came as a CON
    finally:
        srv.stop()


@pytest.mark.parametrize(
    "psk, alert",
    [
        (("client1", b"not the key"), "decrypt_error"),
        (("mallory", b"sesame"), "unknown_psk_identity"),
    ],
)
def test_bad_credentials_fail_fast_with_a_clear_error(secure_server, caplog, psk, alert):
    caplog.set_level("WARNING", logger="greencoap.dtls")
    t0 = time.monotonic()
    with Client(timeout=20, psk=psk) as c:
        with pytest.raises(HandshakeError) as e:
            c.get(secure_server.suri + "/hello")
    assert time.monotonic() - t0 < 3
    assert alert in str(e.value)
    assert secure_server.stats["dtls_handshakes_failed"] >= 1
    assert secure_server.stats["requests_received"] == 0  # nothing reached the router
    assert any("DTLS with 127.0.0.1:" in r.getMessage() for r in caplog.records)


def test_observation_ends_with_the_error_when_the_session_fails(secure_server):
    with Client(timeout=5, psk=PSK) as c:
        obs = c.observe(secure_server.suri + "/counter?interval=0.05")
        it = obs.iter(timeout=5)
        assert next(it).text == "0"
        ep = c.secure_endpoint
        peer = next(iter(ep.channel.sessions))
        ep.channel.on_failure(peer, HandshakeError("session torn down"))
        with pytest.raises(HandshakeError):
            for _ in it:
                pass


def test_coaps_without_a_psk_is_a_usage_error(any_hub):
    with Client(timeout=1) as c:
        with pytest.raises(UriError, match="psk"):
            c.get("coaps://127.0.0.1:5684/hello")


def test_server_needs_keys_for_dtls():
    with pytest.raises(ValueError, match="psk"):
        Server(Router(), host="127.0.0.1", port=0, dtls_port=0)


def test_close_sends_close_notify(secure_server):
    c = Client(timeout=5, psk=PSK)
    c.get(secure_server.suri + "/hello")
    assert secure_server.stats["dtls_sessions"] == 1
    c.close()
    assert _wait(lambda: secure_server.stats["dtls_sessions"] == 0)


def test_client_recovers_when_the_server_restarts(any_hub):
    """The server lost its sessions (restart): the client's request times out,
    the stale session is abandoned and the next request handshakes anew."""
    srv = _secure_server()
    port = srv.dtls_port
    with Client(timeout=5, psk=PSK) as c:
        assert c.get(srv.suri + "/hello").text == "Hello, world!"
        srv.secure_endpoint.channel.server.sessions.clear()  # a crash: no close_notify
        srv.stop()
        srv = Server(build_router(), host="127.0.0.1", port=0, dtls_port=port, psk=KEYS).start()
        try:
            with pytest.raises(RequestTimeoutError):
                c.get(f"coaps://127.0.0.1:{port}/hello", timeout=1)
            assert srv.stats["dtls_no_session"] >= 1  # epoch-1 records, no session: dropped
            assert c.get(f"coaps://127.0.0.1:{port}/hello").text == "Hello, world!"
            assert c.stats["dtls_sessions_abandoned"] == 1
        finally:
            srv.stop()


def test_peer_reboot_replaces_its_session(hub):
    """A new ClientHello (epoch 0, valid cookie) from an address with a session
    starts a fresh handshake (RFC 6347 §4.2.8); the old session's keys die."""
    srv = _secure_server()
    addr = ("127.0.0.1", srv.dtls_port)
    result: dict = {}

    def rebooting_device():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(5)
            old = _handshake(sock, addr, PSK)
            new = _handshake(sock, addr, PSK)  # same address, new association
            sock.sendto(old.send(b"\x40\x01\x00\x01\xb5hello"), addr)  # dead keys
            sock.sendto(new.send(b"\x40\x01\x00\x02\xb5hello"), addr)
            data, _ = sock.recvfrom(4096)
            result["apps"] = new.receive(data, time.monotonic())

    try:
        t = threading.Thread(target=rebooting_device)
        t.start()
        while t.is_alive():
            sleep(0.01)
        assert result["apps"][0][2:4] == b"\x00\x02"  # only the new session's request
        s = srv.stats
        assert s["dtls_sessions_replaced"] == 1 and s["dtls_sessions"] == 1
        assert s["requests_received"] == 1
    finally:
        srv.stop()


def test_handler_sees_identity(any_hub):
    router = Router()

    @router.post("/who")
    def who(request):
        return Response(0x44, f"{request.identity}:{request.payload.decode()}")

    srv = Server(router, host="127.0.0.1", port=0, dtls_port=0, psk=lambda i: KEYS.get(i)).start()
    try:
        with Client(timeout=5, psk=("other", "second key")) as c:
            r = c.post(f"coaps://127.0.0.1:{srv.dtls_port}/who", "x")
            assert r.text == "other:x"
    finally:
        srv.stop()


def test_handshake_through_30_percent_loss(hub):
    """30 % of the datagrams each way are lost: DTLS flight retransmission
    (1 s doubling) and CoAP's own carry the handshake and the requests through."""
    srv = _secure_server()
    seed = 11 if hub.backend == "uring" else 12
    try:
        with LossyRelay(("127.0.0.1", srv.dtls_port), loss=0.3, seed=seed) as relay:
            uri = relay.uri.replace("coap://", "coaps://")
            with Client(timeout=60, psk=PSK) as c:
                for _ in range(3):
                    assert c.get(uri + "/hello").text == "Hello, world!"
            snap = relay.snapshot()
        assert snap["c2s"]["dropped"] + snap["s2c"]["dropped"] > 0
        assert srv.stats["dtls_sessions_created"] == 1
    finally:
        srv.stop()


def test_lost_final_flight_is_recovered(hub):
    """The server's CCS+Finished is dropped once: the client retransmits its
    final flight, the server answers with its last flight again."""
    srv = _secure_server()
    dropped = []

    def drop(direction, data):
        # the server's final flight: a CCS record (content type 20) from the server
        if direction == "s2c" and data[:1] == b"\x14" and not dropped:
            dropped.append(data)
            return True
        return False

    try:
        with LossyRelay(("127.0.0.1", srv.dtls_port), loss=0.0, seed=1, drop=drop) as relay:
            uri = relay.uri.replace("coap://", "coaps://")
            with Client(timeout=10, psk=PSK) as c:
                assert c.get(uri + "/hello").text == "Hello, world!"
        assert dropped
        assert srv.stats["dtls_retransmits"] >= 1
    finally:
        srv.stop()


# -- hostile input at a live server ---------------------------------------------


def _handshake(sock: socket.socket, addr: tuple, psk: tuple) -> DtlsSession:
    """A blocking DTLS client session over a plain socket (the fuzzer's own)."""
    s = DtlsSession("client", psk=client_credentials(psk), now=time.monotonic())
    s.start(time.monotonic())
    deadline = time.monotonic() + 10
    sock.settimeout(0.2)
    while s.state != ESTABLISHED:
        assert time.monotonic() < deadline, "fuzzer handshake did not finish"
        for d in s.outbox:
            sock.sendto(d, addr)
        s.outbox = []
        try:
            data, _ = sock.recvfrom(4096)
            s.receive(data, time.monotonic())
        except TimeoutError:
            s.expire(time.monotonic())
    for d in s.outbox:
        sock.sendto(d, addr)
    s.outbox = []
    return s


def _udp_drops() -> int:
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Udp:")]
    head, vals = rows[0], rows[1]
    return int(vals[head.index("RcvbufErrors")])


def _fuzz(addr: tuple, n: int, result: dict) -> None:
    """Send ``n`` hostile datagrams: garbage, truncated and mutated records,
    bad ClientHellos, replays, forged records on a live session."""
    import random

    rng = random.Random(1234)
    sess_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    anon = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        session = _handshake(sess_sock, addr, PSK)
        get = b"\x50\x01\x12\x34\xb5hello"  # NON GET /hello
        good = session.send(get)
        sent = 0
        for i in range(n):
            kind = i % 6
            if kind == 0:
                d = rng.randbytes(rng.randrange(0, 200))
                sock = anon
            elif kind == 1:  # a record header that lies about its length
                d = bytes([23, 0xFE, 0xFD, 0, 1]) + rng.randbytes(6) + b"\x40\x00" + b"x" * 10
                sock = sess_sock
            elif kind == 2:  # a fresh record with one bit flipped: fails authentication
                m = bytearray(session.send(get))
                j = rng.randrange(13, len(m))
                m[j] ^= 1 << rng.randrange(8)
                d = bytes(m)
                sock = sess_sock
            elif kind == 3:  # a replay of a record already accepted
                d = good
                sock = sess_sock
            elif kind == 4:  # a broken ClientHello
                d = bytes([22, 0xFE, 0xFD, 0, 0, 0, 0, 0, 0, 0, 0]) + rng.randbytes(30)
                d = d[:11] + len(d[13:]).to_bytes(2, "big") + d[13:]
                sock = anon
            else:  # truncated header
                d = bytes([23, 0xFE, 0xFD, 0, 1, 0, 0])[: rng.randrange(1, 7)]
                sock = sess_sock
            sock.sendto(d, addr)
            sent += 1
            if sent % 200 == 0:
                time.sleep(0.002)  # paced: the point is counting, not overflowing the socket
        # the fuzzer's own session still works after all that
        sess_sock.sendto(session.send(b"\x40\x01\x43\x21\xb5hello"), addr)
        sess_sock.settimeout(5)
        while True:
            data, _ = sess_sock.recvfrom(4096)
            apps = session.receive(data, time.monotonic())
            if apps and apps[0][2:4] == b"\x43\x21":
                result["final"] = apps[0]
                break
        result["sent"] = sent
    except Exception as e:  # noqa: BLE001 - reported to the test
        result["error"] = repr(e)
    finally:
        sess_sock.close()
        anon.close()


def test_50000_hostile_datagrams_counted_while_a_good_client_is_served(hub):
    srv = _secure_server()
    n = 50_000
    result: dict = {}
    drops0 = _udp_drops()
    try:
        before = srv.stats
        t = threading.Thread(target=_fuzz, args=(("127.0.0.1", srv.dtls_port), n, result))
        served = 0
        with Client(timeout=10, psk=PSK) as c:
            t.start()
            while t.is_alive():
                assert c.get(srv.suri + "/hello").text == "Hello, world!"
                served += 1
                sleep(0.001)
        t.join()
        assert "error" not in result, result
        assert result["sent"] == n
        assert result["final"].endswith(b"Hello, world!")
        assert served > 10
        after = srv.stats
        counted = sum(
            after.get("dtls_" + k, 0) - before.get("dtls_" + k, 0)
            for k in (
                "bad_records",
                "auth_failures",
                "replays",
                "wrong_epoch",
                "no_session",
                "hello_verify_sent",
            )
        )
        kernel_drops = _udp_drops() - drops0
        dtls = {k: v for k, v in after.items() if k.startswith("dtls_")}
        assert counted + kernel_drops >= n, f"{counted} {kernel_drops} {dtls}"
        # every forged record is an authentication failure, never an answer
        assert after["dtls_auth_failures"] - before.get("dtls_auth_failures", 0) >= (
            n // 6 - kernel_drops
        )
        # the first copy of the replayed record is new; every later one a replay
        assert after["dtls_replays"] - before.get("dtls_replays", 0) >= n // 6 - 1 - kernel_drops
    finally:
        srv.stop()


def test_non_ping_and_ipv6_over_dtls(any_hub):
    router = build_router()
    srv = Server(router, host="::1", port=0, dtls_port=0, psk=KEYS).start()
    try:
        with Client(timeout=5, psk=PSK) as c:
            uri = f"coaps://[::1]:{srv.dtls_port}"
            r = c.get(uri + "/hello", confirmable=False)
            assert r.text == "Hello, world!" and r.mtype == 1  # NON answered NON
            assert c.ping(uri) < 5
            assert c.post(uri + "/echo", "v6").text == "v6"
    finally:
        srv.stop()


def test_plain_coap_never_loads_cryptography():
    """DTLS is imported on first use: plain CoAP scripts start without it."""
    import subprocess
    import sys

    code = (
        "import sys, greencoap\n"
        "from greencoap import Client, Server, Router\n"
        "print('cryptography' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "False", out
