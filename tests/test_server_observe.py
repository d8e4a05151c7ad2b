"""Server-side Observe (RFC 7641): generator handlers, push-style notify(),
deregistration, RST and unACKed CON notifications, and real clients."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import threading
import time

import greencoap
from greencoap import Client, Code, Router, Server, Type
from greencoap.message import Message

from .conftest import which_or_skip


def observe_req(mid, token, path, value=0, query=()):
    opts = [(6, b"" if value == 0 else bytes((value,)))] + [(11, p.encode()) for p in path]
    opts += [(15, q.encode()) for q in query]
    return Message(Type.CON, Code.GET, mid, token, opts).encode()


def recv_acking(s, send) -> Message:
    """The next message, ACKing it when it is a CON (as a real observer does)."""
    m = Message.decode(s.recvfrom(2048)[0])
    if m.mtype == Type.CON:
        send(Message(Type.ACK, Code.EMPTY, m.mid).encode())
    return m


def raw_session(hub, port, script, wait=3.0):
    """Run ``script(sock, send)`` in a thread with a plain socket; return its result."""

    def run():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(wait)
            return script(s, lambda d: s.sendto(d, ("127.0.0.1", port)))

    return hub.run_in_thread(run, timeout=wait + 20)


def test_generator_notifications_and_deregistration(hub, server):
    def script(s, send):
        send(observe_req(1, b"ob", ("counter",), query=("interval=0.05",)))
        msgs = [recv_acking(s, send) for _ in range(5)]
        send(observe_req(2, b"ob", ("counter",), value=1))  # GET Observe=1: deregister
        end = time.monotonic() + 0.5
        later = []
        s.settimeout(0.1)
        while time.monotonic() < end:
            try:
                later.append(Message.decode(s.recvfrom(2048)[0]))
            except TimeoutError:
                pass
        return msgs, later

    msgs, later = raw_session(hub, server.port, script)
    first, *notes = msgs
    assert first.mtype == Type.ACK and first.mid == 1 and first.payload == b"0"
    seqs = [m.observe for m in msgs]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    assert [m.payload for m in notes] == [b"1", b"2", b"3", b"4"]
    assert all(m.token == b"ob" for m in msgs)
    # the deregistration is answered without Observe and notifications stop
    answers = [m for m in later if m.mid == 2]
    assert answers and answers[0].observe is None
    assert len([m for m in later if m.mid != 2]) <= 1  # at most one already in flight
    assert server.stats["observers"] == 0


def test_rst_to_a_notification_drops_the_observer(hub, server):
    def script(s, send):
        send(observe_req(3, b"rs", ("counter",), query=("interval=0.05",)))
        s.recvfrom(2048)
        note = Message.decode(s.recvfrom(2048)[0])
        send(Message(Type.RST, Code.EMPTY, note.mid).encode())
        time.sleep(0.3)
        return note

    raw_session(hub, server.port, script)
    greencoap.sleep(0.1)
    assert server.stats["observers"] == 0
    assert server.stats["observers_dropped_rst"] == 1


def test_unacked_con_notifications_drop_the_observer(hub):
    router = Router()

    @router.get("/fast")
    def fast(request):
        n = 0
        while True:
            yield str(n)
            n += 1
            greencoap.sleep(0.05)

    srv = Server(
        router,
        host="127.0.0.1",
        port=0,
        con_every=1,
        ack_timeout=0.05,
        ack_random_factor=1.0,
        max_retransmit=2,
    ).start()
    try:

        def script(s, send):
            send(observe_req(4, b"un", ("fast",)))
            got = []
            end = time.monotonic() + 1.5
            s.settimeout(0.1)
            while time.monotonic() < end:  # never ACK anything
                try:
                    got.append(Message.decode(s.recvfrom(2048)[0]))
                except TimeoutError:
                    pass
            return got

        got = raw_session(hub, srv.port, script)
        assert any(m.mtype == Type.CON for m in got)
        assert srv.stats["observers"] == 0 and srv.stats["observers_dropped_timeout"] == 1
    finally:
        srv.stop()


def test_push_style_notify_from_another_thread(hub):
    router = Router()
    state = {"v": "a"}

    @router.get("/state", observable=True)
    def read(request):
        return state["v"]

    srv = Server(router, host="127.0.0.1", port=0).start()
    try:
        with Client(timeout=5) as c, c.observe(f"coap://127.0.0.1:{srv.port}/state") as obs:
            items = obs.iter(timeout=3)
            assert next(items).text == "a"

            def change():
                time.sleep(0.1)
                state["v"] = "b"
                srv.notify("/state")

            t = threading.Thread(target=change)
            t.start()
            assert next(items).text == "b"
            t.join()
            state["v"] = "c"
            srv.notify("state")
            assert next(items).text == "c"
    finally:
        srv.stop()


def test_stop_ends_observations_with_5_03(hub):
    from greencoap.demo import build_router

    srv = Server(build_router(), host="127.0.0.1", port=0).start()
    with Client(timeout=5) as c:
        obs = c.observe(f"coap://127.0.0.1:{srv.port}/counter?interval=10")
        items = obs.iter(timeout=3)
        assert next(items).text == "0"
        greencoap.spawn(srv.stop)
        last = next(items)
        assert last.code == Code.SERVICE_UNAVAILABLE
        assert list(items) == []


def test_new_registration_replaces_the_old(hub, server):
    def script(s, send):
        send(observe_req(5, b"rp", ("counter",), query=("interval=5",)))
        s.recvfrom(2048)
        send(observe_req(6, b"rp", ("counter",), query=("interval=5",)))
        return Message.decode(s.recvfrom(2048)[0])

    second = raw_session(hub, server.port, script)
    assert second.mid == 6 and second.payload == b"0"
    assert server.stats["observers"] == 1
    assert server.stats["observers_dropped_replaced"] == 1


def test_libcoap_client_observes_the_demo_counter(hub, demo_proc):
    client = which_or_skip("coap-client-notls")
    out = subprocess.run(
        [client, "-B", "5", "-s", "3", demo_proc.uri + "/counter?interval=0.2"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    values = [int(c) for c in out.stdout if c.isdigit()]  # notifications print back to back
    assert len(values) >= 5 and values[:5] == [0, 1, 2, 3, 4], out


def test_aiocoap_client_observes_and_cancels(hub, demo_proc_no_echo, aiocoap_mod):
    demo_proc = demo_proc_no_echo
    aiocoap = aiocoap_mod

    async def run():
        ctx = await aiocoap.Context.create_client_context()
        try:
            req = aiocoap.Message(
                code=aiocoap.GET, uri=demo_proc.uri + "/counter?interval=0.1", observe=0
            )
            pr = ctx.request(req)
            first = await pr.response
            got = [first.payload]
            async for note in pr.observation:
                got.append(note.payload)
                if len(got) == 5:
                    pr.observation.cancel()
                    break
            return got
        finally:
            await ctx.shutdown()

    got = asyncio.run(asyncio.wait_for(run(), 20))
    assert got == [b"0", b"1", b"2", b"3", b"4"]


def test_large_notifications_go_block_wise(hub):
    router = Router()

    @router.get("/big")
    def big(request):
        n = 0
        while True:
            yield f"{n:04d}" * 700  # 2,800 bytes: three 1,024-byte blocks
            n += 1
            greencoap.sleep(0.1)

    srv = Server(router, host="127.0.0.1", port=0).start()
    try:
        with Client(timeout=5) as c, c.observe(f"coap://127.0.0.1:{srv.port}/big") as obs:
            seen = []
            for r in obs.iter(timeout=3):
                assert len(r.payload) == 2800 and r.payload == r.payload[:4] * 700
                seen.append(int(r.payload[:4]))
                if len(seen) == 3:
                    break
            assert seen == sorted(seen) and len(set(seen)) == 3
        assert srv.stats["block2_served"] >= 6
    finally:
        srv.stop()
