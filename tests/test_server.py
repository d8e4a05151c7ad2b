"""The server end to end: raw datagrams, bad input, interop with libcoap and aiocoap."""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import time

import pytest

from greencoap import Client, CoapError, Code, Response, Router, Server, Type
from greencoap.message import Message

from .conftest import which_or_skip


def exchange(hub, port, datagrams, wait=0.5, expect=None):
    """Send raw datagrams from a plain socket (in a thread, so the hub keeps
    serving) and return what came back within ``wait`` s (or once ``expect``
    answers arrived)."""

    def run():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.05)
            for d in datagrams:
                s.sendto(d, ("127.0.0.1", port))
            got = []
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and (expect is None or len(got) < expect):
                try:
                    got.append(s.recvfrom(2048)[0])
                except TimeoutError:
                    pass
            return got

    return hub.run_in_thread(run, timeout=wait + 5)


def req(mtype=Type.CON, code=Code.GET, mid=0x1234, token=b"\x01\x02", path=("hello",), opts=()):
    m = Message(mtype, code, mid, token, [(11, p.encode()) for p in path] + list(opts))
    return m.encode()


def test_piggybacked_response_echoes_mid_and_token(hub, server):
    (data,) = exchange(hub, server.port, [req()], expect=1)
    m = Message.decode(data)
    assert (m.mtype, m.code, m.mid, m.token) == (Type.ACK, Code.CONTENT, 0x1234, b"\x01\x02")
    assert m.payload == b"Hello, world!"


def test_ping_gets_rst(hub, server):
    (data,) = exchange(hub, server.port, [b"\x40\x00\xbe\xef"], expect=1)
    assert data == b"\x70\x00\xbe\xef"
    assert server.stats["pings"] == 1


def test_malformed_con_gets_rst_and_malformed_non_is_dropped(hub, server):
    bad_con = b"\x48\x01\x00\x07"  # TKL 8 but no token
    bad_non = b"\x58\x01\x00\x08"
    got = exchange(hub, server.port, [bad_con, bad_non, b"\xff", b""], wait=0.4)
    assert got == [b"\x70\x00\x00\x07"]
    assert server.stats["malformed"] >= 3
    # still serving
    (data,) = exchange(hub, server.port, [req(mid=9)], expect=1)
    assert Message.decode(data).code == Code.CONTENT


def test_unrecognised_critical_option_gets_4_02_elective_is_ignored(hub, server):
    (data,) = exchange(hub, server.port, [req(opts=[(65001, b"x")])], expect=1)
    m = Message.decode(data)
    assert m.code == Code.BAD_OPTION and b"65001" in m.payload
    (data,) = exchange(hub, server.port, [req(mid=2, opts=[(65000, b"x")])], expect=1)
    assert Message.decode(data).code == Code.CONTENT
    assert server.stats["bad_option"] == 1


def test_not_found_and_method_not_allowed(hub, server):
    a, b = (
        Message.decode(d)
        for d in exchange(
            hub,
            server.port,
            [req(mid=1, path=("nope",)), req(mid=2, code=Code.DELETE, path=("hello",))],
            expect=2,
        )
    )
    codes = {a.mid: a.code, b.mid: b.code}
    assert codes == {1: Code.NOT_FOUND, 2: Code.METHOD_NOT_ALLOWED}


def test_duplicate_con_answered_from_cache_handler_runs_once(hub):
    calls = []
    router = Router()

    @router.post("/count")
    def count(request):
        calls.append(1)
        return str(len(calls))

    srv = Server(router, host="127.0.0.1", port=0).start()
    try:
        d = req(code=Code.POST, path=("count",), mid=77)
        got = exchange(hub, srv.port, [d, d, d], expect=3)
        assert len(got) == 3 and got[0] == got[1] == got[2]
        assert len(calls) == 1
        assert srv.stats["duplicates"] == 2
    finally:
        srv.stop()


def test_handler_errors_become_codes(hub, caplog):
    router = Router()

    @router.get("/boom")
    def boom(request):
        raise RuntimeError("kaboom")

    @router.get("/teapot")
    def teapot(request):
        raise CoapError(Code.FORBIDDEN, "no tea")

    @router.get("/json/:x")
    def js(request, x):
        return {"x": x, "q": request.query}

    @router.put("/none")
    def none(request):
        return None

    srv = Server(router, host="127.0.0.1", port=0).start()
    uri = f"coap://127.0.0.1:{srv.port}"
    try:
        with Client(timeout=5) as c, caplog.at_level(logging.ERROR, "greencoap.server"):
            r = c.get(uri + "/boom")
            assert r.code == Code.INTERNAL_SERVER_ERROR
            assert "kaboom" in caplog.text and "Traceback" in caplog.text
            r = c.get(uri + "/teapot")
            assert r.code == Code.FORBIDDEN and r.text == "no tea"
            r = c.get(uri + "/json/7?a=1&b")
            assert r.content_format == 50 and r.json() == {"x": "7", "q": {"a": "1", "b": ""}}
            assert c.put(uri + "/none", payload=b"z").code == Code.CHANGED
        assert srv.stats["handler_errors"] == 1
    finally:
        srv.stop()


def test_handlers_run_concurrently(hub, server):
    with Client(timeout=5) as c:
        t0 = time.monotonic()
        from greencoap import joinall, spawn

        gs = [spawn(c.get, server.uri + "/slow?ms=300") for _ in range(50)]
        joinall(gs, timeout=5)
        assert all(g.value.ok for g in gs)
        assert time.monotonic() - t0 < 1.2
        assert c.get(server.uri + "/slow?ms=abc").code == Code.BAD_REQUEST


def test_libcoap_client_against_demo_server(hub, demo_proc):
    client = which_or_skip("coap-client-notls")
    out = subprocess.run(
        [client, "-B", "5", demo_proc.uri + "/hello"], capture_output=True, text=True, timeout=15
    )
    assert out.stdout.strip() == "Hello, world!", out
    out = subprocess.run(
        [client, "-B", "5", "-m", "post", "-e", "over the wire", demo_proc.uri + "/echo"],
        capture_output=True,
        text=True,
        timeout=15,
    )
    assert out.stdout.strip() == "over the wire", out
    out = subprocess.run(
        [client, "-B", "5", "-N", demo_proc.uri + "/sensors/3"],
        capture_output=True,
        text=True,
        timeout=15,
    )
    assert '"id": "3"' in out.stdout, out


def test_aiocoap_client_against_demo_server(hub, demo_proc_no_echo, aiocoap_mod):
    demo_proc = demo_proc_no_echo
    aiocoap = aiocoap_mod

    async def run():
        ctx = await aiocoap.Context.create_client_context()
        try:
            r1 = await ctx.request(
                aiocoap.Message(code=aiocoap.GET, uri=demo_proc.uri + "/hello")
            ).response
            r2 = await ctx.request(
                aiocoap.Message(code=aiocoap.POST, uri=demo_proc.uri + "/echo", payload=b"ai")
            ).response
            r3 = await ctx.request(
                aiocoap.Message(code=aiocoap.GET, uri=demo_proc.uri + "/missing")
            ).response
            return r1, r2, r3
        finally:
            await ctx.shutdown()

    r1, r2, r3 = asyncio.run(asyncio.wait_for(run(), 20))
    assert r1.code == aiocoap.CONTENT and r1.payload == b"Hello, world!"
    assert r2.payload == b"ai"
    assert r3.code == aiocoap.NOT_FOUND


def test_response_from_handler_keeps_options(hub):
    router = Router()

    @router.get("/etag")
    def etag(request):
        return Response(Code.CONTENT, b"v", etag=b"\x01\x02", max_age=30)

    srv = Server(router, host="127.0.0.1", port=0).start()
    try:
        with Client(timeout=5) as c:
            r = c.get(f"coap://127.0.0.1:{srv.port}/etag")
            assert r.etag == b"\x01\x02" and r.max_age == 30
    finally:
        srv.stop()


def test_stop_then_port_is_free(hub):
    srv = Server(Router(), host="127.0.0.1", port=0).start()
    port = srv.port
    srv.stop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", port))


@pytest.mark.parametrize("bad", [b"\x40", b"\x80\x01\x00\x01", b"\x4f\x01\x00\x01"])
def test_garbage_never_kills_the_server(hub, server, bad):
    exchange(hub, server.port, [bad] * 3, wait=0.2)
    (data,) = exchange(hub, server.port, [req(mid=5)], expect=1)
    assert Message.decode(data).payload == b"Hello, world!"


def test_slow_handler_becomes_a_separate_response(hub, server):
    """Empty ACK after separate_delay, then the response as a CON that is
    retransmitted until ACKed (RFC 7252 §5.2.2)."""
    request = req(mid=0x4242, token=b"sep", path=("slow",), opts=[(15, b"ms=1200")])

    def run():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            t0 = time.monotonic()
            s.sendto(request, ("127.0.0.1", server.port))
            ack, _ = s.recvfrom(2048)
            t_ack = time.monotonic() - t0
            first, _ = s.recvfrom(2048)  # the separate response; don't ACK it yet
            again, _ = s.recvfrom(2048)  # so it is retransmitted
            t_again = time.monotonic() - t0
            m = Message.decode(again)
            s.sendto(Message(Type.ACK, Code.EMPTY, m.mid).encode(), ("127.0.0.1", server.port))
            s.settimeout(4)
            try:
                extra = s.recvfrom(2048)[0]
            except TimeoutError:
                extra = None
            return ack, t_ack, first, again, t_again, extra

    ack, t_ack, first, again, t_again, extra = hub.run_in_thread(run, timeout=20)
    assert ack == b"\x60\x00\x42\x42" and 0.4 < t_ack < 1.1
    resp = Message.decode(first)
    assert resp.mtype == Type.CON and resp.token == b"sep" and resp.code == Code.CONTENT
    assert resp.mid != 0x4242 and again == first and t_again > 1.2 + 1.9
    assert extra is None  # ACKed: no more retransmissions
    s = server.stats
    assert s["separate_acks"] == 1 and s["separate_responses"] == 1 and s["responses_acked"] == 1


def test_a_resumed_handler_does_not_take_a_slow_request_unacknowledged(any_hub):
    """A worker whose handler parked and is resumed in the same hub turn as a
    new request arrives must leave that request to a worker the runner
    watches: were the resumed one to take it and park on it, nothing would
    start its separate-ACK timer and its client would retransmit."""
    from greencoap.demo import build_router
    from greencoap.hub import sleep

    router = build_router()

    @router.get("/yield")
    def yielder(request):
        time.sleep(0.1)  # holds the hub: the next datagram waits in the socket
        sleep(0)  # parks; resumed a turn later, after the poll that reads it
        return "yielded"

    srv = Server(router, host="127.0.0.1", port=0).start()
    try:
        first = req(mtype=Type.NON, mid=1, token=b"y", path=("yield",))
        slow = req(mid=2, token=b"s", path=("slow",), opts=[(15, b"ms=1500")])

        def run():
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(0.1)
                t0 = time.monotonic()
                s.sendto(first, ("127.0.0.1", srv.port))
                time.sleep(0.03)
                s.sendto(slow, ("127.0.0.1", srv.port))
                got = []
                while len(got) < 3 and time.monotonic() - t0 < 3:
                    try:
                        data = s.recvfrom(2048)[0]
                    except TimeoutError:
                        continue
                    got.append((Message.decode(data), time.monotonic() - t0))
                return got

        got = any_hub.run_in_thread(run, timeout=10)
    finally:
        srv.stop()
    acks = [t for m, t in got if m.mtype == Type.ACK and m.mid == 2 and m.code == Code.EMPTY]
    assert len(acks) == 1 and acks[0] < 1.1, got  # separate_delay 0.5 s, not a retransmission
    assert [m.payload for m, _ in got if m.code == Code.CONTENT] == [b"yielded", b"slept 1500 ms"]
    assert got[0][1] < 0.5, got  # and the reply of the request that parked is not held back


def test_separate_responses_reach_real_clients(hub, demo_proc):
    client = which_or_skip("coap-client-notls")
    out = subprocess.run(
        [client, "-B", "8", demo_proc.uri + "/slow?ms=1500"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert out.stdout.strip() == "slept 1500 ms", out
    with Client(timeout=5) as c:
        r = c.get(demo_proc.uri + "/slow?ms=1200")
        assert r.text == "slept 1200 ms" and r.mtype == Type.CON
        assert c.stats["retransmissions"] == 0


def test_well_known_core_lists_and_filters_routes(hub, server):
    with Client(timeout=5) as c:
        r = c.get(server.uri + "/.well-known/core")
        assert r.content_format == 40
        links = {link.target: link for link in c.discover(server.uri)}
        hello = links[server.uri + "/hello"]
        assert hello.rt == ["greeting"] and hello.title == "Hello world"
        assert [link.target for link in c.discover(server.uri, rt="temp*")] == [
            server.uri + f"/sensors/{i}" for i in (1, 2, 3)
        ]  # the template /sensors/:id is no resource: its enumeration hook lists them
        assert c.discover(server.uri, href="/ech*")[0].target == server.uri + "/echo"


def test_well_known_core_marks_generators_observable(hub):
    router = Router()

    @router.get("/clock", rt="clock")
    def clock(request):
        yield "tick"

    srv = Server(router, host="127.0.0.1", port=0).start()
    try:
        with Client(timeout=5) as c:
            (link,) = c.discover(f"coap://127.0.0.1:{srv.port}", rt="clock")
            assert link.obs
    finally:
        srv.stop()


def test_requests_on_many_sockets_share_few_worker_greenlets(any_hub):
    """One datagram on each of 200 servers at once: their handlers run one
    after another on one worker greenlet (a handful of greenlet switches in
    all, not two per socket), and a handler that blocks does not hold up the
    others' answers."""
    import greenlet

    from greencoap.hub import sleep

    def whoami(request):
        if request.query.get("slow"):
            sleep(1.0)
        return "ok"

    router = Router()
    router.add("GET", "/w", whoami)
    servers = [Server(router, host="127.0.0.1", port=0).start() for _ in range(200)]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    switches = [0]

    def trace(event, args):
        if event in ("switch", "throw"):
            switches[0] += 1

    try:
        sleep(0.05)  # the servers' receives are armed
        slow = Message(Type.NON, Code.GET, 1, b"slow", [(11, b"w"), (15, b"slow=1")])
        sock.sendto(slow.encode(), ("127.0.0.1", servers[0].port))
        for k, s in enumerate(servers):
            msg = Message(Type.NON, Code.GET, 2 + k, k.to_bytes(2, "big"), [(11, b"w")])
            sock.sendto(msg.encode(), ("127.0.0.1", s.port))
        old = greenlet.settrace(trace)
        try:
            sleep(0.3)
        finally:
            greenlet.settrace(old)
        answered = set()
        while True:
            try:
                reply = Message.decode(sock.recv(64))
            except BlockingIOError:
                break
            if len(reply.token) == 2:
                answered.add(reply.token)
        assert len(answered) == 200  # before the slow handler's 1 s were up
        assert switches[0] < 60, switches  # two per socket would be 400
    finally:
        sock.close()
        for s in servers:
            s.stop()
