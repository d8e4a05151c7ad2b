"""A timer wheel for sans-I/O engines: items due at times, bucketed by millisecond.

The message layer keeps one live timer per exchange (its next retransmission
or its deadline) in a :class:`TimerWheel`.  An item is any object with two
writable attributes: ``due`` (when it is due, seconds on the engine's clock)
and ``due_key`` (the bucket holding its live entry; -1 when it has none).
:meth:`~TimerWheel.schedule` moves an item's one live entry and
:meth:`~TimerWheel.cancel` stops it, both in O(1) plus a heap push per new
millisecond: each bucket counts its live entries, and a bucket whose count
drops to zero goes at once (with the items it held), so the earliest bucket
key on the heap always holds a live item and :meth:`~TimerWheel.next_due`
only reads.

Time is an argument (``now``); nothing here reads a clock.  Not thread-safe:
one engine owns it.
"""

from __future__ import annotations

import heapq
from typing import Any

NOT_SCHEDULED = -1


class TimerWheel:
    """Millisecond buckets of items, their live counts, and a heap of the bucket keys.

    Invariant (after every mutating call): the smallest key on the heap is a
    bucket with at least one live item.  Keys of buckets that went empty
    stay on the heap until they reach its top (each mutating call pops them
    there), and a bucket made again after its key went stale may have its
    key on the heap twice; both are skipped where keys are popped.
    """

    __slots__ = ("_buckets", "_live", "_keys")

    def __init__(self) -> None:
        self._buckets: dict[int, list[Any]] = {}
        self._live: dict[int, int] = {}
        self._keys: list[int] = []

    def schedule(self, item: Any, when: float) -> None:
        """Make ``when`` the item's one live timer."""
        k = int(when * 1000.0)
        item.due = when
        old = item.due_key
        if old == k:
            return  # already live in that bucket (which reads ``due`` from the item)
        item.due_key = k
        live = self._live
        n = live.get(k)
        if n is None:
            self._buckets[k] = [item]
            live[k] = 1
            heapq.heappush(self._keys, k)
        else:
            self._buckets[k].append(item)
            live[k] = n + 1
        if old != NOT_SCHEDULED:
            self._leave(old)

    def cancel(self, item: Any) -> None:
        """The item has no live timer any more."""
        old = item.due_key
        if old != NOT_SCHEDULED:
            item.due_key = NOT_SCHEDULED
            self._leave(old)

    def _leave(self, k: int) -> None:
        """One live entry of bucket ``k`` went: drop the bucket when it was the last."""
        live = self._live
        n = live[k] - 1
        if n:
            live[k] = n
            return
        del live[k]
        del self._buckets[k]
        self._settle()

    def _settle(self) -> None:
        """Pop the stale keys at the top of the heap (the invariant)."""
        keys, live = self._keys, self._live
        while keys and keys[0] not in live:
            heapq.heappop(keys)

    def pop_due(self, now: float) -> list[Any]:
        """The items due at ``now`` (``due <= now``), earliest millisecond
        first; each leaves the wheel (its ``due_key`` becomes -1) until it is
        scheduled again.  Items later within the current millisecond stay."""
        out: list[Any] = []
        keys = self._keys
        buckets = self._buckets
        live = self._live
        heappop = heapq.heappop
        limit = now * 1000.0
        while keys and keys[0] <= limit:
            k = heappop(keys)
            bucket = buckets.pop(k, None)
            if bucket is None:
                continue  # a stale key (its bucket went, or a second key of one)
            del live[k]
            not_yet: dict[int, Any] = {}
            for item in bucket:
                if item.due_key != k:
                    continue  # cancelled, or rescheduled since
                if item.due > now:
                    not_yet[id(item)] = item  # later within this very millisecond
                    continue
                item.due_key = NOT_SCHEDULED
                out.append(item)
            if not_yet:
                buckets[k] = list(not_yet.values())
                live[k] = len(not_yet)
                heapq.heappush(keys, k)
                break  # nothing later than this millisecond can be due yet
        self._settle()
        return out

    def next_due(self) -> float | None:
        """When the earliest live item is due (None: none is).  Reads only."""
        keys = self._keys
        if not keys:
            return None
        k = keys[0]
        return min(item.due for item in self._buckets[k] if item.due_key == k)

    def live(self) -> int:
        """How many items have a live timer."""
        return sum(self._live.values())


__all__ = ["TimerWheel", "NOT_SCHEDULED"]
