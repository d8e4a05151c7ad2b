"""Message deduplication for the server role (RFC 7252 §4.5), sans-I/O.

A :class:`DedupCache` remembers each received CON or NON, keyed by its peer
and message ID, for EXCHANGE_LIFETIME (CON) or NON_LIFETIME (NON), with what
was answered (:class:`DedupEntry`), so that a copy of the message is answered
the same way and not handled twice.

Every operation costs O(1), with no eviction walk per request.  Each peer
has its own two *generations* of entries, ``cur`` and ``old`` (dicts keyed by
MID); a lookup tries ``cur`` then ``old``, an insertion goes into ``cur``.  A
peer's generations rotate (``old`` is dropped whole, ``cur`` becomes
``old``) when ``cur`` is one lifetime old, so that an entry stays at least its
lifetime, or when ``cur`` holds half the peer's share of the cache, so that
a flooding peer pushes out its own oldest entries, never another peer's, and
its newest half-share always stays.  Lookups compare the entry's own expiry
time, so an entry is never taken for a copy past its lifetime even while it
still sits in memory.

The cache is bounded (``capacity`` entries): when it is full the oldest
generation of all goes (a queue of generations in birth order finds it), so
the §4.5 guarantee holds for as many exchanges as the bound allows, oldest
lost first.  Memory of idle peers is released by :meth:`DedupCache.expire`,
a sweep over the peers that runs at most every ``sweep_gap`` seconds.

Time is an argument (``now``); nothing here reads a clock.  Counters go into
the ``stats`` dict given at construction (``dedup_evicted``: entries dropped
for room before their lifetime ended, about; ``dedup_peer_full``: rotations
forced by a peer's share; ``mid_reused``: a live entry's MID came back with
another token, a new message), shared with the message layer's.  Not
thread-safe: one endpoint's engine owns it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

from .._ext import speedups

INF = float("inf")
#: the counters a cache keeps in its ``stats`` dict
STATS = ("dedup_evicted", "dedup_peer_full", "mid_reused")


class DedupEntryPy:
    """The record of one received CON/NON (:data:`DedupEntry` is this or its
    C twin from greencoap/_speedups.c, which is not tracked by the cycle
    collector).

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


_c = speedups()
#: the entry class in use: the C one when built (one is made per request)
DedupEntry: Any = _c.DedupEntry if _c is not None else DedupEntryPy


class _PeerStorePy:
    """One peer's two generations (see the module docstring; :data:`_PeerStore`
    is this or its C twin ``_speedups.PeerStore``)."""

    __slots__ = ("peer", "cur", "old", "born", "last", "old_last")

    def __init__(self, peer: Any, now: float) -> None:
        self.peer = peer
        self.cur: dict[int, DedupEntry] = {}
        self.old: dict[int, DedupEntry] = {}
        self.born = now  # when ``cur`` started
        self.last = -INF  # the latest expiry of any entry in either generation
        self.old_last = -INF  # the latest expiry in ``old``

    def __len__(self) -> int:
        return len(self.cur) + len(self.old)


#: the store class in use: the C one when built
_PeerStore: Any = _c.PeerStore if _c is not None else _PeerStorePy


class _DedupCorePy:
    """The two calls :class:`DedupCache` gets per request, in Python.  When
    the C module is built, ``_speedups.DedupCore`` is DedupCache's base
    instead: the same calls, with the cache's scalar state as C fields, doing
    the common case in C and every other case through ``_admit_slow``."""

    def admit(
        self, peer: Any, mid: int, con: bool, now: float, token: bytes = b""
    ) -> DedupEntry | None:
        """A message ``mid`` from ``peer`` arrived: the entry it is a copy of,
        or None when it is new (it is remembered from now on; :meth:`get`
        returns its entry).  A live entry with another token is a reused MID
        (counted as ``mid_reused``): the message is new and replaces it."""
        return self._admit_slow(peer, mid, con, now, token)  # type: ignore[attr-defined]

    def get(self, peer: Any, mid: int) -> DedupEntry | None:
        """The entry of ``(peer, mid)`` still held (maybe past its lifetime:
        for updates to an exchange just looked up with :meth:`lookup`)."""
        store = self._stores.get(peer)  # type: ignore[attr-defined]
        if store is None:
            return None
        entry = store.cur.get(mid)
        return entry if entry is not None else store.old.get(mid)


_DedupCore: Any = _c.DedupCore if _c is not None else _DedupCorePy


def _discard(*generations: dict) -> None:
    """Empty generations that are gone (the birth queue may still name them:
    emptied, they hold no memory there and read as gone)."""
    for gen in generations:
        gen.clear()


class DedupCache(_DedupCore):
    """Bounded, per-peer fair, O(1) deduplication state (see the module docstring).

    ``admit`` and ``get`` come from its base (in C when built, see
    :class:`_DedupCorePy`).  Not thread-safe: it belongs to one message layer."""

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
        #: a peer's ``cur`` rotates when it holds this many entries
        self.half_share = max(1, self.peer_cap // 2)
        #: a generation rotates when it is this old (the longest lifetime)
        self.rotate_after = max(con_lifetime, non_lifetime)
        #: the least time between two sweeps of :meth:`expire`
        self.sweep_gap = min(con_lifetime, non_lifetime) / 32
        self.stats = stats if stats is not None else dict.fromkeys(STATS, 0)
        self._stores: dict[Any, _PeerStore] = {}
        self._size = 0  # entries in all generations (expired ones not yet swept included)
        # generations in birth order, (store, generation dict); a generation
        # that is gone already is skipped when it reaches the front
        self._births: deque[tuple[_PeerStore, dict]] = deque()
        #: when :meth:`expire` next has something to do (inf: nothing held)
        self.next_due = INF

    def __len__(self) -> int:
        """Entries held, including expired ones not yet swept."""
        return self._size

    # -- lookups ---------------------------------------------------------------
    def lookup(self, peer: Any, mid: int, now: float) -> DedupEntry | None:
        """The live entry of ``(peer, mid)`` at ``now`` (None: none, or expired)."""
        store = self._stores.get(peer)
        if store is None:
            return None
        entry = store.cur.get(mid)
        if entry is None:
            entry = store.old.get(mid)
            if entry is None:
                return None
        return entry if entry.expires > now else None

    def live(self, now: float) -> Iterator[tuple[tuple, DedupEntry]]:
        """``((peer, mid), entry)`` for every entry alive at ``now`` (for tests
        and diagnostics: walks everything)."""
        for peer, store in self._stores.items():
            seen = set()
            for gen in (store.cur, store.old):
                for mid, entry in gen.items():
                    if mid not in seen and entry.expires > now:
                        seen.add(mid)
                        yield (peer, mid), entry

    def held_by(self, peer: Any) -> int:
        """Entries ``peer`` holds (expired ones not yet swept included)."""
        store = self._stores.get(peer)
        return 0 if store is None else len(store)

    # -- changes ---------------------------------------------------------------
    def _admit_slow(
        self, peer: Any, mid: int, con: bool, now: float, token: bytes = b""
    ) -> DedupEntry | None:
        """:meth:`admit`, every case (the C base does the common ones itself)."""
        store = self._stores.get(peer)
        if store is not None:
            entry = store.cur.get(mid)
            if entry is None:
                entry = store.old.get(mid)
            if entry is not None and entry.expires > now:
                if entry.token == token:
                    return entry
                self.stats["mid_reused"] += 1
                self.drop(peer, mid)
                store = self._stores.get(peer)
        if (
            store is None
            or self._size >= self.capacity
            or len(store.cur) >= self.half_share
            or now - store.born >= self.rotate_after
        ):
            store = self._prepare(store, peer, now)  # the rare cases
        self._put(store, mid, con, now, token)
        return None

    def remember(
        self, peer: Any, mid: int, con: bool, now: float, token: bytes = b""
    ) -> DedupEntry:
        """Start deduplicating ``(peer, mid)`` for its lifetime; return its entry."""
        store = self._prepare(self._stores.get(peer), peer, now)
        return self._put(store, mid, con, now, token)

    def _prepare(self, store: _PeerStore | None, peer: Any, now: float) -> _PeerStore:
        """``peer``'s store, ready for one more entry: created, rotated (a
        lifetime old, or at half the peer's share) and room made in a full cache."""
        if store is None:
            store = self._stores[peer] = _PeerStore(peer, now)
            self._births.append((store, store.cur))
        elif now - store.born >= self.rotate_after:
            self._rotate(store, now)
        elif len(store.cur) >= self.half_share:
            self.stats["dedup_peer_full"] += 1
            self._rotate(store, now)
        if self._size >= self.capacity:
            self._make_room(store, now)
        return store

    def _put(self, store: _PeerStore, mid: int, con: bool, now: float, token: bytes) -> DedupEntry:
        """Add the entry of ``mid`` to ``store``'s current generation."""
        expires = now + (self.con_lifetime if con else self.non_lifetime)
        entry = DedupEntry(expires, token)
        cur = store.cur
        n = len(cur)
        cur[mid] = entry
        self._size += len(cur) - n
        if expires > store.last:
            store.last = expires
        if expires < self.next_due:
            self.next_due = expires
        return entry

    def drop(self, peer: Any, mid: int) -> None:
        """Forget ``(peer, mid)`` now (its MID was reused for a new message, or
        the request was never handled)."""
        store = self._stores.get(peer)
        if store is None:
            return
        for gen in (store.cur, store.old):
            if gen.pop(mid, None) is not None:
                self._size -= 1
        if not store.cur and not store.old:
            del self._stores[peer]

    def expire(self, now: float) -> None:
        """Release what is past its lifetime: idle peers and old generations
        whose every entry expired.  Cheap when called early (one comparison);
        a sweep over the peers otherwise, at most every ``sweep_gap`` s."""
        if now < self.next_due:
            return
        stores = self._stores
        nxt = INF
        for peer, store in list(stores.items()):
            if store.last <= now:
                self._size -= len(store)
                _discard(store.cur, store.old)
                del stores[peer]
                continue
            if store.old and store.old_last <= now:
                self._size -= len(store.old)
                _discard(store.old)
                store.old = {}
            due = store.old_last if store.old else store.last
            if due < nxt:
                nxt = due
        self.next_due = max(nxt, now + self.sweep_gap) if stores else INF
        if len(self._births) > 4 * len(stores) + 64:
            self._compact_births()

    def next_expiry(self) -> float | None:
        """When :meth:`expire` next has something to release (None: empty)."""
        return self.next_due if self._stores else None

    def table_sizes(self) -> dict[str, int]:
        """Sizes of the cache's tables (all 0 once every entry expired and was swept)."""
        return {"dedup": self._size, "dedup_peers": len(self._stores)}

    # -- generations -------------------------------------------------------------
    def _rotate(self, store: _PeerStore, now: float) -> None:
        """``store``'s ``old`` goes, ``cur`` becomes ``old``; a new ``cur`` starts."""
        old = store.old
        if old:
            self._size -= len(old)
            if store.old_last > now:
                self.stats["dedup_evicted"] += len(old)
            _discard(old)
        cur = store.cur
        if store.last <= now:  # everything in it expired: start afresh
            self._size -= len(cur)
            _discard(cur)
            store.old = {}
        elif self.peer_cap == 1:  # a share of one entry: keep only the newest
            self._size -= len(cur)
            self.stats["dedup_evicted"] += len(cur)
            _discard(cur)
            store.old = {}
        else:
            store.old = cur
            store.old_last = store.last
        store.cur = {}
        store.born = now
        births = self._births
        births.append((store, store.cur))
        if len(births) > 4 * len(self._stores) + 64:
            self._compact_births()  # amortized: the queue at least doubled since the last

    def _make_room(self, store: _PeerStore, now: float) -> None:
        """The cache is full: drop the oldest generation of all (any peer's,
        the inserting ``store``'s own included)."""
        births = self._births
        stores = self._stores
        for _ in range(len(births)):
            owner, gen = births.popleft()
            live = gen is owner.cur or gen is owner.old
            if not live or stores.get(owner.peer) is not owner:
                continue  # that generation or its peer's store is gone
            if not gen:  # a generation just started, still empty: it stays
                births.append((owner, gen))
                continue
            self.stats["dedup_evicted"] += len(gen)
            self._size -= len(gen)
            _discard(gen)
            if gen is owner.old:
                owner.old = {}
            elif owner is store or owner.old:  # the inserting peer goes on in a new cur
                owner.cur = {}
                owner.born = now
                births.append((owner, owner.cur))
            else:  # a peer whose only generation was the oldest of all
                del stores[owner.peer]
            return

    def _compact_births(self) -> None:
        """Keep only live generations in the birth queue (it grows by one per rotation)."""
        stores = self._stores
        self._births = deque(
            (store, gen)
            for store, gen in self._births
            if stores.get(store.peer) is store and (gen is store.cur or gen is store.old)
        )


__all__ = ["DedupCache", "DedupEntry", "DedupEntryPy"]
