"""Tests of the server-side block-wise engines (layer 2; RFC 7959): fake clock, no I/O."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greencoap.codes import Code, Type
from greencoap.message import Message
from greencoap.options import Block
from greencoap.protocol.blockwise import Block1Uploader
from greencoap.protocol.blockwise_server import Block1Assembler, Block2Cache, block_of

KEY = ("peer", "POST", "/upload")
FAST = settings(max_examples=60, deadline=None)


def blocks(body: bytes, szx: int) -> list[tuple[Block, bytes]]:
    """Cut ``body`` the way a client does (same semantics as Block1Uploader.current)."""
    size = 1 << (szx + 4)
    out = []
    offset = 0
    while True:
        chunk = body[offset : offset + size]
        more = offset + size < len(body)
        out.append((Block(offset // size, more, szx), chunk))
        offset += size
        if not more:
            return out


def upload(asm: Block1Assembler, body: bytes, szx: int, key: tuple = KEY, now: float = 0.0):
    """Feed every block of ``body``; return the verdict of the last one."""
    result: tuple[str, object] = ("none", None)
    for block, chunk in blocks(body, szx):
        result = asm.feed(key, block, chunk, None, now)
        if block.more:
            assert result == ("continue", Block(block.num, True, szx))
    return result


# --- Block1Assembler ----------------------------------------------------------------------


@FAST
@given(body=st.binary(max_size=3000), szx=st.integers(0, 6))
def test_upload_in_order_completes_with_exact_body(body: bytes, szx: int) -> None:
    asm = Block1Assembler()
    assert upload(asm, body, szx) == ("complete", body)
    assert len(asm) == 0
    assert asm.memory == 0
    assert asm.stats["started"] == 1
    assert asm.stats["completed"] == 1


VERDICT_CODES = {
    "continue": Code.CONTINUE,
    "complete": Code.CHANGED,
    "incomplete": Code.REQUEST_ENTITY_INCOMPLETE,
    "too_large": Code.REQUEST_ENTITY_TOO_LARGE,
    "busy": Code.SERVICE_UNAVAILABLE,
}


def serve_upload(asm: Block1Assembler, body: bytes, szx: int) -> tuple[str, object, int]:
    """Join the client's Block1Uploader and the assembler in memory (no I/O)."""
    uploader = Block1Uploader(body, szx)
    for exchanges in range(1, 10_000):
        block, chunk = uploader.current()
        verdict, value = asm.feed(KEY, block, chunk, len(body), 0.0)
        response = Message(Type.ACK, VERDICT_CODES[verdict], mid=exchanges, token=b"t")
        if verdict == "continue":
            response.block1 = value
        if not uploader.feed(response):
            return verdict, value, exchanges
    raise AssertionError("the upload never ended")


@FAST
@given(body=st.binary(max_size=3000), szx=st.integers(0, 6))
def test_upload_from_the_client_uploader(body: bytes, szx: int) -> None:
    asm = Block1Assembler()
    verdict, value, exchanges = serve_upload(asm, body, szx)
    assert (verdict, value) == ("complete", body)
    assert exchanges == max(1, -(-len(body) // (16 << szx)))
    assert asm.memory == 0 and len(asm) == 0


def test_client_uploader_too_large() -> None:
    asm = Block1Assembler(max_body_size=100)
    assert serve_upload(asm, b"x" * 101, 0)[:2] == ("too_large", 100)
    assert asm.stats["started"] == 0


def test_single_block_upload_completes_at_once() -> None:
    asm = Block1Assembler()
    assert asm.feed(KEY, Block(0, False, 6), b"hello", 5, 0.0) == ("complete", b"hello")
    assert len(asm) == 0
    assert asm.feed(KEY, Block(0, False, 0), b"", None, 0.0) == ("complete", b"")


def test_memory_accounting_during_upload() -> None:
    asm = Block1Assembler()
    asm.feed(KEY, Block(0, True, 0), b"a" * 16, None, 0.0)
    asm.feed(KEY, Block(1, True, 0), b"b" * 16, None, 0.0)
    assert asm.memory == 32
    assert len(asm) == 1
    assert asm.feed(KEY, Block(2, False, 0), b"c", None, 0.0) == (
        "complete",
        b"a" * 16 + b"b" * 16 + b"c",
    )
    assert asm.memory == 0


def test_duplicate_of_last_block_is_idempotent() -> None:
    asm = Block1Assembler()
    body = bytes(range(100))
    parts = blocks(body, 0)
    for block, chunk in parts[:3]:
        assert asm.feed(KEY, block, chunk, None, 0.0)[0] == "continue"
    block, chunk = parts[2]
    assert asm.feed(KEY, block, chunk, None, 1.0) == ("continue", Block(2, True, 0))
    assert asm.feed(KEY, block, chunk, None, 2.0) == ("continue", Block(2, True, 0))
    assert asm.memory == 48
    assert asm.stats["duplicates"] == 2
    for block, chunk in parts[3:]:
        result = asm.feed(KEY, block, chunk, None, 3.0)
    assert result == ("complete", body)


def test_duplicate_of_block_zero_is_idempotent() -> None:
    asm = Block1Assembler()
    assert asm.feed(KEY, Block(0, True, 0), b"x" * 16, None, 0.0)[0] == "continue"
    assert asm.feed(KEY, Block(0, True, 0), b"x" * 16, None, 0.0)[0] == "continue"
    assert asm.memory == 16
    assert asm.stats["started"] == 1
    assert asm.feed(KEY, Block(1, False, 0), b"y", None, 0.0) == ("complete", b"x" * 16 + b"y")


def test_same_offset_different_payload_is_not_a_duplicate() -> None:
    asm = Block1Assembler()
    asm.feed(KEY, Block(0, True, 0), b"x" * 16, None, 0.0)
    asm.feed(KEY, Block(1, True, 0), b"y" * 16, None, 0.0)
    assert asm.feed(KEY, Block(1, True, 0), b"z" * 16, None, 0.0) == ("incomplete", None)
    assert len(asm) == 0
    assert asm.memory == 0


def test_gap_is_incomplete_and_discards_the_upload() -> None:
    asm = Block1Assembler()
    asm.feed(KEY, Block(0, True, 0), b"x" * 16, None, 0.0)
    assert asm.feed(KEY, Block(2, True, 0), b"y" * 16, None, 0.0) == ("incomplete", None)
    assert len(asm) == 0
    assert asm.memory == 0
    assert asm.stats["incomplete"] == 1
    # the upload is gone: the block that would have continued it is now incomplete too
    assert asm.feed(KEY, Block(1, False, 0), b"y", None, 0.0) == ("incomplete", None)


def test_older_block_is_incomplete() -> None:
    asm = Block1Assembler()
    for num in range(3):
        asm.feed(KEY, Block(num, True, 0), bytes([num]) * 16, None, 0.0)
    assert asm.feed(KEY, Block(1, True, 0), b"\x01" * 16, None, 0.0) == ("incomplete", None)
    assert len(asm) == 0


def test_block_after_zero_without_upload_is_incomplete() -> None:
    asm = Block1Assembler()
    assert asm.feed(KEY, Block(1, True, 0), b"x" * 16, None, 0.0) == ("incomplete", None)
    assert asm.feed(KEY, Block(5, False, 0), b"x", None, 0.0) == ("incomplete", None)
    assert len(asm) == 0
    assert asm.stats["incomplete"] == 2


def test_payload_that_does_not_fit_the_block_is_incomplete() -> None:
    asm = Block1Assembler()
    # more set but short
    assert asm.feed(KEY, Block(0, True, 1), b"x" * 16, None, 0.0) == ("incomplete", None)
    # longer than the block size
    assert asm.feed(KEY, Block(0, False, 0), b"x" * 17, None, 0.0) == ("incomplete", None)
    asm.feed(KEY, Block(0, True, 0), b"x" * 16, None, 0.0)
    assert asm.feed(KEY, Block(1, True, 0), b"x" * 15, None, 0.0) == ("incomplete", None)
    assert len(asm) == 0 and asm.memory == 0


def test_block_zero_restarts_the_upload() -> None:
    asm = Block1Assembler()
    asm.feed(KEY, Block(0, True, 0), b"a" * 16, None, 0.0)
    asm.feed(KEY, Block(1, True, 0), b"b" * 16, None, 0.0)
    assert asm.feed(KEY, Block(0, True, 0), b"c" * 16, None, 1.0) == ("continue", Block(0, True, 0))
    assert asm.memory == 16
    assert asm.stats["restarted"] == 1
    assert asm.feed(KEY, Block(1, False, 0), b"d", None, 1.0) == ("complete", b"c" * 16 + b"d")
    # a restart with a single block completes at once
    asm.feed(KEY, Block(0, True, 0), b"a" * 16, None, 2.0)
    assert asm.feed(KEY, Block(0, False, 0), b"new", None, 2.0) == ("complete", b"new")
    assert len(asm) == 0 and asm.memory == 0


def test_size1_over_max_is_too_large_before_storing() -> None:
    asm = Block1Assembler(max_body_size=100)
    assert asm.feed(KEY, Block(0, True, 0), b"x" * 16, 101, 0.0) == ("too_large", 100)
    assert len(asm) == 0 and asm.memory == 0
    assert asm.stats["too_large"] == 1
    assert asm.stats["started"] == 0
    # exactly max is fine
    assert asm.feed(KEY, Block(0, True, 0), b"x" * 16, 100, 0.0)[0] == "continue"


def test_size1_over_max_mid_upload_discards() -> None:
    asm = Block1Assembler(max_body_size=100)
    asm.feed(KEY, Block(0, True, 0), b"x" * 16, None, 0.0)
    assert asm.feed(KEY, Block(1, True, 0), b"x" * 16, 1000, 0.0) == ("too_large", 100)
    assert len(asm) == 0 and asm.memory == 0


def test_accumulated_body_over_max_is_too_large() -> None:
    asm = Block1Assembler(max_body_size=40)
    asm.feed(KEY, Block(0, True, 0), b"x" * 16, None, 0.0)
    asm.feed(KEY, Block(1, True, 0), b"x" * 16, None, 0.0)
    assert asm.feed(KEY, Block(2, True, 0), b"x" * 16, None, 0.0) == ("too_large", 40)
    assert len(asm) == 0 and asm.memory == 0
    # the final block counts too
    asm.feed(KEY, Block(0, True, 0), b"x" * 16, None, 0.0)
    asm.feed(KEY, Block(1, True, 0), b"x" * 16, None, 0.0)
    assert asm.feed(KEY, Block(2, False, 0), b"x" * 9, None, 0.0) == ("too_large", 40)
    asm.feed(KEY, Block(0, True, 0), b"x" * 16, None, 0.0)
    asm.feed(KEY, Block(1, True, 0), b"x" * 16, None, 0.0)
    assert asm.feed(KEY, Block(2, False, 0), b"x" * 8, None, 0.0) == ("complete", b"x" * 40)
    # and a single block
    assert asm.feed(KEY, Block(0, False, 6), b"x" * 41, None, 0.0) == ("too_large", 40)


def test_memory_cap_answers_busy() -> None:
    asm = Block1Assembler(memory_cap=64)
    a, b = ("a",), ("b",)
    asm.feed(a, Block(0, True, 0), b"a" * 16, None, 0.0)
    asm.feed(a, Block(1, True, 0), b"a" * 16, None, 0.0)
    asm.feed(b, Block(0, True, 0), b"b" * 16, None, 0.0)
    asm.feed(b, Block(1, True, 0), b"b" * 16, None, 0.0)
    assert asm.memory == 64
    assert asm.feed(b, Block(2, True, 0), b"b" * 16, None, 0.0) == ("busy", None)
    assert asm.stats["memory_refused"] == 1
    assert b not in asm and asm.memory == 32
    # the final block is never held, so it is not refused
    assert asm.feed(a, Block(2, False, 0), b"a" * 5, None, 0.0) == ("complete", b"a" * 37)
    assert asm.memory == 0 and len(asm) == 0


def test_memory_returns_to_zero_after_expiry() -> None:
    asm = Block1Assembler(memory_cap=1000, upload_timeout=10.0)
    for i in range(5):
        asm.feed((i,), Block(0, True, 2), b"z" * 64, None, float(i))
    assert asm.memory == 320
    assert asm.expire(100.0) == 5
    assert asm.memory == 0 and len(asm) == 0
    assert asm.stats["expired"] == 5


def test_expire_after_timeout_not_before() -> None:
    asm = Block1Assembler(upload_timeout=60.0)
    assert asm.next_deadline() is None
    asm.feed(("a",), Block(0, True, 0), b"a" * 16, None, 10.0)
    asm.feed(("b",), Block(0, True, 0), b"b" * 16, None, 20.0)
    assert asm.next_deadline() == 70.0
    # touching "a" again moves its deadline behind "b"
    asm.feed(("a",), Block(1, True, 0), b"a" * 16, None, 30.0)
    assert asm.next_deadline() == 80.0
    assert asm.expire(79.999) == 0
    assert len(asm) == 2
    assert asm.expire(80.0) == 1
    assert ("b",) not in asm and ("a",) in asm
    assert asm.next_deadline() == 90.0
    assert asm.expire(89.0) == 0
    assert asm.expire(90.0) == 1
    assert asm.next_deadline() is None
    assert asm.memory == 0
    assert asm.stats["expired"] == 2


def test_duplicate_refreshes_the_deadline() -> None:
    asm = Block1Assembler(upload_timeout=5.0)
    asm.feed(KEY, Block(0, True, 0), b"a" * 16, None, 0.0)
    asm.feed(KEY, Block(0, True, 0), b"a" * 16, None, 3.0)
    assert asm.next_deadline() == 8.0


def test_stale_upload_is_gone_even_before_expire_is_called() -> None:
    asm = Block1Assembler(upload_timeout=5.0)
    asm.feed(KEY, Block(0, True, 0), b"a" * 16, None, 0.0)
    assert asm.feed(KEY, Block(1, False, 0), b"b", None, 5.0) == ("incomplete", None)
    assert asm.stats["expired"] == 1
    assert asm.memory == 0 and len(asm) == 0


def test_concurrent_uploads_do_not_mix() -> None:
    asm = Block1Assembler()
    bodies = {("p", i): bytes([i]) * (100 + 37 * i) for i in range(4)}
    streams = {key: blocks(body, 1) for key, body in bodies.items()}
    results = {}
    step = 0
    while streams:
        for key in list(streams):
            block, chunk = streams[key].pop(0)
            verdict, value = asm.feed(key, block, chunk, None, float(step))
            if verdict == "complete":
                results[key] = value
            else:
                assert verdict == "continue"
            if not streams[key]:
                del streams[key]
        step += 1
    assert results == bodies
    assert asm.memory == 0 and len(asm) == 0


@FAST
@given(
    body=st.binary(min_size=1, max_size=4000),
    szx=st.integers(1, 6),
    data=st.data(),
)
def test_late_negotiation_to_smaller_szx(body: bytes, szx: int, data: st.DataObject) -> None:
    """The client switches to a smaller block size after some blocks (§2.5)."""
    asm = Block1Assembler()
    size = 1 << (szx + 4)
    first = blocks(body, szx)
    switch_after = data.draw(st.integers(1, len(first)), label="blocks at first size")
    new_szx = data.draw(st.integers(0, szx - 1), label="new szx")
    result: tuple[str, object] = ("none", None)
    for block, chunk in first[:switch_after]:
        result = asm.feed(KEY, block, chunk, None, 0.0)
    if result[0] == "complete":
        assert result[1] == body
        return
    offset = switch_after * size
    new_size = 1 << (new_szx + 4)
    while True:
        chunk = body[offset : offset + new_size]
        more = offset + new_size < len(body)
        block = Block(offset // new_size, more, new_szx)
        result = asm.feed(KEY, block, chunk, None, 0.0)
        if not more:
            break
        assert result == ("continue", Block(block.num, True, new_szx))
        offset += new_size
    assert result == ("complete", body)
    assert asm.memory == 0


def test_larger_szx_mid_upload_is_incomplete() -> None:
    asm = Block1Assembler()
    asm.feed(KEY, Block(0, True, 0), b"a" * 16, None, 0.0)
    asm.feed(KEY, Block(1, True, 0), b"a" * 16, None, 0.0)
    # offset 32 matches, but the block size grew
    assert asm.feed(KEY, Block(1, True, 1), b"a" * 32, None, 0.0) == ("incomplete", None)


@FAST
@given(
    ops=st.lists(
        st.tuples(
            st.integers(0, 2),  # key
            st.integers(0, 4),  # num
            st.booleans(),  # more
            st.integers(0, 1),  # szx
            st.integers(0, 40),  # payload length
            st.floats(0, 5),  # time step
        ),
        max_size=60,
    )
)
def test_memory_accounting_invariant_under_random_feeds(ops: list) -> None:
    asm = Block1Assembler(max_body_size=100, memory_cap=80, upload_timeout=10.0)
    now = 0.0
    for key, num, more, szx, n, dt in ops:
        now += dt
        verdict, _ = asm.feed((key,), Block(num, more, szx), b"q" * n, None, now)
        assert verdict in {"continue", "complete", "incomplete", "too_large", "busy"}
        held = sum(len(u.body) for u in asm._uploads.values())
        assert asm.memory == held <= 80
        assert all(len(u.body) <= 100 for u in asm._uploads.values())
    asm.expire(now + 10.0)
    assert asm.memory == 0 and len(asm) == 0


# --- Block2Cache --------------------------------------------------------------------------


def test_cache_round_trip_and_stats() -> None:
    cache = Block2Cache()
    assert cache.get(KEY, 0.0) is None
    etag = cache.put(KEY, b"body", {"cf": 0}, 0.0)
    assert isinstance(etag, bytes) and 1 <= len(etag) <= 8
    assert cache.get(KEY, 1.0) == (b"body", etag, {"cf": 0})
    assert cache.get(KEY, 2.0) == (b"body", etag, {"cf": 0})
    assert cache.stats["stored"] == 1
    assert cache.stats["hits"] == 2
    assert cache.stats["misses"] == 1
    assert cache.memory == 4 and len(cache) == 1


def test_cache_etags() -> None:
    cache = Block2Cache()
    e1 = cache.put(("a",), b"one", None, 0.0)
    e2 = cache.put(("b",), b"two", None, 0.0)
    assert e1 != e2
    # documented: an identical body gets the same ETag again (content hash)
    assert cache.put(("a",), b"one", None, 1.0) == e1
    assert cache.put(("c",), b"one", None, 1.0) == e1
    # re-put replaces, memory counts the newest body only
    cache.put(("a",), b"longer body", None, 2.0)
    assert cache.get(("a",), 2.0)[0] == b"longer body"
    assert cache.memory == len(b"two") + len(b"one") + len(b"longer body")


@FAST
@given(st.lists(st.binary(max_size=64), min_size=2, max_size=20, unique=True))
def test_cache_distinct_bodies_distinct_etags(bodies: list[bytes]) -> None:
    cache = Block2Cache()
    etags = [cache.put((i,), body, None, 0.0) for i, body in enumerate(bodies)]
    assert len(set(etags)) == len(bodies)
    assert all(1 <= len(e) <= 8 for e in etags)


def test_cache_expires_after_lifetime_and_get_does_not_refresh() -> None:
    cache = Block2Cache(lifetime=10.0)
    assert cache.next_deadline() is None
    cache.put(("a",), b"a", None, 0.0)
    cache.put(("b",), b"b", None, 5.0)
    assert cache.next_deadline() == 10.0
    assert cache.get(("a",), 9.9) is not None
    assert cache.next_deadline() == 10.0
    assert cache.expire(9.99) == 0
    assert cache.expire(10.0) == 1
    assert cache.get(("a",), 10.0) is None
    assert cache.next_deadline() == 15.0
    # an entry past its lifetime is a miss even if expire() was not called
    assert cache.get(("b",), 15.0) is None
    assert cache.stats["expired"] == 2
    assert cache.memory == 0 and len(cache) == 0
    assert cache.next_deadline() is None


def test_cache_evicts_oldest_first() -> None:
    cache = Block2Cache(memory_cap=100)
    cache.put(("a",), b"a" * 40, None, 0.0)
    cache.put(("b",), b"b" * 40, None, 1.0)
    cache.put(("c",), b"c" * 40, None, 2.0)
    assert ("a",) not in cache and ("b",) in cache and ("c",) in cache
    assert cache.stats["evicted"] == 1
    assert cache.memory == 80
    cache.put(("d",), b"d" * 100, None, 3.0)
    assert len(cache) == 1 and cache.memory == 100
    assert cache.stats["evicted"] == 3


def test_cache_body_over_cap_is_not_stored() -> None:
    cache = Block2Cache(memory_cap=10)
    cache.put(("a",), b"small", None, 0.0)
    etag = cache.put(("big",), b"x" * 11, None, 0.0)
    assert len(etag) == 8
    assert cache.get(("big",), 0.0) is None
    assert ("a",) in cache
    assert cache.stats["refused"] == 1
    # replacing a stored body with an oversized one drops the stale body
    cache.put(("a",), b"y" * 11, None, 0.0)
    assert cache.get(("a",), 0.0) is None
    assert cache.memory == 0


# --- block_of -----------------------------------------------------------------------------


def test_block_of_basic() -> None:
    body = bytes(range(40))
    assert block_of(body, 0, 0) == (body[:16], Block(0, True, 0))
    assert block_of(body, 1, 0) == (body[16:32], Block(1, True, 0))
    assert block_of(body, 2, 0) == (body[32:], Block(2, False, 0))
    assert block_of(body, 3, 0) is None


def test_block_of_exact_multiple() -> None:
    body = b"x" * 64
    assert block_of(body, 1, 1) == (b"x" * 32, Block(1, False, 1))
    assert block_of(body, 2, 1) is None
    assert block_of(body, 0, 2) == (body, Block(0, False, 2))
    assert block_of(body, 1, 2) is None


def test_block_of_empty_body() -> None:
    assert block_of(b"", 0, 6) == (b"", Block(0, False, 6))
    assert block_of(b"", 1, 6) is None


def test_block_of_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        block_of(b"x", 0, 7)
    with pytest.raises(ValueError):
        block_of(b"x", -1, 0)


@FAST
@given(body=st.binary(max_size=5000), szx=st.integers(0, 6))
def test_block_of_blocks_concatenate_to_the_body(body: bytes, szx: int) -> None:
    size = 1 << (szx + 4)
    parts = []
    num = 0
    while True:
        got = block_of(body, num, szx)
        assert got is not None
        payload, block = got
        assert block.num == num and block.szx == szx
        assert block.offset == num * size
        parts.append(payload)
        if not block.more:
            break
        assert len(payload) == size
        num += 1
    assert b"".join(parts) == body
    assert 0 < len(parts[-1]) <= size or body == b""
    assert block_of(body, num + 1, szx) is None
    assert num + 1 == max(1, -(-len(body) // size))


@FAST
@given(body=st.binary(max_size=3000), szx=st.integers(0, 6))
def test_block_of_feeds_the_assembler(body: bytes, szx: int) -> None:
    """A body served with block_of, uploaded to the assembler, comes out unchanged."""
    asm = Block1Assembler()
    num = 0
    while True:
        got = block_of(body, num, szx)
        assert got is not None
        payload, block = got
        verdict, value = asm.feed(KEY, block, payload, len(body), 0.0)
        if not block.more:
            assert (verdict, value) == ("complete", body)
            break
        assert verdict == "continue"
        num += 1


def test_expire_at_next_deadline_makes_progress_whatever_the_rounding() -> None:
    """``expire(next_deadline())`` drops the upload even where ``deadline -
    touched`` rounds below the timeout (touched = 0.1 + 0.2, timeout 10: the
    difference is 9.999999999999998); hypothesis found it."""
    asm = Block1Assembler(max_body_size=100, memory_cap=80, upload_timeout=10.0)
    touched = 126.284
    assert (touched + 10.0) - touched < 10.0  # the rounding this is about
    asm.feed(("k",), Block(0, True, 0), b"q" * 16, None, touched)
    assert asm.expire(asm.next_deadline()) == 1
    assert asm.memory == 0 and len(asm) == 0
