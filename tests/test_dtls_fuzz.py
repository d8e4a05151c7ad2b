"""Property tests: peer input never escapes the DTLS engine.

Random bytes and mutated copies of valid records are fed to
``DtlsSession.receive`` (both roles) and ``DtlsServer.receive`` at every stage
of a handshake — before it starts, between any two records, established,
closed, failed.  Nothing raises, the catch-all counter ``internal_errors``
stays 0 (it would count an exception swallowed at the boundary), and the
input is counted.  Replayed records are dropped and counted.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from greencoap.protocol.dtls import ESTABLISHED, FAILED, DtlsServer, DtlsSession
from greencoap.protocol.dtls.record import encode_plain, parse_records
from tests.test_dtls_handshake import PEER, established_pair, make_client, make_server

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Staged:
    """A deterministic handshake (plus data and a close) delivered one record
    at a time, stoppable after any number of records."""

    def __init__(
        self, stop: int | None = None, *, hint: bytes = b"", key: bytes = b"secret"
    ) -> None:
        self.client = make_client(key=key)
        self.server = make_server(hint=hint)
        self.log: list[tuple[str, bytes]] = []  # every record sent, as a datagram of its own
        self.delivered = 0
        self._data_sent = False
        self.client.start(0.0)
        self._run(stop)

    def _pending(self) -> list[tuple[str, bytes]]:
        out = [("c2s", d) for d in self.client.outbox]
        out += [("s2c", d) for d, _ in self.server.outbox]
        self.client.outbox = []
        self.server.outbox = []
        records = []
        for direction, datagram in out:
            for r in parse_records(datagram)[0]:
                records.append((direction, encode_plain(r[0], r[1], r[2], r[3])))
        self.log += records
        return records

    def _run(self, stop: int | None) -> None:
        queue = self._pending()
        while queue and (stop is None or self.delivered < stop):
            direction, record = queue.pop(0)
            self.deliver(direction, record)
            self.delivered += 1
            queue += self._pending()
            if not queue and self.client.state is ESTABLISHED:
                if not self._data_sent:  # some application data each way
                    self._data_sent = True
                    session = self.server.sessions[PEER]
                    self.client.outbox.append(self.client.send(b"request"))
                    self.server.outbox.append((session.send(b"response"), PEER))
                else:  # then a close from the client
                    self.client.close()
                queue += self._pending()

    def deliver(self, direction: str, datagram: bytes) -> None:
        if direction == "c2s":
            self.server.receive(datagram, PEER, 0.0)
        else:
            self.client.receive(datagram, 0.0)


FULL = Staged()
RECORDS = [record for _, record in FULL.log]
STAGES = FULL.delivered
assert FULL.client.state.name == "CLOSED" and STAGES >= 14


def total(stats: dict[str, int]) -> int:
    return sum(v for k, v in stats.items() if k != "sessions")


def mutate(data: bytes, how: int, pos: int, value: int, extra: bytes) -> bytes:
    if not data:
        return extra
    pos %= len(data)
    if how == 0:  # flip bits in one byte
        return data[:pos] + bytes([data[pos] ^ (value or 1)]) + data[pos + 1 :]
    if how == 1:  # truncate
        return data[:pos]
    if how == 2:  # insert
        return data[:pos] + extra + data[pos:]
    if how == 3:  # append garbage or another record
        return data + extra
    # overwrite the length field / header bytes with value
    return data[:pos] + bytes([value]) * 2 + data[pos + 2 :]


datagrams_random = st.binary(min_size=1, max_size=200)
datagrams_mutated = st.builds(
    mutate,
    st.sampled_from(RECORDS + [RECORDS[0] + RECORDS[1], RECORDS[3] + RECORDS[4]]),
    st.integers(0, 4),
    st.integers(0, 10_000),
    st.integers(0, 255),
    st.one_of(st.binary(max_size=40), st.sampled_from(RECORDS)),
)
anything = st.one_of(datagrams_random, datagrams_mutated)


def check_session(session: DtlsSession, datagram: bytes) -> None:
    was_live = session.state.name in ("HANDSHAKING", "ESTABLISHED")
    started = not (session.is_client and session._phase == 0)
    before = total(session.stats)
    out = session.receive(datagram, 1.0)
    session.expire(2.0)
    assert isinstance(out, list)
    assert session.stats["internal_errors"] == 0
    if was_live:
        assert total(session.stats) > before or not started
    if session.state is FAILED:
        assert session.error is not None


@SETTINGS
@given(st.integers(0, STAGES), anything, st.booleans(), st.sampled_from([b"secret", b"wrong"]))
def test_session_receive_never_raises(stage, datagram, to_client, key):
    staged = Staged(stage, key=key)
    if to_client:
        check_session(staged.client, datagram)
    else:
        session = staged.server.sessions.get(PEER)
        if session is not None:
            check_session(session, datagram)


@SETTINGS
@given(st.integers(0, STAGES), anything, st.sampled_from([PEER, ("198.51.100.1", 9)]))
def test_server_receive_never_raises(stage, datagram, peer):
    staged = Staged(stage)
    server = staged.server
    before = total(server.stats)
    session, data = server.receive(datagram, peer, 1.0)
    server.expire(server.next_deadline() or 2.0)
    assert isinstance(data, list)
    assert session is None or isinstance(session, DtlsSession)
    stats = server.stats
    assert stats["internal_errors"] == 0
    assert total(stats) > before


@SETTINGS
@given(st.integers(0, STAGES), datagrams_random)
def test_random_bytes_cannot_break_an_established_session(stage, datagram):
    staged = Staged(stage)
    for session in (staged.client, staged.server.sessions.get(PEER)):
        if session is not None and session.state is ESTABLISHED:
            session.receive(datagram, 1.0)
            assert session.state is ESTABLISHED
            assert session.stats["internal_errors"] == 0


@SETTINGS
@given(st.lists(st.binary(min_size=1, max_size=60), min_size=1, max_size=8))
def test_fresh_sessions_and_server_survive_sequences(datagrams):
    unstarted = make_client()
    client = make_client()
    client.start(0.0)
    server_session = DtlsSession("server", psk_lookup=lambda i: b"k")
    server = make_server()
    for i, d in enumerate(datagrams):
        unstarted.receive(d, float(i))
        client.receive(d, float(i))
        server_session.receive(d, float(i))
        server.receive(d, PEER, float(i))
        server.receive(d, ("x", i), float(i))
    assert unstarted.state.name == "HANDSHAKING" and not unstarted.outbox
    for obj in (unstarted.stats, client.stats, server_session.stats, server.stats):
        assert obj["internal_errors"] == 0


@SETTINGS
@given(st.lists(st.integers(0, 39), min_size=1, max_size=120))
def test_replayed_records_are_dropped_and_counted(order):
    net = established_pair()
    net.settle()
    records = [net.client.send(b"%d" % i) for i in range(40)]
    session = net.session
    seen: list[int] = []
    replays = 0
    for i in order:
        net.deliver("c2s", records[i])
        if i in seen:
            replays += 1
        else:
            seen.append(i)
    assert net.server_got == [b"%d" % i for i in seen]
    assert session.stats["replays"] == replays
    assert session.stats["app_records_in"] == len(seen)


def test_replay_of_a_whole_handshake_is_harmless():
    staged = Staged()
    server: DtlsServer = staged.server
    client_side = [d for direction, d in FULL.log if direction == "c2s"]
    for d in client_side:  # the same records again, from the same peer
        server.receive(d, PEER, 5.0)
    stats = server.stats
    assert stats["internal_errors"] == 0
    assert all(s.state is not FAILED for s in server.sessions.values())
