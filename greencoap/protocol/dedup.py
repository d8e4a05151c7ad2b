"""Message deduplication for the server role (RFC 7252 §4.5), sans-I/O.

A :class:`DedupCache` remembers each received CON or NON, keyed by
``(peer, mid)``, for EXCHANGE_LIFETIME (CON) or NON_LIFETIME (NON), with
what was answered (:class:`DedupEntry`), so that a copy of the message is
answered the same way and not handled twice.

The cache is bounded (``capacity`` entries) and fair: one peer holds at most
``peer_share`` of it, so a flooding peer pushes out its own oldest entries,
never another peer's; when the whole cache is full, the entries that would
expire first go, a batch at a time (the next insertions then evict
nothing).  Expiry order is kept per lifetime (CON, NON) as ``(expires, key)``
queues; entries evicted from the middle are skipped lazily and the queues are
compacted when such stale items outnumber the live ones.

Time is an argument (``now``); nothing here reads a clock.  Counters go into
the ``stats`` dict given at construction (``dedup_evicted``,
``dedup_peer_full``), shared with the message layer's.  Not thread-safe: one
endpoint's engine owns it.
"""

from __future__ import annotations

from collections import deque
from typing import Any


class DedupEntry:
    """The record of one received CON/NON.

    ``response`` is the answer sent (None until then); ``running`` tells
    whether the request is being handled (``started()`` was called);
    ``dups`` counts copies that came while it was still queued: each gets the
    response when it is ready; ``separated``: answered with an empty ACK, the
    response goes as a CON of its own.
    """

    __slots__ = ("response", "expires", "running", "dups", "separated", "token")

    def __init__(self, expires: float, token: bytes = b"") -> None:
        self.token = token  # a "duplicate" with another token is a new request (MID reused)
        self.response: bytes | None = None
        self.expires = expires
        self.running = False
        self.dups = 0
        self.separated = False


class DedupCache:
    """Bounded, per-peer fair deduplication state (see the module docstring)."""

    def __init__(
        self,
        con_lifetime: float,
        non_lifetime: float,
        *,
        capacity: int = 65536,
        peer_share: float = 0.25,
        stats: dict[str, int] | None = None,
    ) -> None:
        if capacity < 1 or not 0 < peer_share <= 1:
            raise ValueError("capacity >= 1 and 0 < peer_share <= 1")
        self.con_lifetime = con_lifetime
        self.non_lifetime = non_lifetime
        self.capacity = capacity
        #: the most entries one peer may hold: a flooding peer cannot evict others'
        self.peer_cap = max(1, int(capacity * peer_share))
        #: entries evicted at once when the cache (or a peer's share) is full
        self.evict_batch = max(1, min(64, self.peer_cap >> 4))
        self.stats = stats if stats is not None else {"dedup_evicted": 0, "dedup_peer_full": 0}
        #: ``(peer, mid) -> DedupEntry``: the one lookup table
        self.entries: dict[tuple, DedupEntry] = {}
        # expiry order per lifetime (CON, NON) as (expires, key)
        self._order: tuple[deque, deque] = (deque(), deque())
        self._per_peer: dict[Any, int] = {}
        # for peers that reached their share only: their entries in expiry
        # order (CON, NON), so that they push out their own oldest entries
        self._peer_order: dict[Any, tuple[deque, deque]] = {}
        self._stale = 0  # evicted entries still sitting in the global queues

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, key: tuple) -> DedupEntry | None:
        """The entry of ``key`` = (peer, mid), or None."""
        return self.entries.get(key)

    def remember(self, key: tuple, con: bool, now: float, token: bytes = b"") -> DedupEntry:
        """Start deduplicating ``key`` = (peer, mid) for its lifetime.  The
        returned entry is not kept when the peer holds its share and none of
        its own entries can go (counted as ``dedup_peer_full``)."""
        expires = now + (self.con_lifetime if con else self.non_lifetime)
        peer = key[0]
        counts = self._per_peer
        held = counts.get(peer, 0)
        if held >= self.peer_cap:
            # a peer holding its fair share pushes out its own oldest entry,
            # never other peers' (cheapest when its entry is the oldest of
            # all: nothing left stale)
            if not (self._evict_oldest(peer, self.evict_batch) or self._evict_own_oldest(peer)):
                self.stats["dedup_peer_full"] += 1
                return DedupEntry(expires, token)  # not remembered
            held = counts.get(peer, 0)
        elif len(self.entries) >= self.capacity:
            # full: the entries that would expire first go, a batch at a time
            self._evict_oldest(None, self.evict_batch)
            held = counts.get(peer, 0)
        counts[peer] = held + 1
        entry = self.entries[key] = DedupEntry(expires, token)
        item = (expires, key)
        kind = 0 if con else 1
        self._order[kind].append(item)
        order = self._peer_order.get(peer)
        if order is not None:  # a peer at its share (see _evict_own_oldest)
            order[kind].append(item)
        return entry

    def drop(self, key: tuple) -> None:
        """Forget ``key`` now (its MID was reused for a new message, or the
        request was never handled); its queue items are skipped later."""
        if self.entries.pop(key, None) is not None:
            self._forget_peer(key[0])
            self._stale += 1

    def expire(self, now: float) -> None:
        """Drop the entries whose lifetime is over."""
        entries = self.entries
        for kind, q in enumerate(self._order):
            while q and q[0][0] <= now:
                item = q.popleft()
                expires, key = item
                entry = entries.get(key)
                if entry is not None and entry.expires == expires:
                    del entries[key]
                    self._forget_peer(key[0], kind, item)

    def next_expiry(self) -> float | None:
        """When the next entry expires (None: the cache is empty)."""
        first = None
        for q in self._order:
            if q and (first is None or q[0][0] < first):
                first = q[0][0]
        return first

    def table_sizes(self) -> dict[str, int]:
        """Sizes of the cache's tables (all 0 once every entry expired)."""
        return {
            "dedup": len(self.entries),
            "dedup_peers": len(self._per_peer),
            "dedup_queued": len(self._order[0]) + len(self._order[1]),
            "dedup_peer_orders": len(self._peer_order),
        }

    # -- eviction ---------------------------------------------------------------
    def _forget_peer(self, peer: Any, kind: int = -1, item: tuple | None = None) -> None:
        """One entry of ``peer`` left the cache (``item``: the head of its
        ``kind`` queue, when that is how it left)."""
        counts = self._per_peer
        n = counts[peer] - 1
        if n:
            counts[peer] = n
            if item is not None:
                order = self._peer_order.get(peer)
                if order is not None:
                    q = order[kind]
                    if q and q[0] is item:
                        q.popleft()
        else:
            del counts[peer]
            self._peer_order.pop(peer, None)

    def _evict_oldest(self, only_peer: Any = None, want: int = 1) -> int:
        """Drop up to ``want`` entries, those that would expire first (the
        cache is full); with ``only_peer``, only while they are the peer's own.
        Returns how many went."""
        entries = self.entries
        con, non = self._order
        forget = self._forget_peer
        dropped = 0
        while (con or non) and dropped < want:
            q = con if not non or (con and con[0][0] <= non[0][0]) else non
            expires, key = item = q[0]
            entry = entries.get(key)
            if entry is None or entry.expires != expires:
                q.popleft()
                continue  # stale: expired or replaced already
            if only_peer is not None and key[0] != only_peer:
                break
            q.popleft()
            del entries[key]
            forget(key[0], 0 if q is con else 1, item)
            dropped += 1
        if dropped:
            self.stats["dedup_evicted"] += dropped
        return dropped

    def _evict_own_oldest(self, peer: Any) -> int:
        """``peer`` holds its share: drop its entries that would expire first,
        a batch of them (1/16 of the share) so that the next requests insert
        without evicting; returns how many went."""
        entries = self.entries
        order = self._peer_order.get(peer)
        if order is None:  # it just reached its share: collect its entries once
            order = self._peer_order[peer] = (deque(), deque())
            for kind, q in enumerate(self._order):
                mine = order[kind]
                for item in q:
                    if item[1][0] == peer:
                        mine.append(item)
        con, non = order
        want = max(1, self.peer_cap >> 4)
        dropped = 0
        while (con or non) and dropped < want:
            q = con if not non or (con and con[0][0] <= non[0][0]) else non
            expires, key = q.popleft()
            entry = entries.get(key)
            if entry is None or entry.expires != expires:
                continue  # stale; the global queues skip this one later too
            del entries[key]
            dropped += 1
        if dropped:
            self._stale += dropped
            self.stats["dedup_evicted"] += dropped
            n = self._per_peer[peer] - dropped
            if n:
                self._per_peer[peer] = n
            else:
                del self._per_peer[peer]
                del self._peer_order[peer]
            if self._stale > len(entries) + 1024:
                self._compact()
        return dropped

    def _compact(self) -> None:
        """Drop the entries evicted from the middle of the global expiry
        queues (their count is ``_stale``): the queues stay within about
        twice the cache's size whatever the traffic."""
        entries = self.entries
        fresh = []
        for q in self._order:
            live = deque()
            for item in q:
                entry = entries.get(item[1])
                if entry is not None and entry.expires == item[0]:
                    live.append(item)
            fresh.append(live)
        self._order = (fresh[0], fresh[1])
        self._stale = 0


__all__ = ["DedupCache", "DedupEntry"]
