"""Sans-I/O tests of the RFC 7959 block-wise engines (greencoap.protocol.blockwise).

No sockets, no clock: the tests build the server's responses as
:class:`Message` objects and feed them to :class:`Block2Assembler` (response
bodies, §2.4) and :class:`Block1Uploader` (request bodies, §2.5).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greencoap.codes import Code, Type
from greencoap.message import Message
from greencoap.options import Block, OptionNumber
from greencoap.protocol.blockwise import (
    Block1Uploader,
    Block2Assembler,
    BlockwiseError,
    BodyTooLargeError,
    szx_for,
)

BIG = 1 << 20  # a max_body_size that never limits


def body_of(n: int) -> bytes:
    """``n`` recognisable bytes (every offset differs from its neighbours)."""
    return bytes((i * 7 + i // 251) & 0xFF for i in range(n))


def block2_response(
    body: bytes,
    num: int,
    szx: int,
    *,
    etag: bytes | None = None,
    size2: int | None = None,
    payload: bytes | None = None,
) -> Message:
    """The server's 2.05 carrying block ``num`` of ``body`` at block size 2**(szx+4)."""
    size = 1 << (szx + 4)
    start = num * size
    more = start + size < len(body)
    m = Message(Type.ACK, Code.CONTENT, mid=1, token=b"t")
    m.payload = body[start : start + size] if payload is None else payload
    m.block2 = Block(num, more, szx)
    if etag is not None:
        m.etag = etag
    if size2 is not None:
        m.size2 = size2
    return m


def server_blocks(body: bytes, szx: int) -> list[Message]:
    """Every block of ``body`` as the server would send it (at least one)."""
    size = 1 << (szx + 4)
    count = max(1, -(-len(body) // size))
    return [block2_response(body, n, szx) for n in range(count)]


def answer(code: int, block1: Block | None = None, size1: int | None = None) -> Message:
    """The server's answer to one Block1 request."""
    m = Message(Type.ACK, code, mid=1, token=b"t")
    if block1 is not None:
        m.block1 = block1
    if size1 is not None:
        m.size1 = size1
    return m


# -- Block2Assembler (§2.4) ------------------------------------------------------------


def test_block2_in_order_reassembles_and_asks_for_the_next_block():
    body = body_of(64 * 5 + 10)  # 5 full blocks of 64 and a short last one
    asm = Block2Assembler(max_body_size=BIG)
    blocks = server_blocks(body, szx_for(64))
    assert len(blocks) == 6
    for n, resp in enumerate(blocks[:-1]):
        nxt = asm.feed(resp)
        assert nxt == Block(n + 1, False, 2)  # same szx, more=False in a request
        assert nxt.offset == len(asm.body)
    assert asm.feed(blocks[-1]) is None  # the final block completes the body
    assert bytes(asm.body) == body
    assert asm.blocks == 6


def test_block2_body_that_fills_its_last_block_exactly():
    body = body_of(128)
    asm = Block2Assembler(BIG)
    first, last = server_blocks(body, 2)
    assert asm.feed(first) == Block(1, False, 2)
    assert last.block2 == Block(1, False, 2) and len(last.payload) == 64
    assert asm.feed(last) is None
    assert bytes(asm.body) == body


def test_response_without_block2_is_the_whole_body():
    asm = Block2Assembler(BIG)
    m = Message(Type.ACK, Code.CONTENT, mid=1, token=b"t", payload=b"all of it")
    assert asm.feed(m) is None
    assert bytes(asm.body) == b"all of it"


def test_block2_option_survives_the_codec():
    body = body_of(100)
    wire = block2_response(body, 0, 2, etag=b"e1", size2=100).encode()
    asm = Block2Assembler(BIG)
    assert asm.feed(Message.decode(wire)) == Block(1, False, 2)
    assert asm.etag == b"e1"


def test_server_chooses_a_smaller_szx_on_the_first_block():
    # we asked for 1024-byte blocks (szx 6); the server answers with 256 (szx 4)
    body = body_of(700)
    asm = Block2Assembler(BIG)
    assert asm.feed(block2_response(body, 0, 4)) == Block(1, False, 4)
    assert asm.feed(block2_response(body, 1, 4)) == Block(2, False, 4)
    assert asm.feed(block2_response(body, 2, 4)) is None
    assert bytes(asm.body) == body
    assert asm.szx == 4


def test_server_switches_to_a_smaller_szx_mid_transfer():
    # block 0 at 1024 bytes; then we ask for Block(1, szx 6) and the server answers
    # the same byte offset (1024) at szx 4: num 4; the next request is num 5 at szx 4
    body = body_of(1024 + 256 * 2 + 5)
    asm = Block2Assembler(BIG)
    assert asm.feed(block2_response(body, 0, 6)) == Block(1, False, 6)
    nxt = asm.feed(block2_response(body, 4, 4))
    assert nxt == Block(5, False, 4)
    assert nxt.offset == 1024 + 256 == len(asm.body)
    assert asm.feed(block2_response(body, 5, 4)) == Block(6, False, 4)
    assert asm.feed(block2_response(body, 6, 4)) is None
    assert bytes(asm.body) == body


def test_etag_change_mid_transfer_raises():
    body = body_of(200)
    asm = Block2Assembler(BIG)
    asm.feed(block2_response(body, 0, 2, etag=b"v1"))
    asm.feed(block2_response(body, 1, 2, etag=b"v1"))
    with pytest.raises(BlockwiseError, match="ETag"):
        asm.feed(block2_response(body, 2, 2, etag=b"v2"))


def test_etag_appearing_mid_transfer_raises():
    body = body_of(200)
    asm = Block2Assembler(BIG)
    asm.feed(block2_response(body, 0, 2))
    with pytest.raises(BlockwiseError):
        asm.feed(block2_response(body, 1, 2, etag=b"v1"))


@pytest.mark.parametrize("num", [0, 2, 3])
def test_out_of_order_block_raises(num):
    body = body_of(300)
    asm = Block2Assembler(BIG)
    asm.feed(block2_response(body, 0, 2))  # now expecting block 1 (offset 64)
    with pytest.raises(BlockwiseError, match="offset"):
        asm.feed(block2_response(body, num, 2))


def test_first_block_that_is_not_block_zero_raises():
    body = body_of(300)
    with pytest.raises(BlockwiseError):
        Block2Assembler(BIG).feed(block2_response(body, 1, 2))


def test_continuation_without_block2_raises():
    body = body_of(300)
    asm = Block2Assembler(BIG)
    asm.feed(block2_response(body, 0, 2))
    plain = Message(Type.ACK, Code.CONTENT, mid=2, token=b"t", payload=b"rest")
    with pytest.raises(BlockwiseError):
        asm.feed(plain)


@pytest.mark.parametrize("length", [0, 63, 65])
def test_non_final_block_with_wrong_payload_length_raises(length):
    body = body_of(300)
    asm = Block2Assembler(BIG)
    bad = block2_response(body, 0, 2, payload=body[:length])
    assert bad.block2.more
    with pytest.raises(BlockwiseError):
        asm.feed(bad)
    assert len(asm.body) == 0  # nothing of the bad block was kept


def test_short_final_block_is_fine():
    body = body_of(64 + 1)
    asm = Block2Assembler(BIG)
    asm.feed(block2_response(body, 0, 2))
    assert asm.feed(block2_response(body, 1, 2)) is None
    assert bytes(asm.body) == body


def test_exceeding_max_body_size_raises():
    body = body_of(64 * 4)
    asm = Block2Assembler(max_body_size=64 * 3 - 1)
    asm.feed(block2_response(body, 0, 2))
    asm.feed(block2_response(body, 1, 2))
    with pytest.raises(BodyTooLargeError):
        asm.feed(block2_response(body, 2, 2))
    assert issubclass(BodyTooLargeError, BlockwiseError)


def test_body_of_exactly_max_body_size_is_accepted():
    body = body_of(64 * 3)
    asm = Block2Assembler(max_body_size=len(body))
    for resp in server_blocks(body, 2):
        asm.feed(resp)
    assert bytes(asm.body) == body


def test_unblocked_body_over_max_body_size_raises():
    m = Message(Type.ACK, Code.CONTENT, mid=1, token=b"t", payload=b"x" * 11)
    with pytest.raises(BodyTooLargeError):
        Block2Assembler(max_body_size=10).feed(m)


def test_size2_over_max_body_size_raises_on_the_first_block():
    body = body_of(5000)
    asm = Block2Assembler(max_body_size=4096)
    with pytest.raises(BodyTooLargeError, match="Size2"):
        asm.feed(block2_response(body, 0, 6, size2=5000))
    assert len(asm.body) == 0


def test_size2_within_max_body_size_is_fine():
    body = body_of(300)
    asm = Block2Assembler(max_body_size=300)
    assert asm.feed(block2_response(body, 0, 2, size2=300)) == Block(1, False, 2)


@settings(max_examples=150, deadline=None)
@given(
    size=st.integers(0, 5000),
    szx=st.integers(0, 6),
    etag=st.none() | st.binary(min_size=1, max_size=8),
)
def test_property_block2_reassembles_any_body(size, szx, etag):
    body = body_of(size)
    asm = Block2Assembler(max_body_size=5000)
    blocks = server_blocks(body, szx)
    for n, resp in enumerate(blocks):
        if etag is not None:
            resp.etag = etag
        nxt = asm.feed(resp)
        if n < len(blocks) - 1:
            assert nxt == Block(n + 1, False, szx)
        else:
            assert nxt is None
    assert bytes(asm.body) == body
    assert asm.blocks == len(blocks)


# -- Block1Uploader (§2.5) --------------------------------------------------------------


def upload(up: Block1Uploader) -> list[tuple[Block, bytes]]:
    """Answer every block with 2.31 (the last with 2.04); return what was sent."""
    sent = []
    while True:
        blk, chunk = up.current()
        sent.append((blk, chunk))
        if blk.more:
            assert up.feed(answer(Code.CONTINUE, Block(blk.num, True, blk.szx))) is True
        else:
            assert up.feed(answer(Code.CHANGED, Block(blk.num, False, blk.szx))) is False
            return sent


def test_block1_blocks_are_consecutive_and_cover_the_body():
    body = body_of(64 * 3 + 20)
    sent = upload(Block1Uploader(body, szx=2))
    assert [b for b, _ in sent] == [
        Block(0, True, 2),
        Block(1, True, 2),
        Block(2, True, 2),
        Block(3, False, 2),
    ]
    assert [len(c) for _, c in sent] == [64, 64, 64, 20]
    assert b"".join(c for _, c in sent) == body


def test_block1_body_that_fits_one_block():
    up = Block1Uploader(b"tiny", szx=6)
    assert up.current() == (Block(0, False, 6), b"tiny")
    assert up.feed(answer(Code.CHANGED, Block(0, False, 6))) is False


def test_block1_body_filling_its_last_block_exactly():
    body = body_of(128)
    sent = upload(Block1Uploader(body, szx=2))
    assert [b for b, _ in sent] == [Block(0, True, 2), Block(1, False, 2)]
    assert b"".join(c for _, c in sent) == body


def test_block1_current_is_stable_until_fed():
    up = Block1Uploader(body_of(100), szx=2)
    assert up.current() == up.current()
    assert up.feed(answer(Code.CONTINUE, Block(0, True, 2))) is True
    assert up.current()[0] == Block(1, False, 2)


def test_block1_invalid_szx_rejected():
    with pytest.raises(ValueError):
        Block1Uploader(b"x", szx=7)
    with pytest.raises(ValueError):
        Block1Uploader(b"x", szx=-1)


def test_block1_late_negotiation_smaller_szx_in_2_31():
    body = body_of(2000)
    up = Block1Uploader(body, szx=6)
    blk, chunk = up.current()
    assert blk == Block(0, True, 6) and chunk == body[:1024]
    # §2.5: the server acknowledges block 0 but wants 256-byte blocks from now on
    assert up.feed(answer(Code.CONTINUE, Block(0, True, 4))) is True
    blk, chunk = up.current()
    assert blk == Block(4, True, 4)
    assert blk.offset == 1024
    assert chunk == body[1024:1280]
    sent = [(Block(0, True, 6), body[:1024])] + upload(up)
    assert [b.num for b, _ in sent] == [0, 4, 5, 6, 7]
    assert all(b.szx == 4 for b, _ in sent[1:])
    assert b"".join(c for _, c in sent) == body


def test_block1_4_13_with_smaller_szx_restarts_from_zero():
    body = body_of(3000)
    up = Block1Uploader(body, szx=6)
    assert up.feed(answer(Code.CONTINUE, Block(0, True, 6))) is True
    assert up.current()[0] == Block(1, True, 6)
    assert up.feed(answer(Code.REQUEST_ENTITY_TOO_LARGE, Block(0, False, 4))) is True
    assert up.restarts == 1
    blk, chunk = up.current()
    assert blk == Block(0, True, 4) and chunk == body[:256]
    sent = upload(up)
    assert b"".join(c for _, c in sent) == body


def test_block1_4_13_restarts_are_bounded():
    up = Block1Uploader(body_of(3000), szx=6)
    for szx in range(5, -1, -1):
        assert up.feed(answer(Code.REQUEST_ENTITY_TOO_LARGE, Block(0, False, szx))) is True
        assert up.current()[0] == Block(0, True, szx)
    assert up.restarts == 6
    # nothing smaller than 16 bytes exists: a further 4.13 is final
    assert up.feed(answer(Code.REQUEST_ENTITY_TOO_LARGE, Block(0, False, 0))) is False
    assert up.restarts == 6
    # and the counter itself caps restarts
    up2 = Block1Uploader(body_of(3000), szx=6)
    up2.restarts = 6
    assert up2.feed(answer(Code.REQUEST_ENTITY_TOO_LARGE, Block(0, False, 2))) is False


@pytest.mark.parametrize(
    "resp",
    [
        answer(Code.REQUEST_ENTITY_TOO_LARGE),
        answer(Code.REQUEST_ENTITY_TOO_LARGE, size1=500),
        answer(Code.REQUEST_ENTITY_TOO_LARGE, Block(0, False, 6)),  # not smaller
    ],
    ids=["no-block1", "size1-only", "same-szx"],
)
def test_block1_4_13_without_a_smaller_block1_is_final(resp):
    up = Block1Uploader(body_of(3000), szx=6)
    assert up.feed(resp) is False
    assert up.restarts == 0


def test_block1_final_2_04_returns_false():
    up = Block1Uploader(body_of(100), szx=2)
    assert up.feed(answer(Code.CONTINUE, Block(0, True, 2))) is True
    assert up.feed(answer(Code.CHANGED, Block(1, False, 2))) is False


@pytest.mark.parametrize(
    "code", [Code.CREATED, Code.CHANGED, Code.NOT_FOUND, Code.REQUEST_ENTITY_INCOMPLETE]
)
def test_block1_other_responses_are_final(code):
    up = Block1Uploader(body_of(300), szx=2)
    assert up.feed(answer(code, Block(0, False, 2))) is False


def test_block1_2_31_without_block1_raises():
    up = Block1Uploader(body_of(300), szx=2)
    with pytest.raises(BlockwiseError, match="Block1"):
        up.feed(answer(Code.CONTINUE))


def test_block1_2_31_for_another_block_raises():
    up = Block1Uploader(body_of(300), szx=2)
    with pytest.raises(BlockwiseError):
        up.feed(answer(Code.CONTINUE, Block(3, True, 2)))


def test_block1_2_31_after_the_last_block_raises():
    up = Block1Uploader(body_of(100), szx=2)
    up.feed(answer(Code.CONTINUE, Block(0, True, 2)))
    assert up.current()[0].more is False
    with pytest.raises(BlockwiseError):
        up.feed(answer(Code.CONTINUE, Block(1, True, 2)))


def test_block1_request_carries_the_block_through_the_codec():
    body = body_of(100)
    up = Block1Uploader(body, szx=2)
    blk, chunk = up.current()
    req = Message(Type.CON, Code.PUT, mid=9, token=b"t", payload=chunk)
    req.block1 = blk
    req.size1 = len(body)
    back = Message.decode(req.encode())
    assert back.block1 == Block(0, True, 2)
    assert back.size1 == 100
    assert back.opt(OptionNumber.BLOCK1) == bytes([0x0A])


@settings(max_examples=150, deadline=None)
@given(
    size=st.integers(0, 5000),
    szx=st.integers(0, 6),
    server_szx=st.none() | st.integers(0, 6),
)
def test_property_block1_upload_reassembles(size, szx, server_szx):
    body = body_of(size)
    up = Block1Uploader(body, szx)
    received = bytearray()
    while True:
        blk, chunk = up.current()
        assert blk.offset == len(received)  # consecutive, no gap, no overlap
        received[blk.offset : blk.offset + len(chunk)] = chunk
        if not blk.more:
            assert up.feed(answer(Code.CHANGED, Block(blk.num, False, blk.szx))) is False
            break
        assert len(chunk) == blk.size
        # the server may prefer smaller blocks (late negotiation, §2.5)
        ack_szx = blk.szx if server_szx is None else min(blk.szx, server_szx)
        assert up.feed(answer(Code.CONTINUE, Block(blk.num, True, ack_szx))) is True
    assert bytes(received) == body
