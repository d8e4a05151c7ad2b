"""io_uring backend specifics: buffer-ring exhaustion and re-arming, batching,
address conversion, ring setup flags; and datagram size limits on both hubs."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from greencoap import Client, Code
from greencoap.backends import MAX_DATAGRAM

from .conftest import hub_for, require_or_skip, uring_usable


@pytest.fixture
def uring_hub():
    reason = uring_usable()
    require_or_skip(reason is None, f"io_uring ({reason})", "GREENCOAP_REQUIRE_URING")
    yield from hub_for("uring")


def test_addresses_convert_both_ways():
    require_or_skip(uring_usable() is None, "io_uring", "GREENCOAP_REQUIRE_URING")
    from greencoap.uring_hub import sockaddr_to_tuple, tuple_to_sockaddr

    for addr in [
        ("127.0.0.1", 5683),
        ("::1", 1, 0, 0),
        ("::ffff:10.0.0.1", 65535, 0, 0),
        ("fe80::1", 5683, 7, 2),
    ]:
        sa = tuple_to_sockaddr(addr)
        assert len(sa) == 28
        assert sockaddr_to_tuple(sa) == addr


def test_setup_flags_prefer_defer_taskrun(uring_hub):
    flags = uring_hub.io.setup_flags
    single_issuer, defer, coop = 1 << 12, 1 << 13, 1 << 8
    # 6.1+ kernels take SINGLE_ISSUER|DEFER_TASKRUN, older ones COOP_TASKRUN
    assert (flags & (single_issuer | defer)) == (single_issuer | defer) or flags & coop


@pytest.fixture
def small_ring(monkeypatch):
    monkeypatch.setenv("GREENCOAP_URING_BUFFERS", "16")
    reason = uring_usable()
    require_or_skip(reason is None, f"io_uring ({reason})", "GREENCOAP_REQUIRE_URING")
    yield from hub_for("uring")


def test_burst_larger_than_the_buffer_ring_is_received_whole(small_ring):
    """More datagrams arrive at once than there are provided buffers: the
    multishot recv ends with ENOBUFS, is re-armed, and nothing is lost."""
    from greencoap.endpoint import make_udp_socket, set_buffer_sizes

    uring_hub = small_ring
    assert uring_hub.io.nbufs == 16

    sock = make_udp_socket("127.0.0.1", 0)
    set_buffer_sizes(sock, 32 * 1024 * 1024)
    port = sock.getsockname()[1]
    got = []
    ch = uring_hub.io.open_channel(sock, lambda batch: got.extend(batch))
    n = 3000
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 * 1024 * 1024)

    def blast():
        for i in range(n):
            sender.sendto(i.to_bytes(4, "big"), ("127.0.0.1", port))

    def block_hub():
        # keep the hub away from io_uring_enter while the burst piles up
        t = threading.Thread(target=blast)
        t.start()
        t.join()
        time.sleep(0.05)

    before = uring_hub.io.statistics()
    uring_hub.run_callback(block_hub)
    from greencoap import sleep

    deadline = time.monotonic() + 10
    while len(got) < n and time.monotonic() < deadline:
        sleep(0.01)
    after = uring_hub.io.statistics()
    ch.close()
    sock.close()
    sender.close()
    assert sorted(int.from_bytes(d, "big") for d, _ in got) == list(range(n))
    assert after["enobufs"] > before["enobufs"] and after["rearms"] > before["rearms"]
    assert len({a for _, a in got}) == 1


def test_datagram_size_limit_on_both_hubs(hub, server):
    from greencoap.codes import Type
    from greencoap.message import Message

    body = bytes(range(256)) * 15  # 3,840 bytes: one datagram within MAX_DATAGRAM
    req = Message(Type.CON, Code.POST, 7, b"t", [(11, b"echo")], body).encode()
    big = Message(Type.CON, Code.POST, 8, b"u", [(11, b"echo")], b"x" * MAX_DATAGRAM).encode()

    def raw():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            s.sendto(big, ("127.0.0.1", server.port))  # over the limit: dropped
            s.sendto(req, ("127.0.0.1", server.port))
            return s.recvfrom(65535)[0]

    reply = Message.decode(hub.run_in_thread(raw, timeout=10))
    # the 3,840-byte datagram arrived whole: the echo (served block-wise, as it is
    # larger than the server's block size) announces all of it and starts right
    assert reply.mid == 7 and reply.code == Code.CONTENT and reply.size2 == len(body)
    assert reply.payload == body[: len(reply.payload)] and reply.block2.more
    with Client(timeout=5) as c:  # the oversized datagram was dropped; still serving
        assert c.get(server.uri + "/hello").ok


@pytest.mark.parametrize("count", [1, 3])
def test_a_failed_send_is_counted_and_costs_only_itself(uring_hub, count):
    """One turn's sends, alone (the one-datagram path) or in a batch: a
    datagram the kernel refuses (UDP to port 0: EINVAL) is counted as a send
    error and the others of the turn still leave."""
    from greencoap import sleep
    from greencoap.endpoint import make_udp_socket

    sock = make_udp_socket("127.0.0.1", 0)
    ch = uring_hub.io.open_channel(sock, lambda batch: None)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.settimeout(2.0)
    try:
        before = uring_hub.io.statistics()["send_errors"]
        ch.sendto(b"bad", ("127.0.0.1", 0))
        for i in range(count - 1):
            ch.sendto(b"good%d" % i, sink.getsockname())
        deadline = time.monotonic() + 5
        while uring_hub.io.statistics()["send_errors"] == before and time.monotonic() < deadline:
            sleep(0.01)
        assert uring_hub.io.statistics()["send_errors"] == before + 1
        got = sorted(sink.recv(64) for _ in range(count - 1))
        assert got == [b"good%d" % i for i in range(count - 1)]
        ch.sendto(b"alone, whole", sink.getsockname())  # a later turn's one datagram
        sleep(0.01)
        assert sink.recv(64) == b"alone, whole"
    finally:
        ch.close()
        sock.close()
        sink.close()
