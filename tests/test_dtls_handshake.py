"""Sans-I/O tests of DTLS 1.2 PSK handshakes (greencoap.protocol.dtls).

A client :class:`DtlsSession` and a :class:`DtlsServer` (or a server-role
session) talk through :class:`Net`, an in-memory network on a fake clock that
can drop, duplicate and reorder datagrams.  No sockets, no sleeping.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from greencoap.protocol.dtls import (
    CLOSED,
    ESTABLISHED,
    FAILED,
    HANDSHAKING,
    DtlsError,
    DtlsServer,
    DtlsSession,
)
from greencoap.protocol.dtls import messages as m
from greencoap.protocol.dtls.record import (
    APPLICATION_DATA,
    CHANGE_CIPHER_SPEC,
    DTLS_1_2,
    HANDSHAKE,
    encode_plain,
    parse_records,
)
from greencoap.protocol.dtls.states import C_WAIT_FINISHED

PEER = ("192.0.2.1", 40000)
KEYS = {b"identity": b"secret", b"other": b"another key"}

Policy = Callable[[str, int, bytes], list[bytes]]


def lookup(identity: bytes) -> bytes | None:
    return KEYS.get(identity)


def rng_bytes(seed: int) -> Callable[[int], bytes]:
    return random.Random(seed).randbytes


def make_client(identity: bytes = b"identity", key: bytes = b"secret", **kw) -> DtlsSession:
    kw.setdefault("randbytes", rng_bytes(1))
    return DtlsSession("client", psk=(identity, key), **kw)


def make_server(**kw) -> DtlsServer:
    kw.setdefault("randbytes", rng_bytes(2))
    return DtlsServer(lookup, **kw)


class Net:
    """One client and one server (a DtlsServer or a server-role DtlsSession)
    joined by a fake network on a fake clock.

    ``policy(direction, index, datagram)`` returns what actually goes on the
    wire for the index-th datagram sent in that direction ("c2s"/"s2c"):
    ``[]`` drops it, ``[d, d]`` duplicates it.  With ``rng`` the next datagram
    delivered is picked at random from those in flight (reordering).
    """

    def __init__(
        self,
        client: DtlsSession,
        server: DtlsServer | DtlsSession,
        *,
        peer: object = PEER,
        policy: Policy | None = None,
        rng: random.Random | None = None,
        now: float = 0.0,
    ) -> None:
        self.client = client
        self.server = server
        self.peer = peer
        self.policy = policy
        self.rng = rng
        self.now = now
        self.wire: list[tuple[str, bytes]] = []
        self.sent = {"c2s": 0, "s2c": 0}
        self.log: list[tuple[str, int, bytes]] = []  # everything sent, before the policy
        self.client_got: list[bytes] = []
        self.server_got: list[bytes] = []
        self.server_sessions: list[DtlsSession] = []  # every session the server returned

    @property
    def session(self) -> DtlsSession | None:
        """The server's session for our peer."""
        if isinstance(self.server, DtlsSession):
            return self.server
        return self.server.sessions.get(self.peer)

    def collect(self) -> None:
        for d in self.client.outbox:
            self._put("c2s", d)
        self.client.outbox = []
        if isinstance(self.server, DtlsServer):
            for d, p in self.server.outbox:
                assert p == self.peer
                self._put("s2c", d)
        else:
            for d in self.server.outbox:
                self._put("s2c", d)
        self.server.outbox = []

    def _put(self, direction: str, datagram: bytes) -> None:
        i = self.sent[direction]
        self.sent[direction] += 1
        self.log.append((direction, i, datagram))
        out = [datagram] if self.policy is None else self.policy(direction, i, datagram)
        self.wire.extend((direction, d) for d in out)

    def deliver(self, direction: str, datagram: bytes) -> None:
        if direction == "c2s":
            if isinstance(self.server, DtlsServer):
                session, data = self.server.receive(datagram, self.peer, self.now)
                if session is not None and session not in self.server_sessions:
                    self.server_sessions.append(session)
            else:
                data = self.server.receive(datagram, self.now)
            self.server_got += data
        else:
            self.client_got += self.client.receive(datagram, self.now)

    def step(self) -> bool:
        """Deliver one datagram, or advance the clock to the next deadline."""
        self.collect()
        if self.wire:
            k = self.rng.randrange(len(self.wire)) if self.rng else 0
            self.deliver(*self.wire.pop(k))
            return True
        deadlines = [
            d for d in (self.client.next_deadline(), self.server.next_deadline()) if d is not None
        ]
        if not deadlines:
            return False
        self.now = max(self.now, min(deadlines))
        self.client.expire(self.now)
        self.server.expire(self.now)
        return True

    def run(self, until: Callable[[], bool], limit: float = 400.0) -> None:
        while not until() and self.now <= limit:
            if not self.step():
                break
        self.collect()

    def settle(self) -> None:
        """Deliver everything in flight without advancing the clock."""
        self.collect()
        while self.wire:
            self.step()
            self.collect()

    def handshake(self, limit: float = 400.0) -> None:
        self.client.start(self.now)
        self.run(lambda: self.client.state is not HANDSHAKING and not self.wire, limit)


def established_pair(**client_kw) -> Net:
    net = Net(make_client(**client_kw), make_server())
    net.handshake()
    assert net.client.state is ESTABLISHED
    assert net.session is not None and net.session.state is ESTABLISHED
    return net


# ---------------------------------------------------------------- happy paths


@pytest.mark.parametrize("hint", [b"", b"the hint"])
@pytest.mark.parametrize("ems", [True, False])
def test_handshake_and_application_data(hint, ems):
    net = Net(make_client(extended_master_secret=ems), make_server(hint=hint))
    net.handshake()
    c, s = net.client, net.session
    assert c.state is ESTABLISHED and s is not None and s.state is ESTABLISHED
    assert c.error is None and s.error is None
    assert c.identity == s.identity == b"identity"
    assert c.peer_hint == (hint or None)
    assert c.uses_extended_master_secret is ems and s.uses_extended_master_secret is ems
    assert c._master == s._master
    # one cookie exchange, no retransmission, four datagrams each way at most
    assert net.server.stats["hello_verify_sent"] == 1
    assert c.stats["retransmits"] == s.stats["retransmits"] == 0
    assert net.sent == {"c2s": 3, "s2c": 3}
    assert net.now == 0.0

    net.deliver("c2s", c.send(b"ping"))
    assert net.server_got == [b"ping"]
    net.deliver("s2c", s.send(b"pong"))
    net.deliver("s2c", s.send(b""))
    assert net.client_got == [b"pong", b""]
    assert c.stats["app_records_out"] == 1 and s.stats["app_records_in"] == 1
    for session in (c, s):
        assert all(
            session.stats[k] == 0
            for k in ("bad_records", "auth_failures", "replays", "wrong_epoch", "internal_errors")
        )


def test_application_record_layout_and_sequence_numbers():
    net = established_pair()
    c = net.client
    first, second = c.send(b"a"), c.send(b"bb")
    (r1,), _ = parse_records(first)
    (r2,), _ = parse_records(second)
    assert r1[0] == APPLICATION_DATA and r1[1] == DTLS_1_2
    assert r1[2] >> 48 == 1 and r2[2] == r1[2] + 1  # epoch 1, consecutive seqs
    assert len(r1[3]) == 8 + 1 + 8 and len(second) == 13 + 8 + 2 + 8
    # several records in one datagram are all delivered
    net.deliver("c2s", c.send(b"x") + c.send(b"y"))
    assert net.server_got == [b"x", b"y"]
    net.deliver("c2s", second)
    net.deliver("c2s", first)  # reordered within the window: still fine
    assert net.server_got == [b"x", b"y", b"bb", b"a"]


def test_standalone_server_session_without_cookie():
    server = DtlsSession("server", psk_lookup=lookup, randbytes=rng_bytes(3), hint=b"h")
    net = Net(make_client(), server)
    net.handshake()
    assert net.client.state is ESTABLISHED and server.state is ESTABLISHED
    assert server.identity == b"identity" and net.client.peer_hint == b"h"
    assert net.sent["c2s"] == 2  # no HelloVerifyRequest round trip
    net.deliver("s2c", server.send(b"hi"))
    assert net.client_got == [b"hi"]


def test_client_close_notify():
    net = established_pair()
    net.client.close()
    assert net.client.state is CLOSED and net.client.next_deadline() is None
    session = net.session
    net.settle()
    assert session.state is CLOSED and session.error is None
    assert net.server.sessions == {} and net.server.stats["sessions_closed"] == 1
    with pytest.raises(DtlsError):
        net.client.send(b"late")
    assert net.client.receive(b"anything", 5.0) == []


def test_server_close_notify():
    net = established_pair()
    net.server.close(PEER)
    net.settle()
    assert net.client.state is CLOSED and net.client.error is None
    assert net.client.stats["alerts_in"] == 1
    assert net.server.sessions == {}


def test_session_close_sends_close_notify_record():
    net = established_pair()
    session = net.session
    session.close()
    (record,), ok = parse_records(session.outbox[0])
    assert ok and record[0] == 21 and record[2] >> 48 == 1  # an encrypted alert
    assert net.client.receive(session.outbox[0], 1.0) == []
    assert net.client.state is CLOSED
    assert net.client.outbox  # answered in kind


# ---------------------------------------------------------------- loss, reordering, duplication


FLIGHTS = [("c2s", 0), ("s2c", 0), ("c2s", 1), ("s2c", 1), ("c2s", 2), ("s2c", 2)]


@pytest.mark.parametrize("direction,index", FLIGHTS)
def test_each_flight_lost_once(direction, index):
    def policy(d: str, i: int, datagram: bytes) -> list[bytes]:
        return [] if (d, i) == (direction, index) else [datagram]

    net = Net(make_client(), make_server(), policy=policy)
    net.handshake()
    assert net.client.state is ESTABLISHED
    assert net.session.state is ESTABLISHED
    assert net.now == 1.0  # recovered at the first retransmission timeout
    net.deliver("c2s", net.client.send(b"after"))
    assert net.server_got == [b"after"]


def test_lost_final_flight_is_answered_from_the_retained_flight():
    def policy(d: str, i: int, datagram: bytes) -> list[bytes]:
        return [] if (d, i) == ("s2c", 2) else [datagram]  # the server's CCS + Finished

    net = Net(make_client(), make_server(), policy=policy)
    net.handshake()
    session = net.session
    assert net.client.state is ESTABLISHED and session.state is ESTABLISHED
    assert net.client.stats["retransmits"] == 1  # flight 5 again, at t=1
    assert session.stats["retransmits"] == 1  # flight 6 again, in answer
    assert net.sent == {"c2s": 4, "s2c": 4}
    # the retained flight goes once the client has sent application data
    assert session.next_deadline() == pytest.approx(DtlsSession.FINAL_FLIGHT_RETENTION)
    net.deliver("c2s", net.client.send(b"data"))
    assert session._flight is None
    assert session.next_deadline() == pytest.approx(1.0 + net.server.idle_timeout)
    for direction, i, datagram in net.log:
        if (direction, i) == ("c2s", 2):
            net.deliver("c2s", datagram)  # an old flight 5 copy: no more answers
    assert not net.server.outbox and session.stats["retransmits"] == 1


def test_retained_final_flight_expires():
    net = established_pair()
    session = net.session
    assert session._flight is not None
    session.expire(DtlsSession.FINAL_FLIGHT_RETENTION)
    assert session._flight is None and session.state is ESTABLISHED


def test_duplicated_datagrams_are_harmless():
    net = Net(make_client(), make_server(), policy=lambda d, i, datagram: [datagram, datagram])
    net.handshake()
    assert net.client.state is ESTABLISHED and net.session.state is ESTABLISHED
    assert net.client.stats["replays"] > 0 and net.session.stats["replays"] > 0
    net.settle()
    datagram = net.client.send(b"once")
    net.deliver("c2s", datagram)
    net.deliver("c2s", datagram)
    assert net.server_got == [b"once"]


@pytest.mark.parametrize("seed", range(6))
def test_small_mtu_fragments_in_any_order(seed):
    hint = bytes(range(256)) + b"hint" * 40  # a ServerKeyExchange of ~420 bytes
    identity = b"a-long-identity-" * 25  # a ClientKeyExchange of ~400 bytes
    KEYS[identity] = b"long key"
    try:
        client = make_client(identity=identity, key=b"long key", mtu=200)
        net = Net(client, make_server(hint=hint, mtu=200), rng=random.Random(seed))
        net.handshake()
    finally:
        del KEYS[identity]
    assert net.client.state is ESTABLISHED and net.session.state is ESTABLISHED
    assert net.client.peer_hint == hint and net.session.identity == identity
    assert all(len(d) <= 200 for _, _, d in net.log)
    fragmented = 0
    for _, _, datagram in net.log:
        for ctype, _, es, frag in parse_records(datagram)[0]:
            if ctype == HANDSHAKE and es >> 48 == 0:
                for _, length, _, _, data in m.parse_fragments(frag):
                    fragmented += len(data) < length
    assert fragmented > 4


def _lossy(seed: int, loss: float) -> tuple[Policy, random.Random]:
    rng = random.Random(seed)
    return (lambda d, i, datagram: [] if rng.random() < loss else [datagram]), rng


def test_thirty_percent_loss_with_reordering_completes():
    outcomes = []
    for seed in range(40):
        policy, rng = _lossy(seed, 0.3)
        net = Net(make_client(randbytes=rng_bytes(seed)), make_server(), policy=policy, rng=rng)
        net.handshake()
        c = net.client
        if c.state is FAILED:
            assert str(c.error).startswith("handshake timed out")
            outcomes.append("timeout")
            continue
        assert c.state is ESTABLISHED, (seed, c.state)
        # once the client is established, the server is too (flight 6 proves it)
        assert any(s.state is ESTABLISHED for s in net.server_sessions)
        outcomes.append("ok")
    # each flight has six tries; with 30 % loss each way a run out of tries is rare
    assert outcomes.count("ok") >= 36, outcomes
    assert "ok" in outcomes[:5]


def test_epoch1_record_before_ccs_is_buffered():
    net = Net(make_client(), make_server())
    net.client.start(0.0)
    for _ in range(3):  # CH, HVR, CH+cookie, flight 4 to the client
        net.collect()
        net.step()
    net.collect()
    net.step()
    net.collect()
    ((direction, flight5),) = net.wire
    net.wire.clear()
    assert direction == "c2s"
    records, ok = parse_records(flight5)
    assert ok and [r[0] for r in records] == [HANDSHAKE, CHANGE_CIPHER_SPEC, HANDSHAKE]
    raw = [encode_plain(*r[:3], r[3]) for r in records]
    net.deliver("c2s", raw[2])  # the Finished (epoch 1) first
    session = net.session
    assert session.state is HANDSHAKING and session.stats["auth_failures"] == 0
    net.deliver("c2s", raw[0] + raw[1])  # then ClientKeyExchange and CCS
    assert session.state is ESTABLISHED
    net.settle()
    assert net.client.state is ESTABLISHED


# ---------------------------------------------------------------- failures


def test_wrong_key_fails_both_sides_with_decrypt_error():
    net = Net(make_client(key=b"not the secret"), make_server())
    net.handshake()
    c = net.client
    (s,) = net.server_sessions
    assert s.state is FAILED and s.error.alert == 51
    assert "wrong PSK" in str(s.error) and "'identity'" in str(s.error)
    assert s.stats["alerts_out"] == 1
    assert c.state is FAILED and c.error.alert == 51
    assert str(c.error) == "handshake failed: peer sent alert decrypt_error (51) — wrong PSK?"
    assert net.server.sessions == {} and net.server.stats["handshakes_failed"] == 1
    assert net.now == 0.0


def test_unknown_identity():
    net = Net(make_client(identity=b"x"), make_server())
    net.handshake()
    (s,) = net.server_sessions
    assert s.state is FAILED and s.error.alert == 115
    assert str(s.error) == "unknown PSK identity 'x'"
    c = net.client
    assert c.state is FAILED and c.error.alert == 115
    assert "unknown_psk_identity (115)" in str(c.error)


def test_handshake_timeout_schedule():
    client = make_client()
    client.start(0.0)
    sent_at = [0.0]
    client.outbox = []
    while client.state is HANDSHAKING:
        t = client.next_deadline()
        client.expire(t)
        if client.outbox:
            sent_at.append(t)
            client.outbox = []
    assert sent_at == [0.0, 1.0, 3.0, 7.0, 15.0, 31.0]
    assert client.state is FAILED and client.stats["retransmits"] == 5
    assert str(client.error) == "handshake timed out: no answer from the server"
    assert client.error.alert is None and client.next_deadline() is None


def test_timer_caps_at_sixty_seconds():
    client = make_client()
    client.MAX_RETRANSMITS = 9
    client.start(0.0)
    gaps = []
    last = 0.0
    while client.state is HANDSHAKING:
        t = client.next_deadline()
        gaps.append(t - last)
        last = t
        client.expire(t)
    assert gaps == [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]


def test_server_rejects_client_without_the_suite():
    server = DtlsSession("server", psk_lookup=lookup)
    hello = m.ClientHello(0xFEFD, bytes(32), cipher_suites=b"\x00\xa8\x00\xae")
    record = encode_plain(
        HANDSHAKE, DTLS_1_2, 0, m.encode_message(m.CLIENT_HELLO, 0, hello.encode())
    )
    assert server.receive(record, 0.0) == []
    assert server.state is FAILED and server.error.alert == 40
    (alert,), _ = parse_records(server.outbox[0])
    assert alert[0] == 21 and alert[3] == b"\x02\x28"  # fatal handshake_failure, plaintext


def test_server_rejects_dtls_1_0_only_client():
    server = DtlsSession("server", psk_lookup=lookup)
    hello = m.ClientHello(0xFEFF, bytes(32), cipher_suites=b"\xc0\xa8")
    record = encode_plain(
        HANDSHAKE, DTLS_1_2, 0, m.encode_message(m.CLIENT_HELLO, 0, hello.encode())
    )
    server.receive(record, 0.0)
    assert server.state is FAILED and server.error.alert == 70


def test_server_ignores_unknown_extensions_and_accepts_scsv():
    server = DtlsSession("server", psk_lookup=lookup, randbytes=rng_bytes(4))
    hello = m.ClientHello(
        0xFEFD,
        bytes(32),
        cipher_suites=b"\x00\xff\xc0\xa8",
        extensions={0x1234: b"whatever", 10: b"\x00\x02\x00\x17"},
    )
    record = encode_plain(
        HANDSHAKE, DTLS_1_2, 0, m.encode_message(m.CLIENT_HELLO, 0, hello.encode())
    )
    server.receive(record, 0.0)
    assert server.state is HANDSHAKING and server.outbox
    (sh_record, *_), _ = parse_records(server.outbox[0])
    ((msg_type, _, _, _, body),) = m.parse_fragments(sh_record[3])
    sh = m.ServerHello.decode(body)
    assert msg_type == m.SERVER_HELLO and sh.cipher_suite == 0xC0A8
    assert sh.extensions == {0xFF01: b"\x00"}  # renegotiation_info echoed, no EMS


def _feed_server_hello(client: DtlsSession, **fields) -> None:
    sh = m.ServerHello(0xFEFD, bytes(32), **fields).encode()
    client.receive(
        encode_plain(HANDSHAKE, DTLS_1_2, 0, m.encode_message(m.SERVER_HELLO, 0, sh)), 0.0
    )


@pytest.mark.parametrize(
    "fields,alert",
    [
        ({"cipher_suite": 0xC0A4}, 47),
        ({"compression": 1}, 47),
        ({"extensions": {0xFF01: b"\x01\x00"}}, 40),
    ],
)
def test_client_rejects_bad_server_hello(fields, alert):
    client = make_client()
    client.start(0.0)
    _feed_server_hello(client, **fields)
    assert client.state is FAILED and client.error.alert == alert
    assert client.outbox[-1].endswith(bytes((2, alert)))


def test_client_rejects_other_version():
    client = make_client()
    client.start(0.0)
    sh = m.ServerHello(0xFEFF, bytes(32)).encode()
    client.receive(encode_plain(HANDSHAKE, DTLS_1_2, 0, m.encode_message(m.SERVER_HELLO, 0, sh)), 0)
    assert client.state is FAILED and client.error.alert == 70


def test_client_rejects_unsolicited_ems():
    client = make_client(extended_master_secret=False)
    client.start(0.0)
    _feed_server_hello(client, extensions={23: b""})
    assert client.state is FAILED and client.error.alert == 110


def test_unexpected_handshake_message_is_fatal():
    client = make_client()
    client.start(0.0)
    msg = m.encode_message(m.CLIENT_KEY_EXCHANGE, 0, b"\x00\x00")
    client.receive(encode_plain(HANDSHAKE, DTLS_1_2, 0, msg), 0.0)
    assert client.state is FAILED and client.error.alert == 10


def test_malformed_handshake_message_is_decode_error():
    client = make_client()
    client.start(0.0)
    msg = m.encode_message(m.SERVER_HELLO, 0, b"\xfe\xfd" + bytes(10))
    client.receive(encode_plain(HANDSHAKE, DTLS_1_2, 0, msg), 0.0)
    assert client.state is FAILED and client.error.alert == 50


def test_fatal_alert_after_establishment():
    net = established_pair()
    session = net.session
    session._send_alert(2, 80)
    net.deliver("s2c", session.outbox.pop())
    assert net.client.state is FAILED
    assert str(net.client.error) == "connection failed: peer sent alert internal_error (80)"


def test_plaintext_alert_ignored_after_establishment():
    net = established_pair()
    net.client.receive(encode_plain(21, DTLS_1_2, 99, b"\x02\x28"), 1.0)
    assert net.client.state is ESTABLISHED and net.client.stats["wrong_epoch"] == 1


def test_renegotiation_is_refused_both_ways():
    net = established_pair()
    c, s = net.client, net.session
    net.settle()
    hello = m.ClientHello(0xFEFD, bytes(32), cipher_suites=b"\xc0\xa8").encode()
    next_seq = c._msg_seq
    datagram = c._seal(HANDSHAKE, 1, m.encode_message(m.CLIENT_HELLO, next_seq, hello))
    net.deliver("c2s", datagram)
    assert s.state is ESTABLISHED
    ((alert_datagram, _),) = net.server.outbox
    net.server.outbox = []
    assert net.client.receive(alert_datagram, 1.0) == []
    assert c.state is ESTABLISHED and c.stats["alerts_in"] == 1
    assert s.stats["alerts_out"] == 1
    # a HelloRequest from the server gets the same answer from the client
    c.outbox = []
    request = s._seal(HANDSHAKE, 1, m.encode_message(m.HELLO_REQUEST, s._msg_seq, b""))
    c.receive(request, 2.0)
    assert c.state is ESTABLISHED and len(c.outbox) == 1
    s.receive(c.outbox.pop(), 2.0)
    assert s.state is ESTABLISHED and s.stats["alerts_in"] == 1


def test_misuse_raises():
    with pytest.raises(ValueError):
        DtlsSession("client")
    with pytest.raises(ValueError):
        DtlsSession("server")
    with pytest.raises(ValueError):
        DtlsSession("peer", psk=(b"a", b"b"))
    with pytest.raises(DtlsError):
        DtlsSession("server", psk_lookup=lookup).start(0.0)
    client = make_client()
    with pytest.raises(DtlsError, match="handshaking"):
        client.send(b"early")
    net = established_pair()
    with pytest.raises(DtlsError):
        net.client.send(bytes(16385))


def test_unstarted_client_ignores_input_and_close_is_quiet():
    client = make_client()
    assert client.next_deadline() is None
    assert client.receive(encode_plain(21, DTLS_1_2, 0, b"\x02\x28"), 0.0) == []
    assert client.state is HANDSHAKING
    client.close()
    assert client.state is CLOSED and client.outbox == []


def test_psk_lookup_exception_is_internal_error():
    def broken(identity: bytes) -> bytes | None:
        raise RuntimeError("database down")

    server = DtlsServer(broken, randbytes=rng_bytes(5))
    net = Net(make_client(), server)
    net.handshake()
    (s,) = net.server_sessions
    assert s.state is FAILED and s.error.alert == 80 and "database down" in str(s.error)
    assert net.client.state is FAILED and net.client.error.alert == 80


def test_silent_server_means_wrong_key_after_three_repeats():
    """OpenSSL and GnuTLS servers drop a Finished they cannot decrypt and just
    repeat their hello flight; the client gives up after three repeats."""

    def policy(d: str, i: int, datagram: bytes) -> list[bytes]:
        return [] if d == "c2s" and i >= 2 else [datagram]  # flight 5 never arrives

    net = Net(make_client(), make_server(), policy=policy)
    net.handshake()
    c = net.client
    assert c.state is FAILED and c.error.alert is None
    assert str(c.error) == (
        "handshake failed: the server repeated its hello flight 3 times and never "
        "accepted our Finished — wrong PSK?"
    )
    assert net.now == 7.0  # server retransmissions at 1, 3 and 7 s


def test_a_repeated_flight_is_answered_once_however_it_is_split():
    def policy(d: str, i: int, datagram: bytes) -> list[bytes]:
        return [] if d == "c2s" and i >= 2 else [datagram]  # flight 5 is lost

    server = make_server(mtu=60, hint=b"h" * 100)
    net = Net(make_client(), server, policy=policy)
    net.client.start(0.0)
    net.run(lambda: net.client._phase == 3 and not net.wire)  # flight 5 sent (and lost)
    assert net.client.stats["retransmits"] == 0
    server.expire(server.next_deadline())  # the server repeats its hello flight...
    repeated = [d for d, _ in server.outbox]
    server.outbox = []
    assert len(repeated) > 3  # ...in several datagrams
    for datagram in repeated:
        net.client.receive(datagram, 0.5)
    assert net.client.stats["retransmits"] == 1  # answered once
    assert len(net.client.outbox) == 1


@pytest.mark.parametrize("ctype", [APPLICATION_DATA, HANDSHAKE, 21])
def test_stray_epoch1_record_does_not_kill_a_client_handshake(ctype):
    """A record the client cannot authenticate (an old association's, a
    forger's) between the server's CCS and its Finished is dropped and counted."""
    net = Net(make_client(), make_server())
    net.client.start(0.0)
    final = None
    while final is None:
        net.collect()
        for i, (direction, d) in enumerate(net.wire):
            records, ok = parse_records(d)
            if direction == "s2c" and any(r[0] == CHANGE_CIPHER_SPEC for r in records):
                final = records
                del net.wire[i]
                break
        else:
            assert net.step(), "the server never sent its final flight"
    kinds = [r[0] for r in final]
    assert kinds == [CHANGE_CIPHER_SPEC, HANDSHAKE]
    raw = [encode_plain(*r[:3], r[3]) for r in final]
    net.deliver("s2c", raw[0])  # the CCS alone: the client now waits for the Finished
    assert net.client._phase == C_WAIT_FINISHED
    stray = bytes([ctype, 0xFE, 0xFD, 0, 1, 0, 0, 0, 0, 0, 9, 0, 24]) + bytes(range(24))
    net.deliver("s2c", stray)
    assert net.client.stats["auth_failures"] == 1
    assert net.client.state is HANDSHAKING
    net.deliver("s2c", raw[1])  # the real Finished
    assert net.client.state is ESTABLISHED


def test_stray_application_record_does_not_kill_a_server_handshake():
    """Only a handshake record (the Finished) that fails to decrypt is taken for
    a wrong key on the server; stray application data is dropped."""
    net = Net(make_client(), make_server())
    net.client.start(0.0)
    for _ in range(4):
        net.collect()
        net.step()
    net.collect()
    session = net.session
    assert session is not None and session.state is HANDSHAKING
    stray = bytes([APPLICATION_DATA, 0xFE, 0xFD, 0, 1, 0, 0, 0, 0, 0, 7, 0, 24]) + bytes(24)
    net.server.receive(stray, PEER, net.now)
    assert session.state is HANDSHAKING
    net.handshake()
    assert net.client.state is ESTABLISHED and net.session.state is ESTABLISHED
