"""SourceLimiter (protocol/limits.py), the epoll/gevent twin of the C early
shedding, on a fake clock: when it engages, whom it sheds, when it lets go."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from greencoap.protocol.limits import SourceLimiter

FLOODER, GOOD = ("10.0.0.1", 1), ("10.0.0.2", 2)


def harvest(n: int, src=FLOODER, good: int = 0) -> list:
    return [(b"x", src)] * n + [(b"g", GOOD)] * good


def test_a_one_off_burst_never_engages():
    lim = SourceLimiter(rate=100, burst=200, trigger=512, persist=0.1)
    assert len(lim.filter(harvest(1000), 0.0, more=False)) == 1000  # drained at once
    assert len(lim.filter(harvest(3), 0.2)) == 3
    assert not lim.engaged(0.2) and lim.shed == 0


def test_lasting_congestion_engages_and_holds_the_flooder_to_its_rate():
    lim = SourceLimiter(rate=100, burst=200, trigger=512, persist=0.1, hold=1.0)
    now = 0.0
    for _ in range(12):  # 10 ms apart, the queue never empties: a flood
        out = lim.filter(harvest(1024, good=1), now, more=True)
        now += 0.01
    assert lim.engaged(now) and lim.engagements == 1
    kept = []
    for _ in range(100):  # one second more of flood
        out = lim.filter(harvest(1024, good=1), now, more=True)
        kept.append(sum(1 for _, src in out if src == FLOODER))
        assert any(src == GOOD for _, src in out)  # the good source is never shed
        now += 0.01
    assert sum(kept) <= 200 + 100 * 1.1  # its burst, then about its rate
    assert lim.shed > 90_000


def test_it_lets_go_a_hold_after_the_last_shed():
    lim = SourceLimiter(rate=1, burst=10, trigger=4, persist=0.0, hold=1.0)
    lim.filter(harvest(50), 0.0, more=True)
    assert lim.engaged(0.5)
    assert lim.filter(harvest(1), 0.5, more=False) == []  # still shedding the flooder
    assert not lim.engaged(1.6)  # a second after the last shed
    assert len(lim.filter(harvest(3), 1.6, more=False)) == 3  # its bucket is empty: not applied
    assert lim.statistics(1.6)["shedding"] == 0


@given(st.lists(st.integers(min_value=0, max_value=511), max_size=200))
def test_harvests_below_the_trigger_are_never_shed(sizes):
    lim = SourceLimiter(rate=1, burst=1, trigger=512, persist=0.0)
    for i, n in enumerate(sizes):
        assert len(lim.filter(harvest(n), i * 0.001, more=True)) == n
    assert lim.shed == 0 and lim.engagements == 0
