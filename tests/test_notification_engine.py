"""Sans-I/O tests of what the message layer does for a server's notifications
and its message IDs (RFC 7641 §4.5, RFC 7252 §4.4): a CON notification
replaced in flight, the bounded state kept for NON ones, per-peer MIDs, and a
client that tells a wrapped MID from a retransmission."""

from __future__ import annotations

from random import Random

from hypothesis import given
from hypothesis import strategies as st

from greencoap.codes import Code, Type
from greencoap.message import Message
from greencoap.protocol.events import Acknowledged, ResetReceived
from greencoap.protocol.messaging import (
    DONE,
    MessageLayer,
    TransmissionParameters,
)

PEER = ("192.0.2.1", 5683)
OTHER = ("192.0.2.2", 5683)


def layer(**kw) -> MessageLayer:
    p = TransmissionParameters(ack_timeout=1.0, ack_random_factor=1.0, max_retransmit=4)
    return MessageLayer(p, rng=Random(7), **kw)


def note(value: bytes, seq: int) -> Message:
    m = Message(Type.CON, Code.CONTENT, 0, b"tk", [(6, bytes((seq,)))], value)
    return m


def sent(ml: MessageLayer) -> list[Message]:
    out = [Message.decode(d) for d, _ in ml.outbox]
    ml.outbox.clear()
    return out


def test_a_replaced_con_notification_keeps_its_schedule_and_gets_a_new_mid():
    ml = layer()
    ex = ml.notify(PEER, note(b"one", 1), True, 0.0)
    (first,) = sent(ml)
    ml.replace_notification(ex, note(b"two", 2), 0.5)
    assert sent(ml) == []  # nothing goes out early: the schedule is the old one's
    ml.expire(1.0)  # the first retransmission is due at 1.0
    (again,) = sent(ml)
    assert again.payload == b"two" and again.observe == 2 and again.mid != first.mid
    # the older MID's ACK no longer counts; the newer one's does
    assert ml.receive(Message(Type.ACK, Code.EMPTY, first.mid).encode(), PEER, 1.1) is None
    assert ex.state != DONE
    ev = ml.receive(Message(Type.ACK, Code.EMPTY, again.mid).encode(), PEER, 1.2)
    assert ev is not None and type(ev) is Acknowledged and ev.exchange is ex and ex.state == DONE
    assert ml.stats["notifications_replaced"] == 1


def test_rst_to_a_replaced_notification_resets_it():
    ml = layer()
    ex = ml.notify(PEER, note(b"one", 1), True, 0.0)
    sent(ml)
    ml.replace_notification(ex, note(b"two", 2), 0.2)
    ev = ml.receive(Message(Type.RST, Code.EMPTY, ex.mid).encode(), PEER, 0.3)
    assert type(ev) is ResetReceived and ex.state == DONE


def test_state_for_non_notifications_is_bounded_in_count_and_time():
    ml = layer(non_notify_cap=100, non_notify_window=5.0)
    for i in range(10_000):
        ml.notify(PEER, Message(Type.NON, Code.CONTENT, 0, b"tk", [], b"x"), False, i * 0.001)
    sent(ml)
    sizes = ml.table_sizes()
    assert sizes["by_mid"] <= 100 and sizes["non_notifications"] <= 100
    ml.expire(20.0)  # past the window: nothing left
    sizes = ml.table_sizes()
    assert sizes["by_mid"] == 0 and sizes["non_notifications"] == 0


def test_each_peer_has_its_own_mid_counter():
    ml = layer()
    a0 = ml.next_mid(PEER)
    for _ in range(70_000):  # a busy other peer wraps its own counter, not ours
        ml.next_mid(OTHER)
    assert ml.next_mid(PEER) == (a0 + 1) & 0xFFFF


@given(st.lists(st.sampled_from([PEER, OTHER, ("192.0.2.3", 1)]), min_size=1, max_size=300))
def test_mids_to_one_peer_never_repeat_within_65536(peers):
    ml = layer()
    seen: dict = {}
    for p in peers:
        mid = ml.next_mid(p)
        assert mid not in seen.setdefault(p, set())
        seen[p].add(mid)


def test_a_client_takes_a_wrapped_mid_with_another_token_for_a_new_message():
    """A server whose MIDs to us wrapped sends a separate response (CON) with
    a MID we saw within EXCHANGE_LIFETIME but another token: it is delivered,
    not ACKed and dropped as a duplicate."""
    ml = layer()
    exs = []
    for token in (b"t1", b"t2"):
        req = Message(Type.CON, Code.GET, 0, token, [(11, b"slow")])
        exs.append(ml.request(req, PEER, 0.0, 100.0))
    reqs = sent(ml)
    for r in reqs:  # both acknowledged empty: separate responses follow
        ml.receive(Message(Type.ACK, Code.EMPTY, r.mid).encode(), PEER, 0.1)
    first = Message(Type.CON, Code.CONTENT, 0x4242, b"t1", [], b"one").encode()
    ev = ml.receive(first, PEER, 0.2)
    assert ev is not None and ev.exchange is exs[0]
    wrapped = Message(Type.CON, Code.CONTENT, 0x4242, b"t2", [], b"two").encode()
    ev = ml.receive(wrapped, PEER, 60.0)
    assert ev is not None and ev.exchange is exs[1] and exs[1].result.payload == b"two"
    assert ml.stats["mid_reused"] == 1
    assert ml.receive(wrapped, PEER, 61.0) is None  # a real retransmission: ACKed again
    assert ml.stats["duplicates"] == 1
