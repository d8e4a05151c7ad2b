"""The deduplication cache on its own (greencoap/protocol/dedup.py): lifetimes,
the memory bound, fairness between peers, and its bookkeeping under random
traffic (hypothesis).  The clock is the ``now`` argument."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from greencoap.protocol.dedup import DedupCache

A, B = ("10.0.0.1", 5683), ("10.0.0.2", 5683)


def cache(**kw) -> DedupCache:
    return DedupCache(247.0, 145.0, **kw)


def test_entries_live_their_lifetime_con_and_non():
    d = cache()
    d.remember((A, 1), True, 0.0, b"t1")
    d.remember((A, 2), False, 0.0, b"t2")
    assert d.next_expiry() == 145.0
    d.expire(144.9)
    assert d.get((A, 1)) is not None and d.get((A, 2)) is not None
    d.expire(145.0)
    assert d.get((A, 2)) is None and d.get((A, 1)) is not None
    assert d.next_expiry() == 247.0
    d.expire(247.0)
    assert len(d) == 0 and d.next_expiry() is None
    assert set(d.table_sizes().values()) == {0}


def test_an_entry_records_the_answer_and_the_token():
    d = cache()
    e = d.remember((A, 7), True, 1.0, b"tok")
    assert d.get((A, 7)) is e and e.token == b"tok" and e.response is None
    e.response = b"\x60\x45\x00\x07"
    assert d.get((A, 7)).response == b"\x60\x45\x00\x07"
    d.drop((A, 7))
    assert d.get((A, 7)) is None and d.table_sizes()["dedup_peers"] == 0
    d.drop((A, 7))  # dropping what is gone is harmless


def test_a_full_cache_evicts_the_entries_that_expire_first():
    d = cache(capacity=4, peer_share=1.0)
    for mid in range(4):
        d.remember((A, mid), True, float(mid), b"")
    d.remember((A, 4), True, 10.0, b"")
    assert d.get((A, 0)) is None and d.get((A, 4)) is not None
    assert len(d) <= 4 and d.stats["dedup_evicted"] >= 1


def test_a_flooding_peer_pushes_out_only_its_own_entries():
    d = cache(capacity=16, peer_share=0.25)  # each peer may hold 4
    d.remember((B, 1), True, 0.0, b"")
    for mid in range(1000):
        d.remember((A, mid), True, 1.0 + mid * 0.001, b"")
    assert d.get((B, 1)) is not None
    assert d.table_sizes()["dedup"] <= 16
    assert d._per_peer[A] <= d.peer_cap == 4
    assert d.get((A, 999)) is not None  # the newest of the flooder are kept
    assert d.stats["dedup_peer_full"] == 0


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
    """Whatever the traffic: the bound holds, per-peer counts match the table,
    no peer exceeds its share, the queues stay bounded, expiry takes exactly
    the entries whose lifetime is over, and everything is gone after the
    longest one."""
    d = DedupCache(20.0, 10.0, capacity=capacity, peer_share=share)
    now = 0.0
    for peer, mid, con, step, op in ops:
        now += step
        key = (("p", peer), mid)
        if op == "remember":
            if d.get(key) is None:
                e = d.remember(key, con, now, b"")
                assert e.expires == now + (20.0 if con else 10.0)
        elif op == "drop":
            d.drop(key)
        else:
            alive = {k for k, e in d.entries.items() if e.expires > now}
            d.expire(now)
            assert set(d.entries) == alive
            nxt = d.next_expiry()
            assert nxt is None or nxt > now
            assert all(e.expires > now for e in d.entries.values())
        assert len(d.entries) <= capacity
        assert sum(d._per_peer.values()) == len(d.entries)
        assert all(n <= d.peer_cap for n in d._per_peer.values())
        assert sum(len(q) for q in d._order) <= 2 * capacity + 1024 + d.evict_batch + 1
    d.expire(now + 20.0)
    assert set(d.table_sizes().values()) == {0}
