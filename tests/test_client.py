"""The client end to end on real UDP sockets, on every hub backend."""

from __future__ import annotations

import socket
import threading
import time

import pytest

import greencoap
from greencoap import Client, Code, RequestTimeoutError, ResetError, Type, UriError
from greencoap.message import Message
from greencoap.options import Block, OptionNumber

from .conftest import hub_for

CLIENT_TABLES = ("by_token", "by_mid", "inflight", "queued", "deadlines")


def client_tables(c: Client) -> dict[str, int]:
    """The client-role tables of a client's message layer."""
    sizes = c.endpoint.layer.table_sizes()
    return {k: sizes[k] for k in CLIENT_TABLES}


@pytest.fixture(params=("uring", "epoll", "gevent"))
def hub(request):
    """Client tests run on both native backends and inside gevent's hub."""
    yield from hub_for(request.param)


class RawPeer:
    """A plain-socket CoAP peer in an OS thread, scripted by ``answer(n, msg)``.

    ``answer`` gets the copy number (1, 2, …) and the decoded message and
    returns bytes to send back (or a list of datagrams) or None to stay silent.
    """

    def __init__(self, answer, family=socket.AF_INET, host="127.0.0.1"):
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.answer = answer
        self.received: list[tuple[float, bytes]] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(2048)
            except (TimeoutError, OSError):
                continue
            self.received.append((time.monotonic(), data))
            reply = self.answer(len(self.received), Message.decode(data))
            for datagram in [reply] if isinstance(reply, bytes) else reply or ():
                self.sock.sendto(datagram, addr)

    def close(self):
        self._stop.set()
        self.thread.join()
        self.sock.close()

    @property
    def uri(self):
        return f"coap://127.0.0.1:{self.port}"


def piggybacked(req: Message, payload=b"ok") -> bytes:
    return Message(Type.ACK, Code.CONTENT, req.mid, req.token, [], payload).encode()


def test_get_from_libcoap_server(hub, libcoap_server):
    with Client(timeout=5) as c:
        r = c.get(libcoap_server.uri + "/")
        assert r.code == Code.CONTENT
        assert r.ok and r.payload  # libcoap's default index text
        # PUT creates a resource on `-d 20`, then GET reads it back
        assert c.put(libcoap_server.uri + "/hello", payload=b"Hello, world!").ok
        assert c.get(libcoap_server.uri + "/hello").payload == b"Hello, world!"


def test_200_concurrent_slow_calls_overlap(hub, demo_proc):
    with Client(timeout=5) as c:
        c.get(demo_proc.uri + "/hello")  # warm up the socket
        t0 = time.monotonic()
        gs = [greencoap.spawn(c.get, demo_proc.uri + "/slow?ms=300") for _ in range(200)]
        done = greencoap.joinall(gs, timeout=10)
        elapsed = time.monotonic() - t0
        assert len(done) == 200
        assert all(g.value.code == Code.CONTENT for g in gs)
        assert elapsed < 1.5, f"200 calls of 300 ms took {elapsed:.2f} s: not concurrent"


def test_retransmission_answered_on_third_copy(hub):
    peer = RawPeer(lambda n, m: piggybacked(m) if n == 3 else None)
    try:
        with Client(timeout=10, ack_timeout=0.1, ack_random_factor=1.0) as c:
            r = c.get(peer.uri + "/x")
            assert r.payload == b"ok"
            assert c.stats["retransmissions"] == 2
        copies = [d for _, d in peer.received]
        assert len(copies) == 3 and copies[0] == copies[1] == copies[2]
        gaps = [b[0] - a[0] for a, b in zip(peer.received, peer.received[1:], strict=False)]
        assert 0.08 < gaps[0] < 0.3 and 0.17 < gaps[1] < 0.5  # 0.1 s, then doubled
    finally:
        peer.close()


def test_silent_server_times_out_after_rfc_schedule(hub):
    peer = RawPeer(lambda n, m: None)
    try:
        with Client(timeout=30, ack_timeout=0.05, ack_random_factor=1.0, max_retransmit=4) as c:
            t0 = time.monotonic()
            with pytest.raises(RequestTimeoutError) as info:
                c.get(peer.uri + "/x")
            elapsed = time.monotonic() - t0
            assert isinstance(info.value, TimeoutError)
            assert client_tables(c) == dict.fromkeys(CLIENT_TABLES, 0)
        assert len(peer.received) == 5  # the original and MAX_RETRANSMIT = 4 copies
        # 0.05 * (2**5 - 1) = 1.55 s: the MAX_TRANSMIT_WAIT of these parameters
        assert 1.45 < elapsed < 2.1
    finally:
        peer.close()


def test_call_timeout_bounds_the_wait(hub):
    peer = RawPeer(lambda n, m: None)
    try:
        with Client(timeout=30) as c:
            t0 = time.monotonic()
            with pytest.raises(RequestTimeoutError):
                c.get(peer.uri + "/x", timeout=0.3)
            assert 0.25 < time.monotonic() - t0 < 1.5
    finally:
        peer.close()


def test_rst_raises_reset_error(hub):
    peer = RawPeer(lambda n, m: Message(Type.RST, Code.EMPTY, m.mid).encode())
    try:
        with Client(timeout=5) as c, pytest.raises(ResetError):
            c.get(peer.uri + "/x")
    finally:
        peer.close()


def test_non_request_gets_non_response(hub, server):
    with Client(timeout=5) as c:
        r = c.get(server.uri + "/hello", confirmable=False)
        assert r.text == "Hello, world!"
        assert r.mtype == Type.NON


def test_post_echo_and_content_format(hub, server):
    with Client(timeout=5) as c:
        r = c.post(server.uri + "/echo", payload=b"\x00\x01binary", content_format=42)
        assert r.payload == b"\x00\x01binary" and r.content_format == 42
        r = c.post(server.uri + "/echo", payload="text")
        assert r.text == "text" and r.content_format == 0


def test_nothing_leaks_after_10000_requests(hub, server):
    with Client(timeout=10) as c:

        def worker():
            for _ in range(100):
                assert c.get(server.uri + "/hello").ok

        gs = [greencoap.spawn(worker) for _ in range(100)]
        assert len(greencoap.joinall(gs, timeout=60)) == 100
        assert all(g.successful() for g in gs)
        assert c.stats["responses_received"] == 10_000
        assert client_tables(c) == dict.fromkeys(CLIENT_TABLES, 0)
        assert len(hub._workers) <= 200  # the server's handler greenlets are reused


def test_nstart_one_queues_instead_of_failing(hub, server):
    with Client(timeout=10, nstart=1) as c:
        t0 = time.monotonic()
        gs = [greencoap.spawn(c.get, server.uri + "/slow?ms=100") for _ in range(5)]
        greencoap.joinall(gs, timeout=10)
        elapsed = time.monotonic() - t0
        assert all(g.successful() and g.value.ok for g in gs)
        assert elapsed >= 0.48, "nstart=1 must send one request at a time"


def test_killed_or_timed_out_waiters_leave_no_state(hub, server):
    with Client(timeout=10) as c:
        g = greencoap.spawn(c.get, server.uri + "/slow?ms=2000")
        greencoap.sleep(0.1)
        g.kill()
        with pytest.raises(RequestTimeoutError):
            c.get(server.uri + "/slow?ms=2000", timeout=0.1)
        assert c.endpoint.layer.pending() == 0


def test_close_wakes_waiting_greenlets(hub, server):
    c = Client(timeout=10)
    g = greencoap.spawn(c.get, server.uri + "/slow?ms=3000")
    greencoap.sleep(0.1)
    c.close()
    g.join(2)
    assert isinstance(g.exception, greencoap.ClientClosedError)
    with pytest.raises(greencoap.ClientClosedError):
        c.get(server.uri + "/hello")


def test_module_level_functions_use_a_default_client(hub, server):
    assert greencoap.get(server.uri + "/hello", timeout=5).text == "Hello, world!"
    assert greencoap.post(server.uri + "/echo", payload=b"a", timeout=5).payload == b"a"
    assert greencoap.put(server.uri + "/hello", payload=b"a", timeout=5).code == (
        Code.METHOD_NOT_ALLOWED
    )
    assert greencoap.delete(server.uri + "/nothing", timeout=5).code == Code.NOT_FOUND


def test_raise_for_status(hub, server):
    with Client(timeout=5) as c:
        r = c.get(server.uri + "/missing")
        with pytest.raises(greencoap.ResponseError) as info:
            r.raise_for_status()
        assert info.value.response is r and "4.04" in str(info.value)
        assert c.get(server.uri + "/hello").raise_for_status().ok


def test_host_name_is_resolved(hub, server):
    with Client(timeout=5) as c:
        assert c.get(f"coap://localhost:{server.port}/hello").text == "Hello, world!"
        assert c.get(f"coap://LOCALHOST:{server.port}/hello").ok


def test_ipv6_literal(hub):
    from greencoap.demo import build_router

    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    srv = greencoap.Server(build_router(), host="::1", port=0).start()
    try:
        with Client(timeout=5) as c:
            assert c.get(f"coap://[::1]:{srv.port}/hello").text == "Hello, world!"
            assert c.get(f"coap://[0:0::1]:{srv.port}/hello").ok  # same peer, other spelling
    finally:
        srv.stop()


def test_bad_uris_raise_uri_error(hub):
    with Client(timeout=1) as c:
        for bad in ("http://127.0.0.1/x", "coap://127.0.0.1/x#frag", "coap:///nohost"):
            with pytest.raises(UriError):
                c.get(bad)
        with pytest.raises(UriError):
            c.get("coap://no-such-host.invalid/x", timeout=5)


def test_slow_name_lookup_does_not_stall_the_hub(hub, server, monkeypatch):
    import greencoap.client as clientmod

    real = socket.getaddrinfo

    def slow_getaddrinfo(host, *args, **kwargs):
        if host == "slow.example":
            time.sleep(0.3)  # a blocking resolver, as on a bad network
            host = "127.0.0.1"
        return real(host, *args, **kwargs)

    monkeypatch.setattr(clientmod.socket, "getaddrinfo", slow_getaddrinfo)
    ticks = []

    def ticker():
        for _ in range(20):
            ticks.append(time.monotonic())
            greencoap.sleep(0.01)

    g = greencoap.spawn(ticker)
    with Client(timeout=5) as c:
        t0 = time.monotonic()
        assert c.get(f"coap://slow.example:{server.port}/hello").ok
        assert time.monotonic() - t0 >= 0.3
    g.join(2)
    during = [t for t in ticks if t0 < t < t0 + 0.3]
    assert len(during) >= 10, "the hub stalled while the name was being resolved"


def test_one_client_talks_to_ipv4_and_ipv6_peers(hub, server):
    from greencoap.demo import build_router

    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    v6 = greencoap.Server(build_router(), host="::1", port=0).start()
    try:
        with Client(timeout=5) as c:
            r4 = c.get(server.uri + "/hello")
            r6 = c.get(f"coap://[::1]:{v6.port}/hello")
            assert r4.ok and r6.ok
            assert r4.peer == ("127.0.0.1", server.port) and r6.peer == ("::1", v6.port)
            assert c.endpoint.family == socket.AF_INET6  # one dual-stack socket for both
    finally:
        v6.stop()


def test_observe_drops_a_notification_torn_by_a_change(hub):
    """RFC 7959 §3.4: the resource changes while a block-wise notification's
    blocks are fetched (block 1 comes with another ETag).  The torn state is
    dropped (counted in ``torn``) and the change's own notification is yielded;
    the observation goes on rather than failing."""
    block = OptionNumber.BLOCK2
    sent: dict[str, bytes] = {}

    def answer(n, m):
        if m.opt(block) is None:  # the registration: answer, then a 2-block notification
            sent["token"] = m.token
            ack = Message(
                Type.ACK, Code.CONTENT, m.mid, m.token, [(OptionNumber.OBSERVE, b"\x02")], b"first"
            )
            note = Message(
                Type.NON,
                Code.CONTENT,
                0x7001,
                m.token,
                [
                    (OptionNumber.ETAG, b"A"),
                    (OptionNumber.OBSERVE, b"\x03"),
                    (block, Block(0, True, 0).to_bytes()),
                ],
                b"a" * 16,
            )
            return [ack.encode(), note.encode()]
        # block 1 of that state: the resource changed meanwhile (ETag B), and
        # its notification follows
        rest = Message(
            Type.ACK,
            Code.CONTENT,
            m.mid,
            m.token,
            [(OptionNumber.ETAG, b"B"), (block, Block(1, False, 0).to_bytes())],
            b"b" * 16,
        )
        note = Message(
            Type.NON,
            Code.CONTENT,
            0x7002,
            sent["token"],
            [(OptionNumber.ETAG, b"B"), (OptionNumber.OBSERVE, b"\x04")],
            b"new",
        )
        return [rest.encode(), note.encode()]

    peer = RawPeer(answer)
    try:
        with Client(timeout=3) as c, c.observe(peer.uri + "/big") as obs:
            items = []
            for r in obs.iter(timeout=3):
                items.append(r.payload)
                if len(items) == 2:
                    break
            assert items == [b"first", b"new"]
            assert obs.torn == 1 and obs.notifications == 1
    finally:
        peer.close()


def test_observe_drops_a_torn_registration_response(hub):
    """The same when the registration's own response is the torn one: the
    first item yielded is the change's notification."""
    block = OptionNumber.BLOCK2
    sent: dict[str, bytes] = {}

    def answer(n, m):
        if m.opt(block) is None:  # the registration: block 0 of state A
            sent["token"] = m.token
            opts = [(OptionNumber.ETAG, b"A"), (OptionNumber.OBSERVE, b"\x02")]
            opts.append((block, Block(0, True, 0).to_bytes()))
            return Message(Type.ACK, Code.CONTENT, m.mid, m.token, opts, b"a" * 16).encode()
        opts = [(OptionNumber.ETAG, b"B"), (block, Block(1, False, 0).to_bytes())]
        rest = Message(Type.ACK, Code.CONTENT, m.mid, m.token, opts, b"b" * 16)
        opts = [(OptionNumber.ETAG, b"B"), (OptionNumber.OBSERVE, b"\x03")]
        note = Message(Type.NON, Code.CONTENT, 0x7003, sent["token"], opts, b"new")
        return [rest.encode(), note.encode()]

    peer = RawPeer(answer)
    try:
        with Client(timeout=3) as c, c.observe(peer.uri + "/big") as obs:
            first = next(iter(obs.iter(timeout=3)))
            assert first.payload == b"new" and obs.torn == 1
    finally:
        peer.close()
