"""SessionSchedule: the DTLS sessions' deadlines without a walk over all sessions.

Real client sessions on a fake clock: ``start(now)`` sends the ClientHello
and arms its retransmission timer (1 s, RFC 6347 §4.2.4.1), ``expire`` at
that time retransmits it and doubles the timer.
"""

from __future__ import annotations

from greencoap.protocol.dtls import SessionSchedule

from .test_dtls_handshake import make_client, rng_bytes


def started(now: float, seed: int = 1):
    s = make_client(randbytes=rng_bytes(seed))
    s.start(now)
    s.outbox = []
    return s


def scheduled(**sessions) -> tuple[dict, SessionSchedule]:
    """A table of ``sessions`` (peer name → session) and its schedule, each updated once."""
    table = dict(sessions)
    sched = SessionSchedule(table)
    for peer, s in table.items():
        sched.update(s, peer)
    return table, sched


def test_a_session_comes_due_once_at_its_deadline():
    table, sched = scheduled(a=started(0.0))
    s = table["a"]
    d = s.next_deadline()
    assert d is not None and sched.next_deadline() == d
    assert list(sched.due(d - 0.001)) == []
    assert list(sched.due(d)) == [("a", s)]
    assert list(sched.due(d)) == []  # handed out once: unscheduled until updated
    s.expire(d)  # the retransmission: the timer doubles
    assert s.outbox
    sched.update(s, "a")
    assert sched.next_deadline() == s.next_deadline() > d


def test_earliest_first_and_only_the_updated_session_is_touched():
    table = {}
    sched = SessionSchedule(table)
    for i in range(50):
        s = table[i] = started(float(50 - i), seed=i + 1)
        sched.update(s, i)
    assert len(sched) == 50
    order = [peer for peer, _ in sched.due(100.0)]
    assert order == list(range(49, -1, -1))  # started latest → due latest
    # the hot path: an update that does not move a deadline earlier pushes nothing
    s = table[0]
    s._sched = s.next_deadline()
    sched.update(s, 0)
    assert len(sched) == 0


def test_stale_entries_are_skipped():
    table, sched = scheduled(a=started(0.0), b=started(5.0, seed=2))
    b = table["b"]
    del table["a"]  # the session left the table (closed, failed, abandoned)
    assert sched.next_deadline() == b.next_deadline()
    table["a"] = started(0.0, seed=3)  # a new session of the same peer, never scheduled
    assert [p for p, _ in sched.due(100.0)] == ["b"]
    assert sched.next_deadline() is None


def test_a_deadline_moved_earlier_is_pushed_and_a_later_one_comes_out_early():
    table, sched = scheduled(a=started(10.0))
    s = table["a"]
    first = s.next_deadline()
    s._timer_at = first - 5.0  # moved earlier: pushed again, the old entry stale
    sched.update(s, "a")
    assert sched.next_deadline() == first - 5.0 and len(sched) == 2
    assert list(sched.due(first - 5.0)) == [("a", s)]
    s._timer_at = first + 5.0  # moved later: the schedule keeps the earlier entry
    sched.update(s, "a")
    assert sched.next_deadline() == first + 5.0  # none held: pushed
    s._timer_at = first + 9.0
    sched.update(s, "a")
    assert sched.next_deadline() == first + 5.0  # early, never late
    assert list(sched.due(first + 5.0)) == [("a", s)]
    sched.update(s, "a")
    assert sched.next_deadline() == first + 9.0
