"""RFC 7641 §4.5 on the wire: one CON notification in flight per observer,
replaced by newer states; NON pacing; observers capped; an unresponsive
observer is no amplifier; per-route settings; plain follow-up blocks."""

from __future__ import annotations

import socket
import time

import pytest

import greencoap
from greencoap import Client, Code, Router, Server, Type
from greencoap.message import Message
from greencoap.options import OptionNumber as O

pytestmark = pytest.mark.timeout(60)


def fast_router(interval: float = 0.01, **attrs) -> Router:
    router = Router()

    @router.get("/fast", **attrs)
    def fast(request):
        n = 0
        while True:
            yield str(n)
            n += 1
            greencoap.sleep(interval)

    return router


def register(token: bytes = b"ob", path: str = "fast", mid: int = 1) -> bytes:
    return Message(
        Type.CON, Code.GET, mid, token, [(O.OBSERVE, b""), (O.URI_PATH, path.encode())]
    ).encode()


def collect(hub, port: int, seconds: float, ack: str = "never", first: bytes | None = None):
    """Register, then for ``seconds`` receive; ``ack``: "never", "all" or
    "late" (ACK only a CON's retransmission).  Returns the messages."""

    def run():
        got, seen = [], set()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.05)
            s.sendto(first or register(), ("127.0.0.1", port))
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                try:
                    data = s.recvfrom(4096)[0]
                except TimeoutError:
                    continue
                m = Message.decode(data)
                got.append((time.monotonic(), m))
                if m.mtype == Type.CON:
                    again = m.mid in seen
                    seen.add(m.mid)
                    if ack == "all" or (ack == "late" and again):
                        s.sendto(Message(Type.ACK, Code.EMPTY, m.mid).encode(), ("127.0.0.1", port))
        return got

    return hub.run_in_thread(run, timeout=seconds + 20)


def test_an_observer_that_never_acks_gets_one_con_and_its_retransmissions(hub):
    """A 29-byte registration that never ACKs, to a resource changing every
    10 ms: the first notification is a CON; newer states replace it in its
    retransmissions (new MID, newer Observe value), nothing else goes out,
    and the observer is dropped when the CON times out."""
    srv = Server(
        fast_router(),
        host="127.0.0.1",
        port=0,
        ack_timeout=0.2,
        ack_random_factor=1.0,
        max_retransmit=3,
        echo_factor=None,
    ).start()
    try:
        got = collect(hub, srv.port, 3.5)
        msgs = [m for _, m in got]
        registration, *notes = msgs
        assert registration.mtype == Type.ACK and registration.payload == b"0"
        assert all(m.mtype == Type.CON for m in notes), [m.mtype for m in notes]
        assert len(notes) == 4  # the CON and its 3 retransmissions: 5 datagrams in all, not 300
        observes = [m.observe for m in notes]
        assert (
            observes == sorted(observes) and len(set(observes)) == 4
        )  # the newest state each time
        assert len({m.mid for m in notes}) == 4  # each replacement has its own MID
        assert int(notes[-1].payload) > int(notes[0].payload) + 10
        assert srv.stats["observers"] == 0 and srv.stats["observers_dropped_timeout"] == 1
        assert srv.stats["notifications_replaced"] >= 3
    finally:
        srv.stop()


def test_a_thousand_silent_registrations_stay_small(hub):
    """1,000 registrations (distinct tokens, one peer... and beyond the
    per-peer cap, plain answers) that never ACK: bounded notifications and
    state, not gigabytes."""
    srv = Server(
        fast_router(),
        host="127.0.0.1",
        port=0,
        ack_timeout=0.2,
        ack_random_factor=1.0,
        max_retransmit=2,
        echo_factor=None,
        max_observers_per_peer=50,
    ).start()
    try:

        def run():
            n = 0
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(0.05)
                for i in range(1000):
                    s.sendto(register(i.to_bytes(2, "big"), mid=i), ("127.0.0.1", srv.port))
                end = time.monotonic() + 2.5
                while time.monotonic() < end:
                    try:
                        s.recvfrom(4096)
                        n += 1
                    except TimeoutError:
                        pass
            return n

        received = hub.run_in_thread(run, timeout=30)
        stats = srv.stats
        assert stats["observe_refused"] == 950 and stats["observe_registrations"] == 50
        assert received <= 1000 + 50 * 4, (
            received
        )  # answers + each observer's CON (re)transmissions
        assert srv.table_sizes()["observers"] <= 50
    finally:
        srv.stop()


def test_nons_are_paced_to_one_per_round_trip(hub):
    """An observer that ACKs: after the first CON (its round trip is
    measured) the NON notifications follow, each state the newest."""
    srv = Server(fast_router(0.005), host="127.0.0.1", port=0, echo_factor=None).start()
    try:
        got = collect(hub, srv.port, 1.0, ack="all")
        notes = [m for _, m in got][1:]
        assert notes[0].mtype == Type.CON
        assert any(m.mtype == Type.NON for m in notes)
        observes = [m.observe for m in notes]
        assert observes == sorted(observes)
        obs = next(iter(srv.observers.by_key.values()), None)
        assert obs is not None and obs.rtt is not None and obs.rtt < 0.1
    finally:
        srv.stop()


def test_without_a_round_trip_estimate_nons_go_every_three_seconds(hub):
    """The first CON is ACKed only after a retransmission (no unambiguous RTT
    sample, Karn): the next NONs are paced at the RFC's 3 s."""
    srv = Server(
        fast_router(0.01),
        host="127.0.0.1",
        port=0,
        ack_timeout=0.1,
        ack_random_factor=1.0,
        echo_factor=None,
    ).start()
    try:
        got = collect(hub, srv.port, 2.5, ack="late")
        notes = [(t, m) for t, m in got][1:]
        nons = [t for t, m in notes if m.mtype == Type.NON]
        assert len(nons) <= 2, [m.mtype for _, m in notes]
    finally:
        srv.stop()


def test_per_route_confirmable_notifications(hub):
    router = fast_router(0.02, notifications="con")
    srv = Server(router, host="127.0.0.1", port=0, echo_factor=None).start()
    try:
        notes = [m for _, m in collect(hub, srv.port, 0.6, ack="all")][1:]
        assert len(notes) >= 5 and all(m.mtype == Type.CON for m in notes)
    finally:
        srv.stop()


def test_per_route_con_every(hub):
    router = fast_router(0.005, con_every=3)
    srv = Server(router, host="127.0.0.1", port=0, echo_factor=None).start()
    try:
        notes = [m for _, m in collect(hub, srv.port, 0.6, ack="all")][1:]
        kinds = [m.mtype for m in notes]
        assert Type.NON in kinds and kinds.count(Type.CON) >= len(kinds) // 3 - 1
        assert "con_every" not in srv.router.links()[0]
    finally:
        srv.stop()


def test_push_handler_sees_why_it_runs_and_hears_of_drops(hub):
    router = Router()
    seen, dropped = [], []

    def gone(request, why):
        dropped.append((request.path, why))

    @router.get("/state", observable=True, on_observer_dropped=gone)
    def read(request):
        seen.append(request.observing)
        return "s"

    srv = Server(router, host="127.0.0.1", port=0).start()
    try:
        with Client(timeout=5) as c:
            assert c.get(f"coap://127.0.0.1:{srv.port}/state").text == "s"
            with c.observe(f"coap://127.0.0.1:{srv.port}/state") as obs:
                items = obs.iter(timeout=3)
                next(items)
                srv.notify("/state")
                next(items)
            greencoap.sleep(0.3)  # the cancel (GET Observe=1) reached the server
        assert seen == [None, "register", "notify", None]
        assert dropped == [("/state", "deregistered")]
    finally:
        srv.stop()


def test_a_format_the_observer_cannot_accept_ends_it_with_4_06(hub):
    router = Router()
    fmt = {"ct": 0}

    @router.get("/doc", observable=True)
    def doc(request):
        from greencoap import Response

        return Response(Code.CONTENT, b"x", content_format=fmt["ct"])

    srv = Server(router, host="127.0.0.1", port=0).start()
    try:
        with Client(timeout=5) as c:
            obs = c.observe(f"coap://127.0.0.1:{srv.port}/doc", options=[(O.ACCEPT, b"")])
            items = obs.iter(timeout=3)
            assert next(items).code == Code.CONTENT
            fmt["ct"] = 50  # JSON now; the observer asked for text/plain
            srv.notify("/doc")
            last = next(items)
            assert last.code == Code.NOT_ACCEPTABLE
            assert list(items) == []
        assert srv.stats["observers"] == 0
    finally:
        srv.stop()


def test_later_blocks_of_a_large_notification_carry_no_observe(hub):
    router = Router()

    @router.get("/big")
    def big(request):
        yield "a" * 3000
        while True:
            greencoap.sleep(1)
            yield "b" * 3000

    srv = Server(router, host="127.0.0.1", port=0, echo_factor=None).start()
    try:

        def run():
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(2)
                s.sendto(register(b"bg", "big"), ("127.0.0.1", srv.port))
                first = Message.decode(s.recvfrom(4096)[0])
                follow = Message(
                    Type.CON,
                    Code.GET,
                    9,
                    b"f2",
                    [(O.URI_PATH, b"big"), (O.BLOCK2, bytes((0x16,)))],
                ).encode()
                s.sendto(follow, ("127.0.0.1", srv.port))
                return first, Message.decode(s.recvfrom(4096)[0])

        first, second = hub.run_in_thread(run, timeout=20)
        assert first.observe is not None and first.block2.num == 0
        assert second.block2.num == 1 and second.observe is None
    finally:
        srv.stop()
