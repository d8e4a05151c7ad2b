"""Sans-I/O tests of Observe (RFC 7641): the §3.4 freshness rule
(greencoap.protocol.observe) and Observe registrations in the message layer
(greencoap.protocol.messaging).

No sockets and no sleeping: ``now`` values are fed directly, the RNG is a
seeded ``random.Random`` and what the engine sends is read from ``outbox``.
"""

from __future__ import annotations

from random import Random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from greencoap.codes import Code, Type
from greencoap.message import Message
from greencoap.options import OptionNumber
from greencoap.protocol.events import NotificationReceived, ResponseReceived
from greencoap.protocol.messaging import (
    DONE,
    OBSERVING,
    QUEUED,
    SENT,
    MessageLayer,
    Outcome,
    TransmissionParameters,
    empty_ack,
)
from greencoap.protocol.observe import FreshnessFilter, is_fresh

CON, NON, ACK, RST = Type.CON, Type.NON, Type.ACK, Type.RST
PEER = ("192.0.2.1", 5683)
FAR = 1e9
TIMEOUT = 60.0  # the registration's request timeout

# -- is_fresh / FreshnessFilter (§3.4) ---------------------------------------------------


@pytest.mark.parametrize(
    ("v1", "t1", "v2", "t2", "fresh"),
    [
        (5, 0.0, 6, 1.0, True),  # plainly newer
        (0xFFFFFF, 0.0, 0, 1.0, True),  # wrapped around
        (0xFFFFF0, 0.0, 0x10, 1.0, True),  # wrapped around, a little further
        (5, 0.0, 3, 1.0, False),  # older
        (5, 0.0, 3, 128.0, False),  # older, 128 s is not yet "more than 128 s"
        (5, 0.0, 3, 128.5, True),  # older number but T2 > T1 + 128: fresh
        (5, 10.0, 5, 11.0, False),  # equal: a duplicate, not fresh
        (5, 10.0, 5, 200.0, True),  # equal but long after
        (0, 0.0, 1 << 23, 1.0, False),  # exactly half the space ahead: not fresh
        (0, 0.0, (1 << 23) - 1, 1.0, True),  # just under half ahead: fresh
        (1 << 23, 0.0, 0, 1.0, False),  # exactly half behind: not fresh
        ((1 << 23) + 1, 0.0, 0, 1.0, True),  # more than half behind: wrapped, fresh
    ],
)
def test_is_fresh_rule(v1, t1, v2, t2, fresh):
    assert is_fresh(v1, t1, v2, t2) is fresh


@given(v=st.integers(0, 0xFFFFFF), d=st.integers(1, (1 << 23) - 1), t=st.floats(0, 1e6))
def test_is_fresh_property_serial_arithmetic(v, d, t):
    ahead = (v + d) & 0xFFFFFF
    assert is_fresh(v, t, ahead, t + 1)  # d ahead (mod 2**24) is newer
    assert not is_fresh(ahead, t, v, t + 1)  # and then v is older
    assert is_fresh(ahead, t, v, t + 129)  # unless more than 128 s passed
    assert not is_fresh(v, t, v, t + 1)


def test_freshness_filter_drops_stale_and_duplicates():
    f = FreshnessFilter()
    assert f.accept(10, 0.0)  # the first one always counts
    assert f.accept(11, 1.0)
    assert not f.accept(11, 2.0)  # duplicate
    assert not f.accept(9, 3.0)  # reordered, older
    assert f.dropped == 2
    assert (f.last_seq, f.last_time) == (11, 1.0)  # drops don't move the reference
    assert f.accept(0xFFFFFF & (11 + 100), 4.0)
    assert f.accept(3, 200.0)  # older number, but > 128 s later
    assert f.last_seq == 3
    assert f.dropped == 2


def test_freshness_filter_wraparound():
    f = FreshnessFilter()
    assert f.accept(0xFFFFFE, 0.0)
    assert f.accept(0xFFFFFF, 1.0)
    assert f.accept(0, 2.0)
    assert f.accept(1, 3.0)
    assert not f.accept(0xFFFFFF, 4.0)
    assert f.dropped == 1


def test_freshness_filter_accepts_final_responses_always():
    f = FreshnessFilter()
    assert f.accept(None, 0.0)
    assert f.last_seq is None
    assert f.accept(50, 1.0)
    assert f.accept(None, 1.5)
    assert f.accept(None, 1.5)
    assert f.last_seq == 50 and f.dropped == 0


# -- MessageLayer: Observe registrations ------------------------------------------------


def layer(seed: int = 1, nstart: int = 1024) -> MessageLayer:
    p = TransmissionParameters(
        ack_timeout=2, ack_random_factor=1.5, max_retransmit=4, nstart=nstart
    )
    return MessageLayer(p, rng=Random(seed))


def drain(ml: MessageLayer) -> list[tuple[bytes, object]]:
    out = list(ml.outbox)
    ml.outbox.clear()
    return out


def idle(ml: MessageLayer) -> bool:
    sizes = ml.table_sizes()
    return all(sizes[k] == 0 for k in ("by_token", "by_mid", "inflight", "queued", "deadlines"))


def observe_get(path: str = "obs", observe: int | None = 0) -> Message:
    m = Message(CON, Code.GET)
    m.uri_path = [path]
    if observe is not None:
        m.observe = observe
    return m


def register(ml: MessageLayer, now: float = 0.0):
    """Send an Observe registration; return (exchange, the request as sent)."""
    ex = ml.request(observe_get(), PEER, now, TIMEOUT, observe=True)
    [(data, peer)] = drain(ml)
    assert peer == PEER
    return ex, Message.decode(data)


def reply(
    ex,
    mtype: int = ACK,
    code: int = Code.CONTENT,
    seq: int | None = None,
    mid: int | None = None,
    payload: bytes = b"22.5",
) -> Message:
    """A response to ``ex``: piggybacked (ACK, same MID) unless ``mtype``/``mid`` say otherwise."""
    m = Message(mtype, code, ex.mid if mid is None else mid, ex.token, payload=payload)
    if seq is not None:
        m.observe = seq
    return m


def established(ml: MessageLayer, now: float = 0.0):
    """A registration answered 2.05 + Observe: the exchange is OBSERVING."""
    ex, _ = register(ml, now)
    ev = ml.receive(reply(ex, seq=1).encode(), PEER, now + 0.5)
    assert ev == ResponseReceived(ex)
    assert ex.state == OBSERVING
    assert drain(ml) == []
    return ex


def test_registration_request_carries_observe_zero():
    ml = layer()
    ex, req = register(ml)
    assert req.observe == 0 and req.code == Code.GET and req.mtype == CON
    assert req.token == ex.token and req.mid == ex.mid
    assert ex.observe is True and ex.state == SENT


def test_registration_answered_with_observe_becomes_observing():
    ml = layer()
    ex, _ = register(ml)
    resp = reply(ex, seq=7, payload=b"first")
    assert ml.receive(resp.encode(), PEER, 0.5) == ResponseReceived(ex)
    assert ex.state == OBSERVING
    assert ex.result == resp  # the registration's response
    assert ex.result.observe == 7
    assert ml.outbox == []  # a piggybacked response needs no ACK
    sizes = ml.table_sizes()
    sizes = {k: sizes[k] for k in ("by_token", "by_mid", "inflight", "queued", "deadlines")}
    assert sizes == {"by_token": 1, "by_mid": 0, "inflight": 0, "queued": 0, "deadlines": 0}
    assert ml.pending() == 1
    assert ml.stats["responses_received"] == 1


def test_observing_exchange_has_no_live_timer():
    ml = layer()
    ex = established(ml)
    assert ml.next_deadline() is None
    # neither a retransmission nor the request timeout (60 s) touches it
    for t in (2.0, 3.0, 10.0, TIMEOUT, TIMEOUT + 1, 1e4, FAR):
        assert ml.expire(t) == []
    assert ml.outbox == []
    assert ex.state == OBSERVING
    assert ml.stats["retransmissions"] == 0 and ml.stats["timeouts"] == 0
    # and the observation still works after all that time
    n = reply(ex, NON, seq=2, mid=0x4242)
    assert ml.receive(n.encode(), PEER, FAR + 1) == NotificationReceived(ex, n)


def test_registration_releases_its_nstart_slot():
    ml = layer(nstart=1)
    ex, _ = register(ml)
    other = ml.request(observe_get("plain", observe=None), PEER, 0.1, TIMEOUT)
    assert other.state == QUEUED and ml.outbox == []
    assert ml.table_sizes()["queued"] == 1
    ml.receive(reply(ex, seq=1).encode(), PEER, 0.5)
    assert ex.state == OBSERVING
    # the queued request goes out at that very moment
    [(data, peer)] = drain(ml)
    sent = Message.decode(data)
    assert peer == PEER and sent.token == other.token and sent.uri_path == ["plain"]
    assert other.state == SENT
    assert ml.table_sizes()["inflight"] == 1  # only `other` counts against NSTART
    # other's CON schedule starts at 0.5, when it was sent
    assert 2.5 <= ml.next_deadline() <= 3.5
    ml.receive(reply(other).encode(), PEER, 1.0)
    assert other.state == DONE
    sizes = ml.table_sizes()
    assert {k: sizes[k] for k in ("by_token", "by_mid", "inflight", "queued", "deadlines")} == {
        "by_token": 1,
        "by_mid": 0,
        "inflight": 0,
        "queued": 0,
        "deadlines": 0,
    }
    ml.cancel(ex, 2.0)
    assert idle(ml)


def test_separate_response_registers_too():
    ml = layer()
    ex, _ = register(ml)
    ml.receive(empty_ack(ex.mid), PEER, 0.2)
    resp = reply(ex, CON, seq=1, mid=0x5000)
    assert ml.receive(resp.encode(), PEER, 1.0) == ResponseReceived(ex)
    assert ex.state == OBSERVING
    assert drain(ml) == [(empty_ack(0x5000), PEER)]
    assert ml.table_sizes()["by_mid"] == 0
    assert ml.table_sizes()["deadlines"] == 0


def test_con_notification_gives_event_and_ack():
    ml = layer()
    ex = established(ml)
    n = reply(ex, CON, seq=2, mid=0x1234, payload=b"23.0")
    ev = ml.receive(n.encode(), PEER, 5.0)
    assert ev == NotificationReceived(ex, n)
    assert ev.message.payload == b"23.0" and ev.message.observe == 2
    assert drain(ml) == [(empty_ack(0x1234), PEER)]
    assert ex.state == OBSERVING
    assert ml.stats["notifications"] == 1


def test_duplicate_con_notification_acked_again_without_event():
    ml = layer()
    ex = established(ml)
    data = reply(ex, CON, seq=2, mid=0x1234).encode()
    assert type(ml.receive(data, PEER, 5.0)) is NotificationReceived
    assert drain(ml) == [(empty_ack(0x1234), PEER)]
    assert ml.receive(data, PEER, 7.0) is None  # our ACK was lost: the server retransmits
    assert drain(ml) == [(empty_ack(0x1234), PEER)]
    assert ml.stats["notifications"] == 1 and ml.stats["duplicates"] == 1
    assert ex.state == OBSERVING


def test_non_notification_gives_event_and_no_ack():
    ml = layer()
    ex = established(ml)
    n = reply(ex, NON, seq=3, mid=0x2000)
    assert ml.receive(n.encode(), PEER, 5.0) == NotificationReceived(ex, n)
    assert ml.outbox == []
    assert ex.state == OBSERVING


def test_notifications_keep_coming_in_any_type_mix():
    ml = layer()
    ex = established(ml)
    for i in range(10):
        mtype = CON if i % 3 == 0 else NON
        n = reply(ex, mtype, seq=2 + i, mid=0x3000 + i, payload=str(i).encode())
        assert ml.receive(n.encode(), PEER, 1.0 + i) == NotificationReceived(ex, n)
        assert drain(ml) == ([(empty_ack(0x3000 + i), PEER)] if mtype == CON else [])
    assert ml.stats["notifications"] == 10
    assert ex.state == OBSERVING


@pytest.mark.parametrize(
    ("mtype", "code", "seq"),
    [
        (CON, Code.NOT_FOUND, None),
        (CON, Code.CONTENT, None),  # 2.05 without Observe: the last one
        (NON, Code.NOT_FOUND, None),
        (CON, Code.NOT_FOUND, 9),  # not 2.xx: final even with an Observe option
        (NON, Code.INTERNAL_SERVER_ERROR, None),
    ],
)
def test_final_notification_ends_the_observation(mtype, code, seq):
    ml = layer()
    ex = established(ml)
    final = reply(ex, mtype, code=code, seq=seq, mid=0x6000, payload=b"gone")
    assert ml.receive(final.encode(), PEER, 5.0) == NotificationReceived(ex, final)
    assert ex.state == DONE
    assert ex.result == final
    assert drain(ml) == ([(empty_ack(0x6000), PEER)] if mtype == CON else [])
    assert ml.table_sizes()["by_token"] == 0
    assert idle(ml)
    # anything later with that token is unexpected
    late = reply(ex, CON, seq=10, mid=0x6001)
    assert ml.receive(late.encode(), PEER, 6.0) is None
    assert drain(ml) == [(bytes((0x70, 0, 0x60, 0x01)), PEER)]


def test_server_without_observe_support_gives_a_plain_response():
    ml = layer()
    ex, _ = register(ml)
    resp = reply(ex, seq=None)  # 2.05 without an Observe option
    assert ml.receive(resp.encode(), PEER, 0.5) == ResponseReceived(ex)
    assert ex.state == DONE and ex.result == resp
    assert idle(ml)


def test_registration_answered_4_04_is_done():
    ml = layer()
    ex, _ = register(ml)
    resp = reply(ex, code=Code.NOT_FOUND)
    assert ml.receive(resp.encode(), PEER, 0.5) == ResponseReceived(ex)
    assert ex.state == DONE and ex.result.code == Code.NOT_FOUND
    assert idle(ml)


def test_error_with_observe_option_does_not_register():
    ml = layer()
    ex, _ = register(ml)
    ev = ml.receive(reply(ex, code=Code.NOT_FOUND, seq=3).encode(), PEER, 0.5)
    assert type(ev) is ResponseReceived
    assert ex.state == DONE
    assert idle(ml)


def test_non_observe_request_never_becomes_observing():
    # Observe option in the answer, but the request was not an observe=True one
    ml = layer()
    ex = ml.request(observe_get(), PEER, 0.0, TIMEOUT)
    drain(ml)
    assert ml.receive(reply(ex, seq=4).encode(), PEER, 0.5) == ResponseReceived(ex)
    assert ex.state == DONE
    assert idle(ml)


def test_cancelled_observation_rsts_later_notifications():
    ml = layer()
    ex = established(ml)
    ml.cancel(ex, 3.0)
    assert ex.state == DONE and ex.outcome is Outcome.CANCELLED
    assert idle(ml)
    assert ml.outbox == []  # cancel itself sends nothing (deregistration is the caller's)
    # a CON notification for the forgotten token: RST (§3.6)
    assert ml.receive(reply(ex, CON, seq=5, mid=0x7000).encode(), PEER, 4.0) is None
    assert drain(ml) == [(bytes((0x70, 0, 0x70, 0x00)), PEER)]
    # a NON notification carrying Observe: RST too (RFC 7641 §3.6)
    assert ml.receive(reply(ex, NON, seq=6, mid=0x7001).encode(), PEER, 5.0) is None
    assert drain(ml) == [(bytes((0x70, 0, 0x70, 0x01)), PEER)]
    # a NON without Observe is merely dropped
    assert ml.receive(reply(ex, NON, mid=0x7002).encode(), PEER, 5.5) is None
    assert ml.outbox == []
    assert ml.stats["rst_sent"] == 2
    assert ml.stats["notifications"] == 0
    ml.cancel(ex, 6.0)  # cancelling twice is harmless
    assert idle(ml)


def test_second_response_to_a_plain_request_gets_rst():
    ml = layer()
    ex = ml.request(observe_get("plain", observe=None), PEER, 0.0, TIMEOUT)
    drain(ml)
    assert ml.receive(reply(ex).encode(), PEER, 0.5) == ResponseReceived(ex)
    assert ex.state == DONE
    second = reply(ex, CON, mid=0x0BAD)
    assert ml.receive(second.encode(), PEER, 1.0) is None
    assert drain(ml) == [(bytes((0x70, 0, 0x0B, 0xAD)), PEER)]
    assert ml.stats["unexpected"] == 1
    assert idle(ml)


def test_notification_from_another_peer_is_not_matched():
    ml = layer()
    ex = established(ml)
    other = ("192.0.2.99", 5683)
    assert ml.receive(reply(ex, CON, seq=2, mid=0x1111).encode(), other, 1.0) is None
    assert drain(ml) == [(bytes((0x70, 0, 0x11, 0x11)), other)]
    assert ex.state == OBSERVING


def test_full_lifecycle_leaves_no_state():
    ml = layer(nstart=1)
    a = established(ml)
    b, _ = register(ml, 1.0)  # sent at once: `a` no longer holds the slot
    ml.receive(reply(b, seq=1).encode(), PEER, 1.5)
    assert b.state == OBSERVING
    for i in range(3):
        ml.receive(reply(a, CON, seq=2 + i, mid=0x100 + i).encode(), PEER, 2.0 + i)
        ml.receive(reply(b, NON, seq=2 + i, mid=0x200 + i).encode(), PEER, 2.0 + i)
    drain(ml)
    ml.receive(reply(a, CON, code=Code.NOT_FOUND, mid=0x1FF).encode(), PEER, 10.0)
    ml.cancel(b, 11.0)
    assert a.state == b.state == DONE
    assert idle(ml)
    assert ml.pending() == 0
    # only the dedup entries of the CON notifications remain, and they age out
    assert ml.next_deadline() is not None
    assert ml.expire(FAR) == []
    assert ml.next_deadline() is None
    assert drain(ml) == [(empty_ack(0x1FF), PEER)]


def test_observe_option_number():
    # the engine looks for option 6 itself; keep it in step with the registry
    assert OptionNumber.OBSERVE == 6
