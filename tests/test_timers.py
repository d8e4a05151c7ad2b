"""The engines' timer wheel on its own (greencoap/protocol/timers.py): order,
rescheduling, cancelling, the current millisecond, and a hypothesis model
check against a plain dict of due times.  The clock is the ``now`` argument."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from greencoap.protocol.timers import NOT_SCHEDULED, TimerWheel


class Item:
    def __init__(self, name: str) -> None:
        self.name = name
        self.due = 0.0
        self.due_key = NOT_SCHEDULED

    def __repr__(self) -> str:
        return self.name


def test_due_items_come_out_earliest_first_and_leave_the_wheel():
    w = TimerWheel()
    a, b, c = Item("a"), Item("b"), Item("c")
    w.schedule(b, 2.0)
    w.schedule(a, 1.0)
    w.schedule(c, 3.0)
    assert w.next_due() == 1.0 and w.live() == 3
    assert w.pop_due(0.5) == []
    assert w.pop_due(2.5) == [a, b]
    assert a.due_key == b.due_key == NOT_SCHEDULED and w.live() == 1
    assert w.next_due() == 3.0
    assert w.pop_due(10.0) == [c] and w.next_due() is None and w.live() == 0


def test_rescheduling_moves_the_one_live_entry_and_cancel_stops_it():
    w = TimerWheel()
    a, b = Item("a"), Item("b")
    w.schedule(a, 1.0)
    w.schedule(a, 5.0)  # the entry at 1.0 is stale now
    w.schedule(b, 2.0)
    assert w.live() == 2 and w.next_due() == 2.0
    w.cancel(b)
    assert w.next_due() == 5.0
    assert w.pop_due(4.0) == []
    assert w.pop_due(5.0) == [a]


def test_an_item_later_within_the_current_millisecond_waits():
    w = TimerWheel()
    a, b = Item("a"), Item("b")
    w.schedule(a, 1.0001)
    w.schedule(b, 1.0004)  # the same millisecond bucket
    assert w.pop_due(1.0002) == [a]
    assert w.next_due() == 1.0004
    assert w.pop_due(1.0004) == [b]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["schedule", "schedule", "cancel", "pop", "peek"]),
            st.integers(0, 7),  # item
            st.floats(0.0, 5.0, allow_nan=False),  # delay or time step
        ),
        max_size=200,
    )
)
def test_the_wheel_agrees_with_a_dict_of_due_times(ops):
    w = TimerWheel()
    items = [Item(str(i)) for i in range(8)]
    model: dict[int, float] = {}
    now = 0.0
    for op, i, x in ops:
        if op == "schedule":
            w.schedule(items[i], now + x)
            model[i] = now + x
        elif op == "cancel":
            w.cancel(items[i])
            model.pop(i, None)
        elif op == "pop":
            now += x
            got = w.pop_due(now)
            want = {k for k, t in model.items() if t <= now}
            assert {int(it.name) for it in got} == want
            ms = [int(it.due * 1000) for it in got]
            assert ms == sorted(ms)  # earliest millisecond first
            for k in want:
                del model[k]
        else:
            before = _state(w)
            assert w.next_due() == (min(model.values()) if model else None)
            assert _state(w) == before  # next_due only reads
        assert w.live() == len(model)
        # the earliest key on the heap holds a live item; empty buckets are gone
        assert not w._keys or w._keys[0] in w._live
        assert set(w._buckets) == set(w._live)


def _state(w: TimerWheel) -> tuple:
    return (
        list(w._keys),
        {k: list(b) for k, b in w._buckets.items()},
        dict(w._live),
    )


def test_cancelled_items_are_not_held_and_next_due_reads_only():
    w = TimerWheel()
    items = [Item(str(i)) for i in range(100)]
    for i, it in enumerate(items):
        w.schedule(it, 2.0 + i / 1000)
    for it in items[:99]:
        w.cancel(it)
    # the 99 cancelled items' buckets went with them: nothing refers to them
    assert [it for b in w._buckets.values() for it in b] == [items[99]]
    before = _state(w)
    assert w.next_due() == w.next_due() == items[99].due
    assert _state(w) == before
    w.cancel(items[99])
    assert w.next_due() is None and w._keys == [] and w._buckets == {}
