"""The test infrastructure itself: the aiocoap peer server and the lossy relay.

These tests use neither greencoap's client nor its hub: aiocoap's own client
(under ``asyncio.run``) and plain sockets check that the peer serves what the
client tests will expect, and that ``LossyRelay`` forwards, drops,
duplicates and delays as configured.  If these fail, a failing client test
says nothing about greencoap.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import threading
import time

import pytest

from .lossy import C2S, S2C, LossyRelay

pytest_plugins = ["tests.peers.fixtures"]

BIG = b"0123456789abcdef" * 7500

# -- helpers -------------------------------------------------------------------


def run_client(fn, timeout: float = 10.0):
    """Run ``await fn(ctx)`` with a fresh aiocoap UDP client context, bounded in time."""
    import aiocoap

    async def main():
        ctx = await aiocoap.Context.create_client_context(transports=["udp6"])
        try:
            return await asyncio.wait_for(fn(ctx), timeout)
        finally:
            await ctx.shutdown()

    return asyncio.run(main())


def coap_request(
    code: int, mid: int, token: bytes, path: str = "", query: tuple = (), con: bool = True
) -> bytes:
    """A CoAP request datagram built by hand (short options only)."""
    out = bytearray([(0x40 if con else 0x50) | len(token), code, mid >> 8, mid & 0xFF])
    out += token
    opts = [(11, seg.encode()) for seg in path.strip("/").split("/") if seg]
    opts += [(15, q.encode()) for q in query]
    last = 0
    for number, value in opts:
        delta, last = number - last, number
        assert delta < 13 and len(value) < 13
        out.append(delta << 4 | len(value))
        out += value
    return bytes(out)


def parse(dgram: bytes) -> dict:
    """Type, code, message ID, token, options and payload of a datagram (by hand)."""
    tkl = dgram[0] & 0x0F
    msg = {
        "type": (dgram[0] >> 4) & 0x3,
        "code": dgram[1],
        "mid": int.from_bytes(dgram[2:4], "big"),
        "token": dgram[4 : 4 + tkl],
        "options": [],
        "payload": b"",
    }
    i, number = 4 + tkl, 0
    while i < len(dgram):
        if dgram[i] == 0xFF:
            msg["payload"] = dgram[i + 1 :]
            break
        delta, length = dgram[i] >> 4, dgram[i] & 0x0F
        i += 1
        ext = []
        for nib in (delta, length):
            if nib == 13:
                ext.append(dgram[i] + 13)
                i += 1
            elif nib == 14:
                ext.append(int.from_bytes(dgram[i : i + 2], "big") + 269)
                i += 2
            else:
                ext.append(nib)
        number += ext[0]
        msg["options"].append((number, dgram[i : i + ext[1]]))
        i += ext[1]
    return msg


CON, NON, ACK, RST = range(4)
GET, PUT = 0x01, 0x03
CONTENT = 0x45  # 2.05


def udp_socket(timeout: float = 1.0) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(timeout)
    return s


class EchoServer:
    """A UDP echo server on its own thread (127.0.0.1, free port), for the relay tests."""

    def __init__(self) -> None:
        self.sock = udp_socket(timeout=0.02)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.address = self.sock.getsockname()
        self.received = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="echo", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            self.received += 1
            self.sock.sendto(data, addr)

    def __enter__(self) -> EchoServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def drain(sock: socket.socket, quiet: float = 0.2, limit: float = 5.0) -> list[bytes]:
    """Receive until nothing arrives for ``quiet`` seconds (at most ``limit`` in all)."""
    got = []
    sock.settimeout(quiet)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            got.append(sock.recv(65535))
        except TimeoutError:
            break
    return got


# -- the aiocoap peer ----------------------------------------------------------


def test_aiocoap_hello_and_wkc(aiocoap_server):
    import aiocoap

    async def fn(ctx):
        hello = await ctx.request(
            aiocoap.Message(code=aiocoap.GET, uri=aiocoap_server.uri + "/hello")
        ).response
        wkc = await ctx.request(
            aiocoap.Message(code=aiocoap.GET, uri=aiocoap_server.uri + "/.well-known/core")
        ).response
        return hello, wkc

    hello, wkc = run_client(fn)
    assert hello.code == aiocoap.CONTENT
    assert hello.payload == b"Hello, world!"
    links = wkc.payload.decode()
    for path in ("/hello", "/big", "/upload", "/counter", "/separate"):
        assert f"<{path}>" in links
    assert "</counter>;obs" in links


def test_aiocoap_big_is_block2(aiocoap_server):
    import aiocoap

    async def fn(ctx):
        req = aiocoap.Message(code=aiocoap.GET, uri=aiocoap_server.uri + "/big")
        return await ctx.request(req).response

    r = run_client(fn)
    assert r.code == aiocoap.CONTENT
    assert len(r.payload) == 120_000
    assert r.payload == BIG

    # The first block, asked for by hand, proves the server really slices it.
    with udp_socket(2.0) as s:
        s.sendto(coap_request(GET, 0x1001, b"\x01", "/big"), ("127.0.0.1", aiocoap_server.port))
        m = parse(s.recv(2048))
    block2 = [v for n, v in m["options"] if n == 23]
    assert m["code"] == CONTENT and block2
    assert int.from_bytes(block2[0], "big") & 0x08  # M: more blocks follow
    assert BIG.startswith(m["payload"]) and 0 < len(m["payload"]) <= 1024


def test_aiocoap_upload_block1(aiocoap_server):
    import aiocoap

    body = os.urandom(60_000)

    async def fn(ctx):
        put = await ctx.request(
            aiocoap.Message(code=aiocoap.PUT, uri=aiocoap_server.uri + "/upload", payload=body)
        ).response
        back = await ctx.request(
            aiocoap.Message(code=aiocoap.GET, uri=aiocoap_server.uri + "/upload")
        ).response
        return put, back

    put, back = run_client(fn)
    assert put.code == aiocoap.CHANGED
    assert put.payload.decode() == f"60000:{hashlib.sha256(body).hexdigest()}"
    assert back.payload == body


def test_aiocoap_separate_takes_a_second(aiocoap_server):
    import aiocoap

    async def fn(ctx):
        t0 = time.monotonic()
        r = await ctx.request(
            aiocoap.Message(code=aiocoap.GET, uri=aiocoap_server.uri + "/separate")
        ).response
        return r, time.monotonic() - t0

    r, elapsed = run_client(fn)
    assert r.code == aiocoap.CONTENT
    assert elapsed >= 1.0


def test_aiocoap_separate_is_empty_ack_then_con(aiocoap_server):
    """On the wire: an empty ACK at once, then the response in its own CON."""
    with udp_socket(2.0) as s:
        t0 = time.monotonic()
        s.sendto(
            coap_request(GET, 0x2002, b"sep", "/separate", ("d=0.5",)),
            ("127.0.0.1", aiocoap_server.port),
        )
        ack = parse(s.recv(2048))
        t_ack = time.monotonic() - t0
        resp = parse(s.recv(2048))
        t_resp = time.monotonic() - t0
        s.sendto(
            bytes([0x60, 0x00]) + resp["mid"].to_bytes(2, "big"), ("127.0.0.1", aiocoap_server.port)
        )
    assert (ack["type"], ack["code"], ack["mid"]) == (ACK, 0, 0x2002)
    assert t_ack < 0.5
    assert resp["type"] == CON and resp["code"] == CONTENT and resp["token"] == b"sep"
    assert t_resp >= 0.5


def test_aiocoap_observe_counter(aiocoap_server):
    import aiocoap

    async def fn(ctx):
        req = ctx.request(
            aiocoap.Message(code=aiocoap.GET, uri=aiocoap_server.uri + "/counter", observe=0)
        )
        first = await req.response
        values = [int(first.payload)]
        async for n in req.observation:
            values.append(int(n.payload))
            if len(values) >= 4:
                break
        req.observation.cancel()
        return first, values

    t0 = time.monotonic()
    first, values = run_client(fn, timeout=2.0)
    assert time.monotonic() - t0 < 2.5
    assert first.opt.observe is not None
    assert len(values) >= 4  # the first response and three notifications
    assert values == sorted(values) and len(set(values)) == len(values)


def test_aiocoap_server_stops_cleanly(aiocoap_server):
    out = aiocoap_server.stop()
    assert aiocoap_server.p.returncode == 0, out
    assert out.startswith("ready")


# -- the lossy relay -----------------------------------------------------------


def test_relay_lossless_forwards_con_get(aiocoap_server):
    with (
        LossyRelay(("127.0.0.1", aiocoap_server.port), loss=0.0, seed=1) as relay,
        udp_socket(2.0) as s,
    ):
        assert relay.uri == f"coap://127.0.0.1:{relay.port}"
        s.sendto(coap_request(GET, 0x3003, b"tk", "/hello"), relay.address)
        m = parse(s.recv(2048))
        # the relay's own stats settle once the answer has gone out
        stats = relay.snapshot()
    assert (m["type"], m["code"], m["mid"], m["token"]) == (ACK, CONTENT, 0x3003, b"tk")
    assert m["payload"] == b"Hello, world!"
    assert stats[C2S] == {"forwarded": 1, "dropped": 0, "duplicated": 0}
    assert stats[S2C] == {"forwarded": 1, "dropped": 0, "duplicated": 0}


def test_relay_lossless_carries_aiocoap_blockwise(aiocoap_server):
    import aiocoap

    with LossyRelay(("127.0.0.1", aiocoap_server.port), loss=0.0) as relay:

        async def fn(ctx):
            req = aiocoap.Message(code=aiocoap.GET, uri=relay.uri + "/big")
            return await ctx.request(req).response

        r = run_client(fn)
        stats = relay.snapshot()
    assert r.payload == BIG
    assert stats[C2S]["forwarded"] >= 118 and stats[S2C]["forwarded"] >= 118


def test_relay_total_loss_drops_everything(aiocoap_server):
    with (
        LossyRelay(("127.0.0.1", aiocoap_server.port), loss=1.0, seed=2) as relay,
        udp_socket(0.3) as s,
    ):
        for mid in range(5):
            s.sendto(coap_request(GET, mid, b"x", "/hello"), relay.address)
        with pytest.raises(TimeoutError):
            s.recv(2048)
        stats = relay.snapshot()
    assert stats[C2S] == {"forwarded": 0, "dropped": 5, "duplicated": 0}
    assert stats[S2C] == {"forwarded": 0, "dropped": 0, "duplicated": 0}


def test_relay_loss_rate_per_direction():
    n = 500
    with (
        EchoServer() as echo,
        LossyRelay(echo.address, loss=0.2, seed=12345) as relay,
        udp_socket() as s,
    ):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        got = []
        for i in range(n):
            s.sendto(i.to_bytes(4, "big"), relay.address)
            if i % 25 == 24:  # pace the bursts so no kernel buffer overflows
                got += drain(s, quiet=0.005, limit=0.05)
        got += drain(s, quiet=0.2)
        stats = relay.snapshot()
    up, down = stats[C2S], stats[S2C]
    assert up["forwarded"] + up["dropped"] == n
    assert echo.received == up["forwarded"]
    assert down["forwarded"] + down["dropped"] == up["forwarded"]
    assert len(got) == down["forwarded"]
    for counts in (up, down):
        rate = counts["dropped"] / (counts["forwarded"] + counts["dropped"])
        assert 0.1 <= rate <= 0.3, stats


def test_relay_seed_reproduces_the_drops():
    def run(seed):
        # A sink that never answers: only client->server draws, so order is fixed.
        with (
            udp_socket(0.2) as sink,
            LossyRelay(sink.getsockname(), loss=0.5, seed=seed) as relay,
            udp_socket() as s,
        ):
            for i in range(100):
                s.sendto(bytes([i]), relay.address)
            passed = drain(sink, quiet=0.1)
            stats = relay.snapshot()
        assert len(passed) == stats[C2S]["forwarded"]
        return passed

    first = run(99)
    assert 20 < len(first) < 80
    assert run(99) == first
    assert run(100) != first


def test_relay_keeps_clients_apart():
    with (
        EchoServer() as echo,
        LossyRelay(echo.address, loss=0.0) as relay,
        udp_socket() as a,
        udp_socket() as b,
    ):
        for i in range(20):
            a.sendto(b"a%d" % i, relay.address)
            b.sendto(b"b%d" % i, relay.address)
        got_a, got_b = drain(a), drain(b)
        assert relay.clients == 2
    assert sorted(got_a) == sorted(b"a%d" % i for i in range(20))
    assert sorted(got_b) == sorted(b"b%d" % i for i in range(20))


def test_relay_duplicates():
    with (
        EchoServer() as echo,
        LossyRelay(echo.address, loss=0.0, duplicate=1.0) as relay,
        udp_socket() as s,
    ):
        for i in range(10):
            s.sendto(bytes([i]), relay.address)
        got = drain(s)
        stats = relay.snapshot()
    # each way doubles: 10 sent, 20 reach the echo, 40 come back
    assert echo.received == 20 and len(got) == 40
    assert stats[C2S] == {"forwarded": 10, "dropped": 0, "duplicated": 10}
    assert stats[S2C] == {"forwarded": 20, "dropped": 0, "duplicated": 20}


def test_relay_delay_reorders_but_loses_nothing():
    with (
        EchoServer() as echo,
        LossyRelay(echo.address, loss=0.0, delay=0.05, seed=3) as relay,
        udp_socket() as s,
    ):
        for i in range(50):
            s.sendto(bytes([i]), relay.address)
        got = drain(s, quiet=0.3)
    assert sorted(got) == [bytes([i]) for i in range(50)]
    assert got != sorted(got)


def test_relay_drop_hook_is_deterministic():
    seen = []

    def drop_first_reply(direction, data):
        seen.append(direction)
        return direction == S2C and seen.count(S2C) == 1

    with (
        EchoServer() as echo,
        LossyRelay(echo.address, loss=0.0, drop=drop_first_reply) as relay,
        udp_socket(0.3) as s,
    ):
        s.sendto(b"one", relay.address)
        with pytest.raises(TimeoutError):
            s.recv(16)
        s.sendto(b"two", relay.address)
        assert s.recv(16) == b"two"
        stats = relay.snapshot()
    assert stats[S2C]["dropped"] == 1 and stats[S2C]["forwarded"] == 1


def test_relay_stop_is_prompt():
    with EchoServer() as echo:
        relay = LossyRelay(echo.address, loss=0.0).start()
        with udp_socket() as s:
            s.sendto(b"ping", relay.address)
            assert s.recv(16) == b"ping"
        t0 = time.monotonic()
        relay.stop()
        assert time.monotonic() - t0 < 0.5
        assert not relay._thread.is_alive()
        relay.stop()  # twice is harmless
        with pytest.raises(RuntimeError):
            relay.start()
