"""Rate limiting and load shedding for servers, sans-I/O (layer 2).

Like the reference library, the per-peer limit engages only under load, so a
lone fast client on an idle server is never limited:

* :class:`LoadLevels` turns the server's load (handlers running plus work
  queued) into one of three levels with hysteresis: NORMAL (serve all) →
  THROTTLED (the per-peer token bucket applies) → SHEDDING (new NON
  requests dropped, new CON requests answered 5.03 with Max-Age).  A level
  is left only when the load falls to half its threshold, so the server does
  not flap.  Every change is counted.
* :class:`TokenBuckets` keeps one token bucket per peer (``rate`` requests
  per second, ``burst`` at most), bounded in memory.

* :class:`SourceLimiter` sheds a flooding source's excess where a backend
  harvests its datagrams, before they cost any protocol work.  It engages
  only on lasting congestion (harvests finding ``trigger`` or more datagrams
  queued for the socket for ``persist`` seconds) and stays engaged while it
  sheds and ``hold`` seconds after; while engaged, each source (address and port) is held to
  its token bucket.  The io_uring backend has the same logic in C
  (``uring_core.h``); this one serves the epoll and gevent backends.

Retransmissions answered from the deduplication cache never reach these
checks: they cost nothing to serve.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

NORMAL, THROTTLED, SHEDDING = 0, 1, 2
LEVEL_NAMES = ("normal", "throttled", "shedding")

#: Datagrams found queued for one socket that mean congestion (a benchmark's
#: 4 × 64 requests in flight stay below it; a flood does not) ...
SHED_TRIGGER = 512
#: ... when it lasts this many seconds (a client's burst of a thousand
#: concurrent requests drains within a few harvests; a flood keeps the queue
#: deep).
SHED_PERSIST = 0.1
#: Seconds early shedding stays engaged after its last trigger or shed.
SHED_HOLD = 1.0
#: Sources an engaged :class:`SourceLimiter` tracks (the stalest go first).
SHED_SOURCES = 1024


class LoadLevels:
    """Three load levels with hysteresis (see the module docstring)."""

    def __init__(self, throttle_at: int = 2048, shed_at: int = 8192) -> None:
        if not 0 < throttle_at <= shed_at:
            raise ValueError("0 < throttle_at <= shed_at")
        self.throttle_at = throttle_at
        self.shed_at = shed_at
        self.level = NORMAL
        self.changes = 0

    def update(self, load: int) -> int:
        """Feed the current load; return the (possibly new) level."""
        level = self.level
        if load >= self.shed_at:
            new = SHEDDING
        elif load >= self.throttle_at:
            new = SHEDDING if level == SHEDDING and load > self.shed_at // 2 else THROTTLED
        elif level == SHEDDING:
            new = (
                SHEDDING
                if load > self.shed_at // 2
                else (THROTTLED if load > self.throttle_at // 2 else NORMAL)
            )
        elif level == THROTTLED:
            new = THROTTLED if load > self.throttle_at // 2 else NORMAL
        else:
            new = NORMAL
        if new != level:
            self.level = new
            self.changes += 1
        return new


class TokenBuckets:
    """Per-peer token buckets: ``rate`` tokens/s up to ``burst``; LRU-bounded."""

    def __init__(self, rate: float = 100.0, burst: float = 200.0, max_peers: int = 65536) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.max_peers = max_peers
        self._buckets: OrderedDict[Any, list[float]] = OrderedDict()

    def allow(self, peer: Any, now: float) -> bool:
        """Take one token for ``peer``; False when its bucket is empty."""
        b = self._buckets.get(peer)
        if b is None:
            if len(self._buckets) >= self.max_peers:
                self._buckets.popitem(last=False)
            b = self._buckets[peer] = [self.burst, now]
        else:
            self._buckets.move_to_end(peer)
            tokens = b[0] + (now - b[1]) * self.rate
            b[0] = tokens if tokens < self.burst else self.burst
            b[1] = now
        if b[0] >= 1.0:
            b[0] -= 1.0
            return True
        return False

    def expire(self, now: float) -> int:
        """Forget the peers whose buckets are full again (idle for
        ``burst / rate`` seconds: they would start full anyway); returns how
        many went.  Cheap: the buckets are kept least recently used first."""
        idle = self.burst / self.rate
        buckets = self._buckets
        n = 0
        while buckets:
            peer, b = next(iter(buckets.items()))
            if b[1] + idle > now:
                break
            del buckets[peer]
            n += 1
        return n

    def __len__(self) -> int:
        return len(self._buckets)


class SourceLimiter:
    """Early shedding of a flooding source (see the module docstring).

    ``filter(batch, now)`` takes a harvest of ``(data, source)`` pairs and
    returns those to process; ``shed`` counts the others.
    """

    __slots__ = (
        "buckets",
        "trigger",
        "persist",
        "hold",
        "engaged_until",
        "congested_since",
        "shed",
        "engagements",
    )

    def __init__(
        self,
        rate: float,
        burst: float,
        trigger: int = SHED_TRIGGER,
        persist: float = SHED_PERSIST,
        hold: float = SHED_HOLD,
        max_sources: int = SHED_SOURCES,
    ) -> None:
        self.buckets = TokenBuckets(rate, max(1.0, burst), max_sources)
        self.trigger = max(1, trigger)
        self.persist = persist
        self.hold = hold
        self.engaged_until = float("-inf")
        self.congested_since: float | None = None
        self.shed = 0
        self.engagements = 0

    def engaged(self, now: float) -> bool:
        """True while it sheds."""
        return now < self.engaged_until

    def filter(self, batch: list, now: float, more: bool = True) -> list:
        """The datagrams of ``batch`` to process (all of them unless congested).

        ``more``: the harvest stopped at its size limit, datagrams were left
        queued.  Congestion is harvests of ``trigger`` or more, one after the
        other, for ``persist`` seconds; a harvest that emptied the socket ends
        it (a burst drains, a flood refills the queue faster than it is read).
        """
        if len(batch) >= self.trigger:
            if self.congested_since is None:
                self.congested_since = now
            if now - self.congested_since >= self.persist:
                if now >= self.engaged_until:
                    self.engagements += 1
                self.engaged_until = now + self.hold
            if not more:
                self.congested_since = None
        else:
            self.congested_since = None
        if now >= self.engaged_until:
            return batch
        allow = self.buckets.allow
        out = [item for item in batch if allow(item[1], now)]
        shed = len(batch) - len(out)
        if shed:
            self.shed += shed
            self.engaged_until = now + self.hold
        return out

    def statistics(self, now: float) -> dict[str, int]:
        """``shed_early``, ``shed_engagements`` and ``shedding`` (1 while engaged)."""
        return {
            "shed_early": self.shed,
            "shed_engagements": self.engagements,
            "shedding": int(now < self.engaged_until),
        }
