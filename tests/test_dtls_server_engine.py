"""Sans-I/O tests of the DTLS server side (greencoap.protocol.dtls.DtlsServer):
stateless HelloVerifyRequest cookies and their rotation, a rebooted peer's new
handshake, the LRU session cap, idle expiry, deadlines and closing.
"""

from __future__ import annotations

import pytest

from greencoap.protocol.dtls import CLOSED, ESTABLISHED, FAILED, HANDSHAKING, DtlsSession
from greencoap.protocol.dtls import messages as m
from greencoap.protocol.dtls.record import (
    DTLS_1_0,
    DTLS_1_2,
    HANDSHAKE,
    encode_plain,
    parse_records,
)
from tests.test_dtls_handshake import (
    PEER,
    Net,
    established_pair,
    make_client,
    make_server,
    rng_bytes,
)


def client_hello(client: DtlsSession) -> bytes:
    """The client's first datagram (its cookieless ClientHello)."""
    client.start(0.0)
    (datagram,) = client.outbox
    client.outbox = []
    return datagram


def with_cookie(hello_datagram: bytes, cookie: bytes) -> bytes:
    """The same ClientHello datagram carrying ``cookie`` (message_seq 1)."""
    (record,), _ = parse_records(hello_datagram)
    ((_, _, _, _, body),) = m.parse_fragments(record[3])
    hello = m.ClientHello.decode(body)
    hello.cookie = cookie
    return encode_plain(HANDSHAKE, DTLS_1_2, 1, m.encode_message(m.CLIENT_HELLO, 1, hello.encode()))


def hvr_cookie(datagram: bytes) -> bytes:
    (record,), ok = parse_records(datagram)
    assert ok and record[0] == HANDSHAKE and record[1] == DTLS_1_0
    ((msg_type, _, _, _, body),) = m.parse_fragments(record[3])
    assert msg_type == m.HELLO_VERIFY_REQUEST
    return m.HelloVerifyRequest.decode(body).cookie


# ---------------------------------------------------------------- cookies


def test_hello_verify_request_is_stateless():
    server = make_server()
    hello = client_hello(make_client())
    session, data = server.receive(hello, PEER, 0.0)
    assert session is None and data == [] and server.sessions == {}
    ((hvr, peer),) = server.outbox
    assert peer == PEER
    (record,), _ = parse_records(hvr)
    assert record[2] == 0  # the ClientHello's record sequence number, echoed
    assert len(hvr_cookie(hvr)) == 16
    assert len(hvr) < len(hello)  # no amplification
    assert server.stats["hello_verify_sent"] == 1 and server.next_deadline() is None


def test_bad_cookie_gets_another_hello_verify_request():
    server = make_server()
    hello = client_hello(make_client())
    session, _ = server.receive(with_cookie(hello, b"x" * 16), PEER, 0.0)
    assert session is None and server.sessions == {}
    assert hvr_cookie(server.outbox[0][0])
    assert server.stats["bad_cookies"] == 1 and server.stats["hello_verify_sent"] == 1


def test_cookie_is_bound_to_the_peer():
    server = make_server()
    hello = client_hello(make_client())
    server.receive(hello, PEER, 0.0)
    cookie = hvr_cookie(server.outbox.pop()[0])
    session, _ = server.receive(with_cookie(hello, cookie), ("198.51.100.7", 1), 0.0)
    assert session is None and server.stats["bad_cookies"] == 1
    session, _ = server.receive(with_cookie(hello, cookie), PEER, 0.0)
    assert session is not None and session.state is HANDSHAKING


@pytest.mark.parametrize("rotations,accepted", [(0, True), (1, True), (2, False)])
def test_cookie_secret_rotation(rotations, accepted):
    server = make_server()
    hello = client_hello(make_client())
    server.receive(hello, PEER, 0.0)
    cookie = hvr_cookie(server.outbox.pop()[0])
    for _ in range(rotations):
        server.rotate_cookie_secret()
    session, _ = server.receive(with_cookie(hello, cookie), PEER, 0.0)
    assert (session is not None) is accepted
    assert len(server.sessions) == int(accepted)


def test_cookie_secret_rotates_with_time():
    server = make_server(cookie_lifetime=30.0)
    hello = client_hello(make_client())
    server.receive(hello, PEER, 0.0)
    cookie = hvr_cookie(server.outbox.pop()[0])
    server.receive(b"garbage", ("203.0.113.9", 9), 31.0)  # not a ClientHello: no rotation
    server.receive(client_hello(make_client(randbytes=rng_bytes(9))), ("203.0.113.9", 9), 31.0)
    server.receive(client_hello(make_client(randbytes=rng_bytes(8))), ("203.0.113.9", 9), 62.0)
    session, _ = server.receive(with_cookie(hello, cookie), PEER, 62.0)
    assert session is None  # two lifetimes later: rejected


# ---------------------------------------------------------------- peer reboot (RFC 6347 §4.2.8)


def test_rebooted_peer_gets_a_new_session():
    net = established_pair()
    old = net.session
    net.settle()
    net.client = make_client(randbytes=rng_bytes(77))  # same address, fresh state
    net.client_got = []
    net.handshake()
    new = net.session
    assert net.client.state is ESTABLISHED and new.state is ESTABLISHED
    assert new is not old and net.server.sessions == {PEER: new}
    stats = net.server.stats
    assert stats["sessions_replaced"] == 1 and stats["sessions_created"] == 2
    assert stats["hello_verify_sent"] == 2
    net.deliver("c2s", net.client.send(b"after reboot"))
    assert net.server_got == [b"after reboot"]


def test_cookieless_hello_leaves_the_old_session_alone():
    net = established_pair()
    old = net.session
    session, data = net.server.receive(client_hello(make_client(randbytes=rng_bytes(5))), PEER, 1.0)
    assert session is old and data == [] and old.state is ESTABLISHED
    assert net.server.sessions == {PEER: old} and net.server.stats["hello_verify_sent"] == 2
    net.server.outbox = []
    net.deliver("c2s", net.client.send(b"still here"))
    assert net.server_got == [b"still here"]


def test_retransmitted_client_hello_does_not_replace_the_session():
    net = Net(make_client(), make_server())
    net.handshake()
    session = net.session
    for direction, i, datagram in net.log:
        if (direction, i) == ("c2s", 1):  # the ClientHello with the cookie
            net.deliver("c2s", datagram)
    assert net.session is session and session.state is ESTABLISHED
    assert net.server.stats["sessions_created"] == 1


# ---------------------------------------------------------------- session table


def handshake_from(server, peer, seed: int, now: float = 0.0) -> Net:
    net = Net(make_client(randbytes=rng_bytes(seed)), server, peer=peer, now=now)
    net.handshake()
    assert net.client.state is ESTABLISHED
    return net


def test_lru_cap_evicts_least_recently_used():
    server = make_server(max_sessions=3)
    nets = [handshake_from(server, ("10.0.0.1", 1000 + i), i) for i in range(3)]
    assert list(server.sessions) == [("10.0.0.1", 1000 + i) for i in range(3)]
    nets[0].deliver("c2s", nets[0].client.send(b"touch"))  # peer 0 is now the most recent
    handshake_from(server, ("10.0.0.1", 1003), 3)
    assert list(server.sessions) == [("10.0.0.1", p) for p in (1002, 1000, 1003)]
    assert server.stats["sessions_evicted"] == 1
    # the evicted peer's records are now dropped and counted
    session, data = server.receive(nets[1].client.send(b"gone"), ("10.0.0.1", 1001), 1.0)
    assert session is None and data == [] and server.stats["no_session"] == 1


def test_idle_expiry():
    server = make_server(idle_timeout=10.0)
    net = handshake_from(server, PEER, 1)
    session = net.session
    net.deliver("c2s", net.client.send(b"x"))  # drops the retained final flight
    while (deadline := server.next_deadline()) < 10.0:  # early wake-ups are allowed
        server.expire(deadline)
        assert not server.outbox
    assert deadline == 10.0
    net.now = 9.0
    net.deliver("c2s", net.client.send(b"y"))
    server.expire(10.0)  # the first deadline comes: the session was active at 9
    assert server.sessions == {PEER: session} and server.next_deadline() == 19.0
    server.expire(18.9)
    assert session.state is ESTABLISHED
    server.expire(19.0)
    assert server.sessions == {} and session.state is CLOSED
    assert server.stats["sessions_expired"] == 1 and server.next_deadline() is None
    ((datagram, peer),) = server.outbox  # a close_notify
    assert peer == PEER
    net.client.receive(datagram, 19.0)
    assert net.client.state is CLOSED


def test_hot_path_does_not_grow_the_heap():
    server = make_server()
    net = handshake_from(server, PEER, 1)
    net.deliver("c2s", net.client.send(b"first"))
    size = server.table_sizes()["timers"]
    for i in range(200):
        net.now = float(i)
        net.deliver("c2s", net.client.send(b"x"))
    assert server.table_sizes()["timers"] == size
    assert server.next_deadline() is not None


def test_server_handshake_timeout_removes_the_session():
    server = make_server()
    client = make_client()
    hello = client_hello(client)
    server.receive(hello, PEER, 0.0)
    cookie = hvr_cookie(server.outbox.pop()[0])
    session, _ = server.receive(with_cookie(hello, cookie), PEER, 0.0)
    server.outbox = []
    times = []
    while server.sessions:
        t = server.next_deadline()
        server.expire(t)
        if server.outbox:
            times.append(t)
            server.outbox = []
    assert times == [1.0, 3.0, 7.0, 15.0, 31.0]  # flight 4 retransmitted
    assert session.state is FAILED and str(session.error) == "handshake timed out"
    assert server.stats["handshakes_failed"] == 1 and server.stats["retransmits"] == 5


def test_close_all():
    server = make_server()
    nets = [handshake_from(server, ("10.0.0.2", i), i) for i in range(3)]
    server.close()
    assert server.sessions == {} and len(server.outbox) == 3
    for datagram, peer in server.outbox:
        net = nets[peer[1]]
        net.client.receive(datagram, 1.0)
        assert net.client.state is CLOSED
    server.close(("10.0.0.2", 0))  # unknown peer: nothing to do
    assert server.stats["sessions_closed"] == 3


def test_failed_handshake_leaves_no_session():
    server = make_server()
    net = Net(make_client(key=b"wrong"), server)
    net.handshake()
    assert server.sessions == {} and server.stats["handshakes_failed"] == 1
    assert server.stats["alerts_out"] == 1 and server.next_deadline() is None


def test_stats_aggregate_live_and_removed_sessions():
    server = make_server()
    a = handshake_from(server, ("10.0.0.3", 1), 1)
    handshake_from(server, ("10.0.0.3", 2), 2)
    a.deliver("c2s", a.client.send(b"1"))
    server.close(("10.0.0.3", 1))
    stats = server.stats
    assert stats["app_records_in"] == 1 and stats["sessions"] == 1
    assert stats["sessions_created"] == 2 and stats["hello_verify_sent"] == 2
    assert stats["records_in"] == sum(s.stats["records_in"] for s in a.server_sessions) + sum(
        s.stats["records_in"] for s in server.sessions.values()
    )


def test_client_hello_record_numbering_is_continued_within_reason():
    server = make_server()
    hello = client_hello(make_client())
    server.receive(hello, PEER, 0.0)
    cookie = hvr_cookie(server.outbox.pop()[0])
    for seq, expected in ((7, 7), ((1 << 48) - 1, 0)):
        datagram = bytearray(with_cookie(hello, cookie))
        datagram[5:11] = seq.to_bytes(6, "big")
        session, _ = server.receive(bytes(datagram), PEER, 0.0)
        (first, *_), ok = parse_records(server.outbox[0][0])
        assert ok and first[2] == expected  # epoch 0, a sane sequence number
        server.outbox = []
        server.close(PEER)
        server.outbox = []


def test_unauthenticated_records_do_not_keep_a_session_alive():
    server = make_server(idle_timeout=10.0)
    net = handshake_from(server, PEER, 1)
    session = net.session
    forged = encode_plain(HANDSHAKE, DTLS_1_2, 50, m.encode_message(m.FINISHED, 40, b"x" * 12))
    server.receive(forged, PEER, 8.0)
    assert session.last_active == 0.0
    server.expire(10.0)
    assert server.sessions == {} and server.stats["sessions_expired"] == 1
