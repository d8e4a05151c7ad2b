"""Sans-I/O tests of the RFC 7252 §4 message layer (greencoap.protocol.messaging).

No sockets and no sleeping: the tests feed ``now`` values directly, inject a
seeded ``random.Random`` and read what the engine put in ``outbox``.
"""

from __future__ import annotations

from random import Random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from greencoap.codes import Code, Type
from greencoap.message import Message
from greencoap.protocol.events import (
    RequestReceived,
    ResetReceived,
    ResponseReceived,
    TimedOut,
)
from greencoap.protocol.messaging import (
    ACKED,
    DONE,
    QUEUED,
    RESET,
    SENT,
    TIMEOUT,
    MessageLayer,
    Outcome,
    ReplyExchange,
    RequestExchange,
    TransmissionParameters,
    empty_ack,
)

PEER = ("192.0.2.1", 5683)
PEER2 = ("192.0.2.2", 5683)
FAR = 1e9  # a request timeout that never limits the CON schedule

CON, NON, ACK, RST = Type.CON, Type.NON, Type.ACK, Type.RST


def params(**kw) -> TransmissionParameters:
    base = {"ack_timeout": 2, "ack_random_factor": 1.5, "max_retransmit": 4}
    base.update(kw)
    return TransmissionParameters(**base)


def layer(seed: int = 1, **kw) -> MessageLayer:
    cap = kw.pop("dedup_capacity", 65536)
    share = kw.pop("dedup_peer_share", 0.25)
    return MessageLayer(params(**kw), rng=Random(seed), dedup_capacity=cap, dedup_peer_share=share)


def get_request(mtype: int = CON, path: str = "temp") -> Message:
    m = Message(mtype, Code.GET)
    m.uri_path = [path]
    return m


def drain(ml: MessageLayer) -> list[tuple[bytes, object]]:
    out = list(ml.outbox)
    ml.outbox.clear()
    return out


def rst(mid: int) -> bytes:
    return bytes((0x70, 0, mid >> 8, mid & 0xFF))


def piggybacked(ex, payload: bytes = b"ok", token: bytes | None = None) -> bytes:
    tok = ex.token if token is None else token
    return Message(ACK, Code.CONTENT, ex.mid, tok, payload=payload).encode()


def idle(ml: MessageLayer) -> bool:
    sizes = ml.table_sizes()
    return all(sizes[k] == 0 for k in ("by_token", "by_mid", "inflight", "queued", "deadlines"))


# -- TransmissionParameters ------------------------------------------------------


def test_derived_parameters_match_rfc7252_4_8_2():
    p = TransmissionParameters()
    assert (p.ack_timeout, p.ack_random_factor, p.max_retransmit) == (2, 1.5, 4)
    assert p.max_transmit_span == 45
    assert p.max_transmit_wait == 93
    assert p.exchange_lifetime == 247
    assert p.non_lifetime == 145


@pytest.mark.parametrize(
    "kw", [{"ack_timeout": 0}, {"ack_random_factor": 0.9}, {"max_retransmit": -1}, {"nstart": 0}]
)
def test_invalid_parameters_rejected(kw):
    with pytest.raises(ValueError):
        TransmissionParameters(**kw)


# -- client role: sending ----------------------------------------------------------


def test_con_request_sent_once_with_fresh_mid_and_token():
    ml = layer()
    ex = ml.request(get_request(), PEER, now=0.0, timeout=FAR)
    out = drain(ml)
    assert len(out) == 1
    data, peer = out[0]
    assert peer == PEER
    msg = Message.decode(data)
    assert msg.mtype == CON and msg.code == Code.GET
    assert msg.uri_path == ["temp"]
    assert msg.mid == ex.mid and 0 <= ex.mid <= 0xFFFF
    assert msg.token == ex.token and len(ex.token) == 4
    assert ex.state == SENT and ex.datagram == data
    ex2 = ml.request(get_request(), PEER, now=0.0, timeout=FAR)
    msg2 = Message.decode(drain(ml)[0][0])
    assert msg2.mid == ex2.mid != ex.mid
    assert msg2.token == ex2.token != ex.token
    assert ml.stats["requests_sent"] == 2
    assert ml.pending() == 2


def test_same_seed_gives_same_ids():
    a, b = layer(seed=7), layer(seed=7)
    ea = a.request(get_request(), PEER, 0.0, FAR)
    eb = b.request(get_request(), PEER, 0.0, FAR)
    assert (ea.mid, ea.token) == (eb.mid, eb.token)
    assert a.outbox == b.outbox


def test_retransmission_schedule_and_timeout():
    ml = layer(seed=3)
    ex = ml.request(get_request(), PEER, now=0.0, timeout=FAR)
    [(original, _)] = drain(ml)
    first = ml.next_deadline()
    assert 2 <= first <= 3
    t, interval = first, first
    for n in range(1, 5):
        assert ml.next_deadline() == t
        assert ml.expire(t - 1e-6) == []  # not yet due
        assert ml.outbox == []
        assert ml.expire(t) == []
        assert drain(ml) == [(original, PEER)]  # the same bytes, same MID
        assert ex.retransmits == n and ex.state == SENT
        interval *= 2
        t += interval
    assert ml.stats["retransmissions"] == 4
    # after the 4th retransmission: wait one (doubled) interval, then give up;
    # that is MAX_TRANSMIT_WAIT for this initial timeout (31 × first)
    assert t == pytest.approx(31 * first)
    assert t <= ml.params.max_transmit_wait
    assert ml.next_deadline() == t
    assert ml.expire(t - 1e-6) == []
    assert ml.outbox == []
    events = ml.expire(t)
    assert events == [TimedOut(ex)]
    assert ml.outbox == []  # no 5th retransmission
    assert ex.state == DONE and ex.outcome is TIMEOUT
    assert ml.stats["retransmissions"] == 4 and ml.stats["timeouts"] == 1
    assert idle(ml)
    assert ml.next_deadline() is None


def test_late_expire_retransmits_once():
    ml = layer()
    ml.request(get_request(), PEER, now=0.0, timeout=FAR)
    [(original, _)] = drain(ml)
    assert ml.expire(ml.next_deadline() + 0.5) == []
    assert drain(ml) == [(original, PEER)]  # one copy, not a burst


def test_empty_ack_stops_retransmission_then_separate_response():
    ml = layer()
    ex = ml.request(get_request(), PEER, now=0.0, timeout=100.0)
    drain(ml)
    assert ml.receive(empty_ack(ex.mid), PEER, 1.0) is None
    assert ex.state == ACKED
    assert ml.outbox == []
    for t in (3.0, 10.0, 30.0, 60.0):
        assert ml.expire(t) == []
        assert ml.outbox == []  # no retransmission after the empty ACK
    sep = Message(CON, Code.CONTENT, 0x7777, ex.token, payload=b"later")
    event = ml.receive(sep.encode(), PEER, 61.0)
    assert event == ResponseReceived(ex)
    assert ex.state == DONE
    assert ex.result.payload == b"later" and ex.result.code == Code.CONTENT
    assert drain(ml) == [(empty_ack(0x7777), PEER)]
    assert ml.stats["responses_received"] == 1
    assert idle(ml)


def test_acked_exchange_still_ends_at_its_deadline():
    ml = layer()
    ex = ml.request(get_request(), PEER, now=0.0, timeout=20.0)
    drain(ml)
    ml.receive(empty_ack(ex.mid), PEER, 1.0)
    assert ml.expire(19.9) == []
    assert ml.expire(20.0) == [TimedOut(ex)]
    assert idle(ml)


def test_piggybacked_response():
    ml = layer()
    ex = ml.request(get_request(), PEER, now=0.0, timeout=FAR)
    drain(ml)
    event = ml.receive(piggybacked(ex, b"22.5"), PEER, 0.5)
    assert event == ResponseReceived(ex)
    assert isinstance(ex.result, Message)
    assert ex.result.mtype == ACK and ex.result.payload == b"22.5"
    assert ex.state == DONE
    assert ml.outbox == []
    assert idle(ml)
    assert ml.expire(1000.0) == [] and ml.outbox == []


def test_piggybacked_response_with_wrong_token_is_ignored():
    ml = layer()
    ex = ml.request(get_request(), PEER, now=0.0, timeout=FAR)
    [(original, _)] = drain(ml)
    assert ml.receive(piggybacked(ex, token=b"nope"), PEER, 0.5) is None
    assert ml.stats["unexpected"] == 1
    assert ml.stats["responses_received"] == 0
    assert ex.state == SENT and ex.result is None
    ml.expire(ml.next_deadline())
    assert drain(ml) == [(original, PEER)]  # still retransmitting
    assert ml.receive(piggybacked(ex), PEER, 4.0) == ResponseReceived(ex)


def test_response_from_other_peer_is_ignored():
    ml = layer()
    ex = ml.request(get_request(), PEER, now=0.0, timeout=FAR)
    drain(ml)
    assert ml.receive(piggybacked(ex), PEER2, 0.5) is None
    assert ex.state == SENT
    assert ml.stats["unexpected"] == 1


def test_unexpected_con_response_gets_rst():
    ml = layer()
    resp = Message(CON, Code.CONTENT, 0x1234, b"\xde\xad", payload=b"?")
    assert ml.receive(resp.encode(), PEER, 0.0) is None
    assert drain(ml) == [(rst(0x1234), PEER)]
    assert ml.stats["unexpected"] == 1
    assert ml.stats["rst_sent"] == 1


def test_unexpected_non_response_dropped_silently():
    ml = layer()
    resp = Message(NON, Code.CONTENT, 0x1234, b"\xde\xad")
    assert ml.receive(resp.encode(), PEER, 0.0) is None
    assert ml.outbox == []
    assert ml.stats["unexpected"] == 1


def test_rst_to_our_con_resets_exchange():
    ml = layer()
    ex = ml.request(get_request(), PEER, now=0.0, timeout=FAR)
    drain(ml)
    assert ml.receive(rst(ex.mid), PEER, 0.2) == ResetReceived(ex)
    assert ex.state == DONE and ex.outcome is RESET
    assert ml.stats["resets_received"] == 1
    assert ml.outbox == []
    assert idle(ml)
    # a second RST for the same MID is now unknown: nothing happens
    assert ml.receive(rst(ex.mid), PEER, 0.3) is None
    assert ml.stats["resets_received"] == 1


def test_non_request_not_retransmitted_and_non_response_completes():
    ml = layer()
    ex = ml.request(get_request(NON), PEER, now=0.0, timeout=50.0)
    [(data, _)] = drain(ml)
    assert Message.decode(data).mtype == NON
    assert ml.next_deadline() == 50.0  # only the overall deadline
    for t in (3.0, 10.0, 30.0, 49.0):
        assert ml.expire(t) == []
        assert ml.outbox == []
    resp = Message(NON, Code.CONTENT, 0x4242, ex.token, payload=b"n")
    assert ml.receive(resp.encode(), PEER, 49.5) == ResponseReceived(ex)
    assert ml.outbox == []  # a NON needs no ACK
    assert idle(ml)


def test_deadline_ends_non_exchange_with_timeout():
    ml = layer()
    ex = ml.request(get_request(NON), PEER, now=10.0, timeout=5.0)
    drain(ml)
    assert ml.expire(14.99) == []
    assert ml.expire(15.0) == [TimedOut(ex)]
    assert ex.outcome is TIMEOUT
    assert idle(ml)


def test_deadline_cuts_con_schedule_short():
    ml = layer()
    ex = ml.request(get_request(), PEER, now=0.0, timeout=5.0)
    drain(ml)
    events = []
    t = 0.0
    while ml.next_deadline() is not None:
        t = ml.next_deadline()
        events += ml.expire(t)
    assert events == [TimedOut(ex)]
    assert t == 5.0
    assert ml.stats["retransmissions"] == 1  # at 2..3 s; the next would be at 6..9 s


# -- NSTART ---------------------------------------------------------------------


def sent_tokens(ml: MessageLayer) -> list[bytes]:
    return [Message.decode(d).token for d, _ in drain(ml)]


def test_nstart_limits_in_flight_and_releases_in_fifo_order():
    ml = layer(nstart=2)
    exs = [ml.request(get_request(path=str(i)), PEER, 0.0, FAR) for i in range(5)]
    assert sent_tokens(ml) == [exs[0].token, exs[1].token]
    assert [e.state for e in exs] == [SENT, SENT, QUEUED, QUEUED, QUEUED]
    assert all(e.mid == -1 for e in exs[2:])
    # another peer is not held back
    other = ml.request(get_request(), PEER2, 0.0, FAR)
    assert sent_tokens(ml) == [other.token]
    # completing one releases the oldest queued
    assert type(ml.receive(piggybacked(exs[0]), PEER, 1.0)) is ResponseReceived
    assert sent_tokens(ml) == [exs[2].token]
    assert exs[2].state == SENT
    ml.receive(rst(exs[1].mid), PEER, 1.1)
    assert sent_tokens(ml) == [exs[3].token]
    ml.receive(piggybacked(exs[3]), PEER, 1.2)
    assert sent_tokens(ml) == [exs[4].token]
    assert [e.state for e in exs] == [DONE, DONE, SENT, DONE, SENT]
    for e in (exs[2], exs[4], other):
        ml.receive(piggybacked(e), e.peer, 2.0)
    assert ml.outbox == []
    assert idle(ml)


def test_nstart_released_slot_retransmits_on_schedule():
    ml = layer(nstart=1)
    a = ml.request(get_request(), PEER, 0.0, FAR)
    b = ml.request(get_request(), PEER, 0.0, FAR)
    drain(ml)
    ml.receive(piggybacked(a), PEER, 10.0)
    [(b_data, _)] = drain(ml)
    # b's retransmission schedule starts when it was actually sent (t=10)
    assert 12.0 <= ml.next_deadline() <= 13.0
    ml.expire(ml.next_deadline())
    assert drain(ml) == [(b_data, PEER)]
    assert b.retransmits == 1


def test_queued_exchange_times_out_without_being_sent():
    ml = layer(nstart=1)
    a = ml.request(get_request(), PEER, 0.0, FAR)
    b = ml.request(get_request(), PEER, 0.0, 1.0)
    drain(ml)
    assert ml.expire(1.0) == [TimedOut(b)]
    assert b.mid == -1
    assert ml.outbox == []
    ml.receive(piggybacked(a), PEER, 1.5)
    assert ml.outbox == []
    assert idle(ml)


def test_cancel_queued_and_sent_exchanges():
    ml = layer(nstart=1)
    a, b, c = (ml.request(get_request(), PEER, 0.0, FAR) for _ in range(3))
    assert sent_tokens(ml) == [a.token]
    ml.cancel(b, 1.0)  # queued: never sent
    assert b.state == DONE and b.outcome is Outcome.CANCELLED
    assert ml.outbox == []
    ml.cancel(a, 2.0)  # sent: frees the slot for c
    assert a.state == DONE
    assert sent_tokens(ml) == [c.token]
    assert c.state == SENT
    ml.cancel(a, 2.5)  # cancelling twice is harmless
    assert ml.outbox == []
    # a's late response and RST are no longer matched
    assert ml.receive(piggybacked(a), PEER, 3.0) is None
    assert ml.receive(rst(a.mid), PEER, 3.0) is None
    ml.cancel(c, 4.0)
    assert idle(ml)
    assert ml.next_deadline() is None
    assert ml.expire(FAR * 2) == []
    assert ml.outbox == []


def test_explicit_token_in_use_rejected():
    ml = layer()
    m1 = get_request()
    m1.token = b"same"
    ml.request(m1, PEER, 0.0, FAR)
    m2 = get_request()
    m2.token = b"same"
    with pytest.raises(ValueError):
        ml.request(m2, PEER, 0.0, FAR)
    m3 = get_request()
    m3.token = b"same"
    ml.request(m3, PEER2, 0.0, FAR)  # another peer may use it


# -- server role ------------------------------------------------------------------


def incoming(mtype: int = CON, mid: int = 0x1000, token: bytes = b"tk", path: str = "x") -> bytes:
    m = Message(mtype, Code.GET, mid, token)
    m.uri_path = [path]
    return m.encode()


def test_incoming_con_request_and_piggybacked_response():
    ml = layer()
    data = incoming()
    event = ml.receive(data, PEER, 0.0)
    assert event is not None
    assert type(event) is RequestReceived
    req, peer = event
    assert peer == PEER and event.message is req
    assert req == Message.decode(data)
    assert ml.outbox == []
    assert ml.stats["requests_received"] == 1
    out = ml.respond(req, PEER, Message(code=Code.CONTENT, payload=b"hello"), 0.0)
    assert drain(ml) == [(out, PEER)]  # through the outbox, like everything the engine sends
    resp = Message.decode(out)
    assert resp.mtype == ACK
    assert resp.mid == 0x1000 and resp.token == b"tk"
    assert resp.code == Code.CONTENT and resp.payload == b"hello"


def test_incoming_non_request_gets_non_response_with_new_mid():
    ml = layer()
    req, _ = ml.receive(incoming(NON, mid=0x2000, token=b"n1"), PEER, 0.0)
    out = ml.respond(req, PEER, Message(code=Code.CONTENT, payload=b"a"), 0.0)
    resp = Message.decode(out)
    assert resp.mtype == NON and resp.token == b"n1"
    assert resp.mid != 0x2000
    req2, _ = ml.receive(incoming(NON, mid=0x2001, token=b"n2"), PEER, 0.0)
    out2 = ml.respond(req2, PEER, Message(code=Code.CONTENT), 0.0)
    resp2 = Message.decode(out2)
    assert resp2.mid == (resp.mid + 1) & 0xFFFF  # fresh, sequential MIDs
    assert drain(ml) == [(out, PEER), (out2, PEER)]


def test_duplicate_con_after_response_resends_cached_bytes():
    ml = layer()
    data = incoming()
    req, _ = ml.receive(data, PEER, 0.0)
    out = ml.respond(req, PEER, Message(code=Code.CONTENT, payload=b"once"), 0.0)
    drain(ml)
    assert ml.receive(data, PEER, 1.0) is None
    assert drain(ml) == [(out, PEER)]
    assert ml.receive(data, PEER, 2.0) is None
    assert drain(ml) == [(out, PEER)]
    assert ml.stats["duplicates"] == 2
    assert ml.stats["requests_received"] == 1


def test_duplicate_con_while_handled_gets_empty_ack():
    ml = layer()
    data = incoming(mid=0xBEEF)
    req, _ = ml.receive(data, PEER, 0.0)
    ml.started(req, PEER)
    assert ml.receive(data, PEER, 1.0) is None
    assert drain(ml) == [(empty_ack(0xBEEF), PEER)]
    assert ml.stats["duplicates"] == 1


def test_duplicate_con_before_handling_gets_the_response_when_ready():
    ml = layer()
    data = incoming(mid=0xBEEF)
    req, _ = ml.receive(data, PEER, 0.0)
    assert ml.receive(data, PEER, 0.1) is None  # same batch, handler not started yet
    assert drain(ml) == []
    ml.started(req, PEER)
    out = ml.respond(req, PEER, Message(code=Code.CONTENT, payload=b"x"), 0.1)
    assert drain(ml) == [(out, PEER)] * 2  # the copy is answered with the same response
    assert ml.stats["duplicates"] == 1 and ml.stats["requests_received"] == 1


def test_duplicate_non_before_response_is_dropped():
    ml = layer()
    data = incoming(NON, mid=0x0102)
    assert type(ml.receive(data, PEER, 0.0)) is RequestReceived
    assert ml.receive(data, PEER, 1.0) is None
    assert ml.outbox == []
    assert ml.stats["duplicates"] == 1


def test_same_mid_from_other_peer_is_not_a_duplicate():
    ml = layer()
    data = incoming()
    assert type(ml.receive(data, PEER, 0.0)) is RequestReceived
    assert type(ml.receive(data, PEER2, 0.0)) is RequestReceived
    assert ml.stats["duplicates"] == 0


def test_dedup_entry_expires_after_exchange_lifetime():
    ml = layer()
    lifetime = ml.params.exchange_lifetime
    data = incoming()
    req, _ = ml.receive(data, PEER, 0.0)
    ml.respond(req, PEER, Message(code=Code.CONTENT), 0.0)
    drain(ml)
    assert ml.next_deadline() == lifetime
    ml.expire(lifetime - 1)
    assert ml.receive(data, PEER, lifetime - 1) is None  # still a duplicate
    drain(ml)
    ml.expire(lifetime + 1)
    assert ml.next_deadline() is None
    event = ml.receive(data, PEER, lifetime + 1)
    assert event is not None and type(event) is RequestReceived
    assert ml.stats["requests_received"] == 2


def test_non_dedup_entry_expires_after_non_lifetime():
    ml = layer()
    data = incoming(NON)
    ml.receive(data, PEER, 0.0)
    assert ml.next_deadline() == ml.params.non_lifetime
    ml.expire(ml.params.non_lifetime + 1)
    assert type(ml.receive(data, PEER, ml.params.non_lifetime + 1)) is RequestReceived


def test_dedup_expiry_with_mixed_con_and_non_lifetimes():
    # a NON entry (145 s) received after a CON entry (247 s) must not
    # outlive its own lifetime just because it sits behind the CON one
    ml = layer()
    ml.receive(incoming(CON, mid=1), PEER, 0.0)
    non = incoming(NON, mid=2)
    ml.receive(non, PEER, 1.0)
    assert ml.next_deadline() == 1.0 + ml.params.non_lifetime
    ml.expire(150.0)
    event = ml.receive(non, PEER, 150.0)
    assert event is not None and type(event) is RequestReceived


def test_dedup_capacity_evicts_oldest():
    ml = layer(dedup_capacity=4, dedup_peer_share=1.0)
    peers = [(f"192.0.2.{i}", 5683) for i in range(5)]
    for i, peer in enumerate(peers):
        assert type(ml.receive(incoming(mid=1), peer, float(i))) is RequestReceived
    assert ml.stats["dedup_evicted"] == 1 and len(ml.dedup) == 4
    drain(ml)
    assert ml.receive(incoming(mid=1), peers[4], 5.0) is None  # newest is remembered
    assert ml.receive(incoming(mid=1), peers[1], 5.0) is None
    assert type(ml.receive(incoming(mid=1), peers[0], 6.0)) is RequestReceived  # oldest was evicted


def test_ping_gets_rst_with_same_mid():
    ml = layer()
    assert ml.receive(b"\x40\x00\xab\xcd", PEER, 0.0) is None
    assert drain(ml) == [(rst(0xABCD), PEER)]
    assert ml.stats["pings"] == 1
    assert ml.stats["requests_received"] == 0


def test_malformed_con_gets_rst():
    ml = layer()
    # CON GET, MID 0x1234, TKL 8 but no token bytes
    assert ml.receive(b"\x48\x01\x12\x34", PEER, 0.0) is None
    assert drain(ml) == [(rst(0x1234), PEER)]
    assert ml.stats["malformed"] == 1


def test_malformed_non_is_dropped():
    ml = layer()
    assert ml.receive(b"\x58\x01\x12\x34", PEER, 0.0) is None
    assert ml.outbox == []
    assert ml.stats["malformed"] == 1


@pytest.mark.parametrize("data", [b"", b"\x40", b"\x40\x01\x00", b"\x80\x01\x00\x01"])
def test_garbage_without_a_v1_con_header_is_dropped(data):
    ml = layer()
    assert ml.receive(data, PEER, 0.0) is None
    assert ml.outbox == []
    assert ml.stats["malformed"] == 1


def test_request_in_ack_gets_rst():
    ml = layer()
    data = Message(ACK, Code.GET, 0x0505, b"a").encode()
    assert ml.receive(data, PEER, 0.0) is None
    assert drain(ml) == [(rst(0x0505), PEER)]
    assert ml.stats["malformed"] == 1
    assert ml.stats["requests_received"] == 0


def test_request_in_rst_is_dropped():
    ml = layer()
    data = Message(RST, Code.GET, 0x0505, b"a").encode()
    assert ml.receive(data, PEER, 0.0) is None
    assert ml.outbox == []
    assert ml.stats["malformed"] == 1


def test_empty_non_is_dropped_and_unknown_empty_ack_ignored():
    ml = layer()
    assert ml.receive(b"\x50\x00\x00\x01", PEER, 0.0) is None
    assert ml.stats["malformed"] == 1
    assert ml.receive(empty_ack(0x0001), PEER, 0.0) is None
    assert ml.receive(rst(0x0001), PEER, 0.0) is None
    assert ml.outbox == []


# -- hypothesis: the client state machine under random operations -------------------

PEERS = [("198.51.100.1", 5683), ("198.51.100.2", 5683)]

request_op = st.tuples(
    st.just("request"),
    st.integers(0, len(PEERS) - 1),
    st.booleans(),
    st.floats(0.5, 300.0),
)
op_strategy = st.one_of(
    request_op,
    request_op,  # twice: requests should often pile up behind NSTART
    st.tuples(
        st.just("reply"),
        st.integers(0, 1000),
        st.sampled_from(["piggyback", "ack", "rst", "con", "non", "wrong_token"]),
    ),
    st.tuples(st.just("expire"), st.floats(0.0, 40.0)),
    st.tuples(st.just("cancel"), st.integers(0, 1000)),
    st.tuples(st.just("wait"), st.floats(0.0, 10.0)),
)


def reply_datagram(ex, kind: str, mid: int) -> bytes:
    m = max(ex.mid, 0)
    if kind == "piggyback":
        return Message(ACK, Code.CONTENT, m, ex.token, payload=b"p").encode()
    if kind == "ack":
        return empty_ack(m)
    if kind == "rst":
        return rst(m)
    if kind == "con":
        return Message(CON, Code.CONTENT, mid, ex.token, payload=b"c").encode()
    if kind == "non":
        return Message(NON, Code.CONTENT, mid, ex.token, payload=b"n").encode()
    return Message(ACK, Code.CONTENT, m, b"\xff" * 5).encode()


def check_invariants(ml: MessageLayer, exchanges: list, nstart: int) -> None:
    for peer in PEERS:
        mine = [e for e in exchanges if e.peer == peer]
        active = sum(1 for e in mine if e.state in (SENT, ACKED))
        queued = sum(1 for e in mine if e.state == QUEUED)
        assert active <= nstart
        if queued:  # nothing waits while a slot is free
            assert active == nstart
    assert ml.pending() == sum(1 for e in exchanges if e.state != DONE)
    for e in exchanges:
        # one ending each, and a response exactly when it ended with one
        assert (e.outcome is not None) == e.done == (e.state is DONE)
        assert e.awaiting == (e.state in (QUEUED, SENT, ACKED))
        if e.outcome is Outcome.RESPONSE:
            assert isinstance(e.result, Message)
        else:
            assert e.result is None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32),
    nstart=st.integers(1, 3),
    ops=st.lists(op_strategy, min_size=20, max_size=80),
)
def test_property_client_state_machine(seed, nstart, ops):
    ml = MessageLayer(TransmissionParameters(nstart=nstart), rng=Random(seed), token_length=2)
    assert ml.params.nstart == nstart
    exchanges: list = []
    finished: dict[int, str] = {}  # id(exchange) -> event kind
    now = 0.0
    reply_mid = 0

    def record(events):
        for event in events:
            ex = event.exchange
            assert id(ex) not in finished, "an exchange finished twice"
            assert ex.state == DONE
            finished[id(ex)] = type(event).__name__

    for op in ops:
        kind = op[0]
        if kind == "request":
            _, p, con, timeout = op
            ex = ml.request(get_request(CON if con else NON), PEERS[p], now, timeout)
            exchanges.append(ex)
        elif kind == "reply" and exchanges:
            ex = exchanges[op[1] % len(exchanges)]
            reply_mid = (reply_mid + 1) & 0xFFFF
            event = ml.receive(reply_datagram(ex, op[2], reply_mid), ex.peer, now)
            if event is not None:
                assert type(event) in (ResponseReceived, ResetReceived)
                record([event])
        elif kind == "expire":
            now += op[1]
            record(ml.expire(now))
        elif kind == "cancel" and exchanges:
            ex = exchanges[op[1] % len(exchanges)]
            was_done = ex.state == DONE
            ml.cancel(ex, now)
            assert ex.state == DONE
            if not was_done:
                finished[id(ex)] = "cancelled"
        elif kind == "wait":
            now += op[1]
        for data, _ in ml.outbox:
            Message.decode(data)  # everything the engine sends is well formed
        ml.outbox.clear()
        check_invariants(ml, exchanges, nstart)
        nd = ml.next_deadline()
        assert nd is None or nd >= 0

    record(ml.expire(now + 1e6))
    ml.outbox.clear()
    assert all(e.state == DONE for e in exchanges)
    assert set(finished) == {id(e) for e in exchanges}
    assert ml.table_sizes() == {k: 0 for k in ml.table_sizes()}
    assert ml.pending() == 0
    assert ml.next_deadline() is None


# -- hypothesis: receive() never raises ---------------------------------------------

header_datagrams = st.builds(
    lambda b0, code, mid, rest: bytes((0x40 | b0, code)) + mid.to_bytes(2, "big") + rest,
    st.integers(0, 0x3F),
    st.integers(0, 255),
    st.integers(0, 0xFFFF),
    st.binary(max_size=40),
)


@settings(max_examples=400, deadline=None)
@given(
    datagrams=st.lists(st.one_of(st.binary(max_size=64), header_datagrams), max_size=20),
    seed=st.integers(0, 2**16),
)
def test_property_receive_never_raises(datagrams, seed):
    ml = MessageLayer(TransmissionParameters(nstart=1), rng=Random(seed), token_length=1)
    exchanges = [ml.request(get_request(), PEERS[0], 0.0, 100.0) for _ in range(3)]
    ml.outbox.clear()
    now = 0.0
    for data in datagrams:
        now += 0.5
        event = ml.receive(data, PEERS[0], now)
        if event is not None:
            assert type(event) in (RequestReceived, ResponseReceived, ResetReceived)
            if type(event) is RequestReceived:
                assert event.peer == PEERS[0]
                ml.respond(event.message, PEERS[0], Message(code=Code.CONTENT), now)
            else:
                assert event.exchange in exchanges and event.exchange.state == DONE
        for out, _ in ml.outbox:
            Message.decode(out)
        ml.outbox.clear()
    ml.expire(now + 1e6)
    assert ml.pending() == 0


def test_a_flooding_peer_cannot_evict_other_peers_dedup_entries():
    ml = MessageLayer(rng=Random(1), dedup_capacity=8)  # each peer may hold 2
    other = ("198.51.100.7", 5683)
    for mid in (1, 2):
        assert type(ml.receive(incoming(mid=mid), other, 0.0)) is RequestReceived
    for mid in range(100, 160):  # a flood from one peer
        assert type(ml.receive(incoming(mid=mid), PEER, 0.0)) is RequestReceived
    # the flooding peer pushed out its own oldest entries, one per new request
    assert ml.stats["dedup_evicted"] == 58 and ml.stats["dedup_peer_full"] == 60  # 59 + 1 (other)
    # the other peer's entries survived: its retransmissions are still duplicates
    for mid in (1, 2):
        assert ml.receive(incoming(mid=mid), other, 1.0) is None
    assert ml.stats["duplicates"] == 2
    # the flooder's most recent requests are remembered, its oldest forgotten
    assert ml.receive(incoming(mid=159), PEER, 1.0) is None
    assert ml.receive(incoming(mid=158), PEER, 1.0) is None
    assert type(ml.receive(incoming(mid=100), PEER, 1.0)) is RequestReceived
    assert ml.stats["duplicates"] == 4
    assert len(ml.dedup) <= 8 and ml.dedup.held_by(PEER) == 2


def test_dedup_bookkeeping_stays_bounded_under_mixed_traffic():
    """Generations follow the cache: expiry, own eviction, global eviction
    and MID reuse leave no stale bookkeeping behind once entries expire."""
    ml = MessageLayer(rng=Random(2), dedup_capacity=64)
    rnd = Random(3)
    peers = [(f"192.0.2.{i}", 5683) for i in range(6)]
    now = 0.0
    for i in range(20_000):
        now += 0.01
        peer = rnd.choice(peers[:2]) if i % 3 else rnd.choice(peers)  # two heavy peers
        mtype = CON if rnd.random() < 0.6 else NON
        ml.receive(incoming(mtype, mid=rnd.randrange(512), token=bytes([i % 7])), peer, now)
        ml.outbox.clear()
        if i % 500 == 0:
            ml.expire(now)
        assert len(ml.dedup) <= 64
        assert all(ml.dedup.held_by(p) <= ml.dedup.peer_cap for p in peers)
        assert len(ml.dedup._births) <= 4 * 6 + 64 + 1
    ml.expire(now + 1000)
    assert len(ml.dedup) == 0 and set(ml.dedup.table_sizes().values()) == {0}


def test_a_flood_at_its_share_keeps_the_bookkeeping_bounded():
    """A peer at its share drops its own oldest generation (half a share) at a
    time, so memory follows the cache size, not the request rate times
    EXCHANGE_LIFETIME."""
    ml = MessageLayer(rng=Random(4), dedup_capacity=4096)  # share 1,024
    for i in range(200_000):
        ml.receive(incoming(NON, mid=i & 0xFFFF, token=i.to_bytes(3, "big")), PEER, i * 1e-5)
    assert ml.dedup.held_by(PEER) <= 1024
    assert len(ml.dedup._births) <= 4 + 64 + 1
    assert ml.stats["dedup_evicted"] >= 200_000 - 1024 and ml.stats["dedup_peer_full"] > 0


def test_a_reused_mid_with_a_new_token_is_a_new_request():
    """A peer whose MIDs wrapped within EXCHANGE_LIFETIME (over 65,536 requests
    in 247 s) gets its new request handled, not the old cached response."""
    ml = layer()
    req, _ = ml.receive(incoming(mid=7, token=b"old"), PEER, 0.0)
    old = ml.respond(req, PEER, Message(code=Code.CONTENT, payload=b"old"), 0.0)
    drain(ml)
    ev = ml.receive(incoming(mid=7, token=b"new"), PEER, 1.0)
    assert type(ev) is RequestReceived and ev.message.token == b"new"
    assert drain(ml) == []  # the old response was not sent for it
    new = ml.respond(ev.message, PEER, Message(code=Code.CONTENT, payload=b"new"), 1.0)
    assert new != old and drain(ml) == [(new, PEER)]
    # a real retransmission of the new request is still a duplicate
    assert ml.receive(incoming(mid=7, token=b"new"), PEER, 2.0) is None
    assert drain(ml) == [(new, PEER)]
    assert ml.stats["mid_reused"] == 1 and ml.stats["duplicates"] == 1
    assert len(ml.dedup) == 1 and ml.dedup.held_by(PEER) == 1


def test_full_cache_evicts_the_oldest_generation():
    """At capacity the oldest generation goes at once (cheaper per request);
    the cache never exceeds its capacity and recent requests stay
    deduplicated."""
    ml = MessageLayer(rng=Random(5), dedup_capacity=1024)  # share 256
    peers = [(f"198.51.100.{i}", 5683) for i in range(5)]
    n = 0
    for i in range(1200):
        for peer in peers:
            ml.receive(incoming(NON, mid=i, token=i.to_bytes(2, "big")), peer, n * 1e-4)
            n += 1
            assert len(ml.dedup) <= 1024
    ml.outbox.clear()
    assert ml.stats["dedup_evicted"] == n - len(ml.dedup)
    assert len(ml.dedup) >= 5 * 128  # at least each peer's newest half-share
    for peer in peers:  # each peer's latest request is still remembered
        assert (
            ml.receive(incoming(NON, mid=1199, token=(1199).to_bytes(2, "big")), peer, 1.0) is None
        )


def test_each_role_has_its_exchange_type_states_and_one_outcome():
    """A request of ours is a RequestExchange (QUEUED/SENT/ACKED → DONE with
    a response), a CON response or notification of ours a ReplyExchange
    (SENT → DONE with ACKNOWLEDGED, RESET or TIMEOUT): every ending has an
    Outcome, and ``result`` holds a message only when one came."""
    ml = layer(nstart=1)
    a = ml.request(get_request(), PEER, 0.0, FAR)
    b = ml.request(get_request(), PEER, 0.0, FAR)
    assert type(a) is RequestExchange and a.state is SENT and a.awaiting and not a.done
    assert b.state is QUEUED and b.awaiting and b.outcome is None
    ml.receive(empty_ack(a.mid), PEER, 0.1)
    assert a.state is ACKED and a.awaiting
    ml.receive(Message(CON, Code.CONTENT, 0x4444, a.token, payload=b"x").encode(), PEER, 0.2)
    assert a.done and not a.awaiting and a.outcome is Outcome.RESPONSE
    assert a.result.payload == b"x" and a.error is None
    assert b.state is SENT  # a's NSTART slot went to b
    # server role: a notification and a separate response are ReplyExchanges
    drain(ml)
    note = Message(CON, Code.CONTENT, 0, b"\x01", payload=b"n")
    n = ml.notify(PEER2, note, True, 1.0)
    assert type(n) is ReplyExchange and n.state is SENT and not n.done
    ml.receive(empty_ack(n.mid), PEER2, 1.1)
    assert n.done and n.outcome is Outcome.ACKNOWLEDGED and n.result is None
    req = Message(CON, Code.GET, 0x0100, b"\x02")
    ml.receive(req.encode(), PEER2, 2.0)
    ml.acknowledge(req, PEER2)
    assert ml.respond(req, PEER2, Message(ACK, Code.CONTENT), 2.1) == b""
    (sep,) = [e for e in ml._by_mid.values() if e.peer == PEER2]
    assert type(sep) is ReplyExchange and sep.con
    ml.receive(rst(sep.mid), PEER2, 2.2)
    assert sep.done and sep.outcome is RESET
    # a transport failure and a close end requests with their own outcomes
    err = ConnectionError("the DTLS session failed")
    (ended,) = ml.cancel_peer(PEER, 3.0, err)
    assert ended == (b, False) and b.outcome is Outcome.FAILED and b.error is err
    c = ml.request(get_request(), PEER, 4.0, FAR)
    assert ml.cancel_all(4.1) == [c] and c.outcome is Outcome.CLOSED and c.result is None
    assert idle(ml)
