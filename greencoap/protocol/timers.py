"""A timer wheel for sans-I/O engines: items due at times, bucketed by millisecond.

The message layer keeps one live timer per exchange (its next retransmission
or its deadline) in a :class:`TimerWheel`.  An item is any object with two
writable attributes: ``due`` (when it is due, seconds on the engine's clock)
and ``due_key`` (the bucket holding its live entry; -1 when it has none).
:meth:`~TimerWheel.schedule` moves an item's one live entry; the entry left
in the older bucket is skipped lazily, so rescheduling costs O(1) plus a heap
push per new millisecond.  :meth:`~TimerWheel.cancel` (``due_key = -1``)
stops it.

Time is an argument (``now``); nothing here reads a clock.  Not thread-safe:
one engine owns it.
"""

from __future__ import annotations

import heapq
from typing import Any

NOT_SCHEDULED = -1


class TimerWheel:
    """Millisecond buckets of items and a heap of the bucket keys."""

    __slots__ = ("_buckets", "_keys")

    def __init__(self) -> None:
        self._buckets: dict[int, list[Any]] = {}
        self._keys: list[int] = []

    def schedule(self, item: Any, when: float) -> None:
        """Make ``when`` the item's one live timer."""
        k = int(when * 1000.0)
        item.due = when
        if item.due_key == k:
            return  # already live in that bucket (which reads ``due`` from the item)
        item.due_key = k
        b = self._buckets.get(k)
        if b is None:
            self._buckets[k] = [item]
            heapq.heappush(self._keys, k)
        else:
            b.append(item)

    @staticmethod
    def cancel(item: Any) -> None:
        """The item has no live timer any more."""
        item.due_key = NOT_SCHEDULED

    def pop_due(self, now: float) -> list[Any]:
        """The items due at ``now`` (``due <= now``), earliest millisecond
        first; each leaves the wheel (its ``due_key`` becomes -1) until it is
        scheduled again.  Items later within the current millisecond stay."""
        out: list[Any] = []
        keys = self._keys
        buckets = self._buckets
        heappop = heapq.heappop
        limit = now * 1000.0
        while keys and keys[0] <= limit:
            k = heappop(keys)
            not_yet = []
            for item in buckets.pop(k):
                if item.due_key != k:
                    continue  # cancelled, or rescheduled since
                if item.due > now:
                    not_yet.append(item)  # later within this very millisecond
                    continue
                item.due_key = NOT_SCHEDULED
                out.append(item)
            if not_yet:
                buckets[k] = not_yet
                heapq.heappush(keys, k)
                break  # nothing later than this millisecond can be due yet
        return out

    def next_due(self) -> float | None:
        """When the earliest live item is due (None: none is).  Buckets that
        hold no live item any more are dropped on the way (the answer and
        every later one are the same either way)."""
        keys = self._keys
        buckets = self._buckets
        while keys:
            k = keys[0]
            live = [item for item in buckets[k] if item.due_key == k]
            if live:
                buckets[k] = live
                return min(item.due for item in live)
            heapq.heappop(keys)
            del buckets[k]
        return None

    def live(self) -> int:
        """How many items have a live timer."""
        # (an item rescheduled back into a bucket it left may sit there twice)
        return len({id(item) for k, b in self._buckets.items() for item in b if item.due_key == k})


__all__ = ["TimerWheel", "NOT_SCHEDULED"]
