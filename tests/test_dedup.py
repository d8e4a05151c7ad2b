"""The deduplication cache on its own (greencoap/protocol/dedup.py): lifetimes,
the memory bound, fairness between peers, O(1) work per request, and its
bookkeeping under random traffic (hypothesis).  The clock is the ``now``
argument."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from greencoap.protocol.dedup import DedupCache

A, B = ("10.0.0.1", 5683), ("10.0.0.2", 5683)


def cache(**kw) -> DedupCache:
    return DedupCache(247.0, 145.0, **kw)


def test_entries_live_their_lifetime_con_and_non():
    d = cache()
    d.remember(A, 1, True, 0.0, b"t1")
    d.remember(A, 2, False, 0.0, b"t2")
    assert d.next_expiry() == 145.0
    d.expire(144.9)
    assert d.lookup(A, 1, 144.9) is not None and d.lookup(A, 2, 144.9) is not None
    d.expire(145.0)
    assert d.lookup(A, 2, 145.0) is None and d.lookup(A, 1, 145.0) is not None
    assert d.lookup(A, 1, 246.9) is not None and d.lookup(A, 1, 247.0) is None
    d.expire(247.0)
    assert len(d) == 0 and d.next_expiry() is None
    assert set(d.table_sizes().values()) == {0}


def test_an_entry_records_the_answer_and_the_token():
    d = cache()
    e = d.remember(A, 7, True, 1.0, b"tok")
    assert d.lookup(A, 7, 1.0) is e and e.token == b"tok" and e.response is None
    e.response = b"\x60\x45\x00\x07"
    assert d.get(A, 7).response == b"\x60\x45\x00\x07"
    d.drop(A, 7)
    assert d.get(A, 7) is None and d.table_sizes()["dedup_peers"] == 0
    d.drop(A, 7)  # dropping what is gone is harmless


def test_an_entry_stays_its_lifetime_across_time_rotations():
    """A steady trickle from one peer: every entry is still a duplicate just
    before its lifetime ends, whatever the generation it sits in."""
    d = cache()
    for i in range(2000):
        now = i * 0.5  # 1,000 s: four lifetimes
        d.remember(A, i & 0xFFFF, True, now, b"")
        back = i - 493  # the entry made 246.5 s ago
        if back >= 0:
            assert d.lookup(A, back, now) is not None, (i, back)
        if i - 495 >= 0:
            assert d.lookup(A, i - 495, now) is None  # 247.5 s ago: expired
        d.expire(now)
    assert len(d) <= 2 * 495  # about two lifetimes' worth at most


def test_a_full_cache_drops_the_oldest_generation():
    d = cache(capacity=8, peer_share=1.0)
    peers = [("p", i) for i in range(8)]
    for i, p in enumerate(peers):
        d.remember(p, 1, True, float(i), b"")
    d.remember(B, 1, True, 10.0, b"")
    assert len(d) <= 8 and d.stats["dedup_evicted"] >= 1
    assert d.lookup(peers[0], 1, 10.0) is None  # the oldest went
    assert d.lookup(B, 1, 10.0) is not None and d.lookup(peers[7], 1, 10.0) is not None


def test_a_flooding_peer_pushes_out_only_its_own_entries():
    d = cache(capacity=16, peer_share=0.25)  # each peer may hold 4
    d.remember(B, 1, True, 0.0, b"")
    for mid in range(1000):
        d.remember(A, mid, True, 1.0 + mid * 0.001, b"")
    assert d.lookup(B, 1, 2.0) is not None
    assert len(d) <= 16
    assert d.held_by(A) <= d.peer_cap == 4
    # the newest half-share of the flooder is always kept
    assert all(d.lookup(A, mid, 2.0) is not None for mid in (998, 999))
    assert d.stats["dedup_peer_full"] > 0 and d.stats["dedup_evicted"] >= 990


def test_a_reused_mid_replaces_the_entry():
    d = cache(capacity=16, peer_share=1.0)
    first = d.remember(A, 5, True, 0.0, b"a")
    second = d.remember(A, 5, True, 1.0, b"b")
    assert d.lookup(A, 5, 1.0) is second is not first and len(d) == 1


def test_the_work_per_request_does_not_grow_with_the_cache():
    """No eviction walk: a flood at its share does a bounded amount of
    bookkeeping per request (the birth queue grows by one per rotation, and
    stays within a few times the number of peers once swept)."""
    d = DedupCache(247.0, 145.0, capacity=4096)  # share 1,024: rotation every 512
    for i in range(200_000):
        d.remember(A, i & 0xFFFF, False, i * 1e-5, i.to_bytes(3, "big"))
    assert d.held_by(A) <= 1024
    assert len(d._births) <= 4 * 1 + 64  # compacted as it goes
    assert sum(len(g) for _, g in d._births) <= len(d)  # and it holds no dropped entries


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 3),  # peer
            st.integers(0, 40),  # mid
            st.booleans(),  # CON?
            st.floats(0.0, 30.0),  # time step
            st.sampled_from(["remember", "remember", "remember", "drop", "expire"]),
        ),
        max_size=300,
    ),
    st.integers(1, 24),
    st.sampled_from([0.25, 0.5, 1.0]),
)
def test_bookkeeping_invariants_under_random_traffic(ops, capacity, share):
    """Whatever the traffic: the bound holds, no peer exceeds its share, a
    lookup never returns an entry past its lifetime, an entry is kept unless
    the bound pushed it out (counted), and everything is released after the
    longest lifetime."""
    d = DedupCache(20.0, 10.0, capacity=capacity, peer_share=share)
    now = 0.0
    made: dict[tuple, object] = {}
    for peer, mid, con, step, op in ops:
        now += step
        p = ("p", peer)
        if op == "remember":
            if d.lookup(p, mid, now) is None:
                e = d.remember(p, mid, con, now, b"")
                assert e.expires == now + (20.0 if con else 10.0)
                made[(p, mid)] = e
        elif op == "drop":
            d.drop(p, mid)
            made.pop((p, mid), None)
        else:
            d.expire(now)
            nxt = d.next_expiry()
            assert nxt is None or nxt > now
        assert len(d) <= capacity
        assert all(d.held_by(("p", i)) <= d.peer_cap for i in range(4))
        live = dict(d.live(now))
        assert all(e.expires > now for e in live.values())
        lost = [k for k, e in made.items() if e.expires > now and live.get(k) is not e]
        assert not lost or d.stats["dedup_evicted"] > 0
        assert sum(1 for _ in live) <= len(d)
        # dropped generations hold nothing (the birth queue may still name them)
        assert sum(len(g) for _, g in d._births) <= len(d)
    d.expire(now + 20.0)
    assert set(d.table_sizes().values()) == {0} and len(d._births) <= 64


def test_admit_tells_a_copy_from_a_new_message_in_one_lookup():
    d = cache()
    assert d.admit(A, 9, True, 0.0, b"t") is None  # new: remembered
    first = d.get(A, 9)
    assert first is not None and first.token == b"t"
    assert d.admit(A, 9, True, 1.0, b"t") is first  # a copy
    assert d.admit(A, 9, True, 2.0, b"u") is None  # the MID came back with a new token
    assert d.stats["mid_reused"] == 1 and d.get(A, 9) is not first and len(d) == 1
    assert d.admit(A, 9, True, 250.0, b"u") is None  # past its lifetime: new again
    assert d.stats["mid_reused"] == 1
