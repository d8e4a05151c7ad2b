"""The io_uring C core at scale and at its edges: thousands of sockets on one
ring (slots grow, are reused after close), sockets whose receive dies, sends
in flight at close, and the constants shared with Python."""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from greencoap.hub import sleep

from .conftest import hub_for, require_or_skip, uring_usable

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def uring_hub():
    reason = uring_usable()
    require_or_skip(reason is None, f"io_uring ({reason})", "GREENCOAP_REQUIRE_URING")
    yield from hub_for("uring")


@pytest.fixture
def many_fds():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 16384)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    yield want
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _wait_for(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        sleep(0.01)
    return cond()


def test_thousands_of_sockets_on_one_ring(uring_hub, many_fds):
    """3,000 sockets (the old core stopped at 256) each receive their datagram;
    closed slots are reused."""
    n = min(3000, many_fds - 200)
    io = uring_hub.io
    got: dict[int, list] = {}
    socks, chans = [], []
    for i in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        chans.append(io.open_channel(s, lambda batch, i=i: got.setdefault(i, []).extend(batch)))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        for i, s in enumerate(socks):
            tx.sendto(b"to %d" % i, s.getsockname())

        # (its own datagram among what it got: with tests running side by side a
        # freed port of another test's may still see that test's retransmissions)
        def own(i: int) -> bool:
            return any(d == b"to %d" % i for d, _ in got.get(i, ()))

        assert _wait_for(lambda: all(own(i) for i in range(n))), (
            f"{sum(own(i) for i in range(n))} of {n} sockets received theirs"
        )
    assert io.statistics()["sockets"] == n
    slots = {c.slot for c in chans}
    assert len(slots) == n
    for c, s in zip(chans[:100], socks[:100], strict=True):
        c.close()
        s.close()
    sleep(0.05)  # the cancelled receives complete: their slots are free
    again = []
    for _ in range(100):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        again.append((s, io.open_channel(s, lambda batch: None)))
    assert {c.slot for _, c in again} <= {c.slot for c in chans[:100]}  # reused
    for c, s in zip(chans[100:], socks[100:], strict=True):
        c.close()
        s.close()
    for s, c in again:
        c.close()
        s.close()


def test_a_socket_whose_receive_dies_is_not_rearmed_forever(uring_hub):
    """A registration whose receive fails for good (here a pipe, which the C
    core is handed directly, bypassing the Python check): its recv ends with
    ENOTSOCK; the core marks it dead instead of re-arming it every turn (a
    busy loop)."""
    from greencoap.uring_hub import Channel, lib

    io = uring_hub.io
    r, w = os.pipe()
    try:
        slot = lib.gc_add_socket(io._ring, r, 0)
        assert slot >= 0
        before = io.statistics()
        for _ in range(50):
            io.poll(0.001)
        after = io.statistics()
        assert after["rearms"] - before["rearms"] <= 1
        assert after["recv_errors"] - before["recv_errors"] == 1
        out = io._slot_stats
        lib.gc_sock_stats(io._ring, slot, out)
        assert out[4] == 1  # recv_dead
        assert lib.gc_remove_socket(io._ring, slot) == 0
        assert Channel.stats  # the Python side reads the same counter
    finally:
        os.close(r)
        os.close(w)


def test_only_datagram_sockets_can_be_registered(uring_hub):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s, pytest.raises(ValueError):
        uring_hub.io.open_channel(s, lambda batch: None)


def test_sends_in_flight_return_to_zero(uring_hub):
    io = uring_hub.io
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.bind(("127.0.0.1", 0))
    ch = io.open_channel(tx, lambda batch: None)
    for _ in range(2000):
        ch.sendto(b"x" * 100, rx.getsockname())
    assert _wait_for(
        lambda: io.statistics()["sends"] >= 2000 and io.statistics()["inflight_sends"] == 0
    )
    ch.close()
    tx.close()
    rx.close()


def test_a_poll_is_not_woken_by_its_own_sends(uring_hub):
    """A blocking poll returns for what the hub acts on (a datagram, a wake-up
    from another thread) or at its timeout, not for the completion of the
    sends it submitted: a client waiting for a reply would otherwise pay a
    second loop turn (and a second io_uring_enter) per request."""
    import threading

    io = uring_hub.io
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.bind(("127.0.0.1", 0))
    got = []
    ch = io.open_channel(tx, got.extend)
    try:
        io.poll(0)
        sends = io.statistics()["sends"]
        ch.sendto(b"x" * 20, rx.getsockname())
        t0 = time.monotonic()
        io.poll(0.3)  # only the send completes: the wait goes on to its end
        waited = time.monotonic() - t0
        assert io.statistics()["sends"] == sends + 1 and rx.recv(100) == b"x" * 20
        assert waited >= 0.25, waited

        # a datagram ends the wait (the reply it waited for, after its send)
        ch.sendto(b"ping", rx.getsockname())
        threading.Timer(0.05, lambda: rx.sendto(b"pong", tx.getsockname())).start()
        t0 = time.monotonic()
        io.poll(5.0)
        assert time.monotonic() - t0 < 2.0 and [d for d, _ in got] == [b"pong"]

        # and so does a wake-up from another thread, with a send in flight too
        ch.sendto(b"ping", rx.getsockname())
        threading.Timer(0.05, io.wakeup).start()
        t0 = time.monotonic()
        io.poll(5.0)
        assert time.monotonic() - t0 < 2.0
    finally:
        ch.close()
        tx.close()
        rx.close()


CLOSE_WITH_SENDS = textwrap.dedent(
    """
    import socket
    import greencoap
    from greencoap.hub import get_hub
    hub = get_hub("uring")
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); rx.bind(("127.0.0.1", 0))
    for round in range(20):
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); tx.bind(("127.0.0.1", 0))
        ch = hub.io.open_channel(tx, lambda batch: None)
        for i in range(500):
            ch.sendto(b"y" * 1000, rx.getsockname())
        hub.io.poll(0)  # submitted: in flight in the kernel, or done
        for i in range(500):
            ch.sendto(b"z" * 1000, rx.getsockname())
        hub.destroy()  # queued and in-flight sends are flushed and freed
        tx.close()
        hub = get_hub("uring")
    print("ok")
    """
)


def test_closing_a_ring_with_sends_in_flight(uring_hub):
    """Destroying hubs with sends queued and in flight, 20 times over, under
    glibc's heap checks: no crash, no double free."""
    env = dict(os.environ, MALLOC_CHECK_="3", MALLOC_PERTURB_="165")
    p = subprocess.run(
        [sys.executable, "-c", CLOSE_WITH_SENDS],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr[-2000:]


def test_constants_come_from_the_core(uring_hub):
    from greencoap import pktinfo
    from greencoap import uring_hub as uh

    assert uh.NAMELEN == uh.lib.GC_NAMELEN == 28
    assert uh.META == uh.lib.GC_META
    assert uh.lib.GC_LOCAL_REC == len(pktinfo.NO_RECORD)
    assert uh.PKTINFO == uh.lib.GC_PKTINFO_FLAG
