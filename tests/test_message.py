"""Tests for greencoap.message (and the Block value of greencoap.options).

Hand-written byte vectors following RFC 7252 §3, every malformation the strict
decoder must reject, the extended delta/length boundaries, bad-option marking,
the typed accessors, and hypothesis round trips.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from greencoap.codes import Code, Type
from greencoap.errors import CoapError, MessageFormatError
from greencoap.message import Message, bad_option_numbers, decode, encode
from greencoap.options import (
    OPTION_SPECS,
    Block,
    ContentFormat,
    OptionFormat,
    OptionNumber,
    decode_uint,
    encode_uint,
    is_critical,
    is_no_cache_key,
    is_unsafe,
    size_to_szx,
)

TOKEN = bytes.fromhex("71c2a7e0")
GET_TEMPERATURE = bytes.fromhex("44017d3471c2a7e0bb") + b"temperature"


# -- RFC 7252 vectors ---------------------------------------------------------


def test_header_only_empty_con() -> None:
    # §3: Ver=1 (01), T=CON (00), TKL=0 -> 0x40; code 0.00; mid 0x1234.
    msg = decode(b"\x40\x00\x12\x34")
    assert msg.mtype is Type.CON and msg.code is Code.EMPTY and msg.mid == 0x1234
    assert msg.token == b"" and msg.options == [] and msg.payload == b""
    assert Message(Type.CON, Code.EMPTY, 0x1234).encode() == b"\x40\x00\x12\x34"


def test_rst_empty() -> None:
    msg = decode(b"\x70\x00\xff\xff")
    assert msg.mtype is Type.RST and msg.code.is_empty and msg.mid == 0xFFFF


def test_get_with_token_and_uri_path() -> None:
    msg = Message(Type.CON, Code.GET, 0x7D34, TOKEN, [(11, b"temperature")])
    assert msg.encode() == GET_TEMPERATURE
    back = Message.decode(GET_TEMPERATURE)
    assert back == msg
    assert back.uri_path == ["temperature"]
    assert back.token == TOKEN


def test_piggybacked_response_with_payload() -> None:
    data = bytes.fromhex("64457d3471c2a7e0ff") + b"22.3 C"
    msg = decode(data)
    assert (msg.mtype, msg.code, msg.mid) == (Type.ACK, Code.CONTENT, 0x7D34)
    assert msg.payload == b"22.3 C" and msg.options == []
    assert msg.encode() == data


def test_options_with_deltas_and_payload() -> None:
    # Uri-Path "a" (delta 11), Uri-Path "b" (delta 0), Content-Format 50 (delta 1, len 1).
    data = bytes.fromhex("42020001aabbb16101621132ff") + b"{}"
    msg = decode(data)
    assert msg.code is Code.POST and msg.token == b"\xaa\xbb"
    assert msg.options == [(11, b"a"), (11, b"b"), (12, b"\x32")]
    assert msg.content_format == ContentFormat.JSON
    assert msg.payload == b"{}"
    assert msg.encode() == data


@pytest.mark.parametrize(
    ("number", "header"),
    [
        (12, b"\xc0"),
        (13, b"\xd0\x00"),
        (268, b"\xd0\xff"),
        (269, b"\xe0\x00\x00"),
        (65535, b"\xe0\xfe\xf2"),
    ],
)
def test_extended_delta_boundaries(number: int, header: bytes) -> None:
    data = b"\x50\x45\x00\x01" + header
    msg = Message(Type.NON, Code.CONTENT, 1, options=[(number, b"")])
    assert msg.encode() == data
    assert decode(data).options == [(number, b"")]


@pytest.mark.parametrize(
    ("length", "header"),
    [
        (12, b"\x1c"),
        (13, b"\x1d\x00"),
        (268, b"\x1d\xff"),
        (269, b"\x1e\x00\x00"),
        (1000, b"\x1e\x02\xdb"),
    ],
)
def test_extended_length_boundaries(length: int, header: bytes) -> None:
    value = bytes(range(256)) * 4
    value = value[:length]
    data = b"\x50\x45\x00\x01" + header + value
    msg = Message(Type.NON, Code.CONTENT, 1, options=[(1, value)])
    assert msg.encode() == data
    assert decode(data).options == [(1, value)]


def test_extended_delta_and_length_together() -> None:
    value = b"x" * 300
    data = b"\x50\x45\x00\x01" + b"\xee\x00\x10\x00\x1f" + value + b"\xff!"
    msg = decode(data)
    assert msg.options == [(269 + 16, value)]
    assert msg.payload == b"!"
    assert msg.encode() == data


# -- malformations ------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "shorter than the 4-byte header"),
        (b"\x40\x01\x00", "shorter than the 4-byte header"),
        (b"\x00\x01\x00\x01", "version must be 1, not 0"),
        (b"\x80\x01\x00\x01", "version must be 1, not 2"),
        (b"\xc0\x01\x00\x01", "version must be 1, not 3"),
        (b"\x49\x01\x00\x01" + b"x" * 9, r"token length 9 is reserved \(TKL 9-15\)"),
        (b"\x4f\x01\x00\x01" + b"x" * 15, r"token length 15 is reserved"),
        (b"\x44\x01\x00\x01abc", "truncated token"),
        (b"\x48\x01\x00\x01", "truncated token"),
        (b"\x40\x01\x00\x01\xd0", "missing 1-byte extended delta"),
        (b"\x40\x01\x00\x01\xe0\x01", "missing 2-byte extended delta"),
        (b"\x40\x01\x00\x01\x0d", "missing 1-byte extended length"),
        (b"\x40\x01\x00\x01\x0e\x00", "missing 2-byte extended length"),
        (b"\x40\x01\x00\x01\xb3ab", r"option 11 value of 3 bytes runs past the end"),
        (b"\x40\x01\x00\x01\x0d\x05abc", "runs past the end"),
        (b"\x40\x01\x00\x01\xf0", "option delta nibble 15 is reserved"),
        (b"\x40\x01\x00\x01\xf1a", "option delta nibble 15 is reserved"),
        (b"\x40\x01\x00\x01\x0f", "option length nibble 15 is reserved"),
        (b"\x40\x01\x00\x01\xb1a\xff", "payload marker 0xFF followed by no payload"),
        (b"\x40\x01\x00\x01\xff", "payload marker 0xFF followed by no payload"),
        (b"\x41\x00\x00\x01\x01", "empty message must be exactly 4 bytes"),
        (b"\x40\x00\x00\x01\xb1a", "empty message must be exactly 4 bytes"),
        (b"\x60\x00\x00\x01\xffhi", "empty message must be exactly 4 bytes"),
        (b"\x40\x01\x00\x01\xe0\xff\xff", "option number 65804 exceeds 65535"),
        (b"\x40\x01\x00\x01\xe0\xfe\xf2\xd0\x00", "option number 65548 exceeds 65535"),
    ],
)
def test_malformed(data: bytes, match: str) -> None:
    with pytest.raises(MessageFormatError, match=match) as info:
        decode(data)
    assert isinstance(info.value, CoapError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize("code", [0x20, 0x3F, 0xC0, 0xE5, 0xFF])
def test_reserved_code_classes_decode(code: int) -> None:
    msg = decode(bytes([0x40, code, 0, 7]))
    assert int(msg.code) == code
    assert msg.code.dotted == f"{code >> 5}.{code & 31:02d}"


def test_decode_accepts_bytearray_and_memoryview() -> None:
    for data in (bytearray(GET_TEMPERATURE), memoryview(GET_TEMPERATURE)):
        msg = decode(data)
        assert type(msg.token) is bytes and type(msg.options[0][1]) is bytes
        assert msg.encode() == GET_TEMPERATURE


# -- bad options --------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "bad"),
    [
        ((12, b"\x00\x00\x32"), (12,)),  # Content-Format: uint 0-2
        ((5, b"\x00"), (5,)),  # If-None-Match: empty
        ((4, b"123456789"), (4,)),  # ETag: opaque 1-8
        ((4, b""), (4,)),
        ((3, b""), (3,)),  # Uri-Host: string 1-255
        ((16, b""), (16,)),  # Hop-Limit: uint 1
        ((252, b"x" * 41), (252,)),  # Echo: opaque 1-40
        ((23, b"\x01\x02\x03\x04"), (23,)),  # Block2: uint 0-3
        ((11, b"x" * 256), (11,)),  # Uri-Path: string 0-255
        ((12, b"\x00\x32"), ()),  # leading zero but within bounds: fine
        ((4, b"12345678"), ()),
        ((2001, b"x" * 300), ()),  # unknown options are never marked
        ((2000, b""), ()),
    ],
)
def test_bad_option_marking(option: tuple[int, bytes], bad: tuple[int, ...]) -> None:
    msg = Message(Type.CON, Code.GET, 1, options=[(11, b"ok"), option])
    msg.options.sort(key=lambda o: o[0])
    back = decode(msg.encode())
    assert back.bad_options == bad
    assert option in back.options  # kept for the upper layer to judge
    assert bad_option_numbers(back.options) == bad


# -- encode -------------------------------------------------------------------


def test_encode_sorts_stably() -> None:
    msg = Message(Type.CON, Code.GET, 2, options=[(11, b"a"), (3, b"h"), (11, b"b"), (15, b"q")])
    data = msg.encode()
    assert decode(data).options == [(3, b"h"), (11, b"a"), (11, b"b"), (15, b"q")]
    assert msg.options == [(11, b"a"), (3, b"h"), (11, b"b"), (15, b"q")]  # not mutated


@pytest.mark.parametrize(
    ("msg", "match"),
    [
        (Message(Type.CON, Code.GET, 1, b"123456789"), "token longer than 8 bytes"),
        (Message(Type.CON, Code.GET, 70000), "out of range"),
        (Message(Type.CON, Code.GET, -1), "out of range"),
        (Message(Type.CON, 256, 1), "out of range"),
        (Message(4, Code.GET, 1), "message type out of range"),
        (Message(Type.CON, Code.GET, 1, options=[(65536, b"")]), "exceeds 65535"),
        (Message(Type.CON, Code.GET, 1, options=[(11, b""), (-1, b"")]), "negative"),
        (Message(Type.CON, Code.EMPTY, 1, b"t"), "empty message must be exactly 4 bytes"),
        (Message(Type.CON, Code.EMPTY, 1, payload=b"p"), "empty message must be exactly"),
        (Message(Type.CON, Code.EMPTY, 1, options=[(1, b"")]), "empty message must be exactly"),
    ],
)
def test_encode_rejects(msg: Message, match: str) -> None:
    with pytest.raises(MessageFormatError, match=match):
        encode(msg)


def test_module_and_method_forms_agree() -> None:
    msg = Message(Type.NON, Code.POST, 9, b"t", [(11, b"x")], b"body")
    assert encode(msg) == msg.encode()
    assert decode(msg.encode()) == Message.decode(msg.encode())


# -- accessors ----------------------------------------------------------------


def test_accessors() -> None:
    msg = Message(Type.CON, Code.GET, 1, b"\x01")
    assert msg.uri_path == [] and msg.content_format is None and msg.block2 is None
    assert msg.max_age is None and msg.observe is None and msg.etag is None
    msg.add_option(OptionNumber.URI_PATH, "sensors")
    msg.add_option(OptionNumber.URI_PATH, "température")
    msg.add_option(OptionNumber.URI_QUERY, "rt=temp")
    msg.add_option(OptionNumber.OBSERVE, 0)
    msg.add_option(OptionNumber.ACCEPT, ContentFormat.CBOR)
    msg.add_option(OptionNumber.BLOCK2, Block(3, False, 6))
    msg.add_option(OptionNumber.ETAG, bytearray(b"\x01\x02"))
    assert msg.uri_path == ["sensors", "température"]
    assert msg.uri_query == ["rt=temp"]
    assert msg.opt(6) == b"" and msg.observe == 0
    assert msg.accept == 60
    assert msg.block2 == Block(3, False, 6) and msg.block1 is None
    assert msg.etag == b"\x01\x02"
    assert msg.opts(11) == [b"sensors", "température".encode()]
    assert msg.uint_opt(17) == 60 and msg.uint_opt(99) is None
    msg.set_option(11, "other")
    assert msg.uri_path == ["other"]
    msg.remove_option(15)
    assert msg.uri_query == [] and msg.opt(15) is None
    msg.content_format = 50
    msg.content_format = 0
    assert msg.opts(12) == [b""] and msg.content_format == 0
    msg.content_format = None
    assert msg.content_format is None
    msg.uri_path = ["a", "b"]
    assert msg.uri_path == ["a", "b"]
    msg.max_age = 3600
    msg.size1, msg.size2 = 1000, 70000
    msg.block1 = Block.from_size(2, True, 256)
    msg.if_none_match = True
    assert (msg.max_age, msg.size1, msg.size2) == (3600, 1000, 70000)
    assert msg.block1 == Block(2, True, 4) and msg.if_none_match
    back = decode(msg.encode())
    assert back == msg and back.bad_options == ()
    assert back.block1 == Block(2, True, 4)


def test_add_option_rejects_other_types() -> None:
    with pytest.raises(TypeError):
        Message().add_option(11, 1.5)  # type: ignore[arg-type]


def test_invalid_utf8_string_option() -> None:
    msg = decode(b"\x40\x01\x00\x01\xb2\xff\xfe")
    with pytest.raises(MessageFormatError, match="not valid UTF-8"):
        _ = msg.uri_path


def test_block_szx7_in_message() -> None:
    msg = Message(Type.CON, Code.GET, 1, options=[(23, b"\x0f")])
    with pytest.raises(MessageFormatError, match="SZX 7 is reserved"):
        _ = msg.block2


def test_repr() -> None:
    msg = Message(Type.CON, Code.GET, 0x1234, b"\x0a\x0b", [(11, b"hello")])
    assert repr(msg) == "<Message CON GET mid=0x1234 token=0a0b opts=[11:'hello'] payload=0B>"
    resp = Message(Type.ACK, Code.CONTENT, 1, options=[(12, b"\x32"), (4, b"\x01")], payload=b"x")
    assert repr(resp) == (
        "<Message ACK 2.05 Content mid=0x0001 token= opts=[12:50, 4:0x01] payload=1B>"
    )
    assert "bad=[12]" in repr(decode(b"\x40\x01\x00\x01\xc3\x00\x00\x01"))


def test_equality() -> None:
    a = Message(Type.CON, Code.GET, 1, b"t", [(11, b"a"), (3, b"h")])
    b = Message(Type.CON, Code.GET, 1, b"t", [(3, b"h"), (11, b"a")])
    assert a == b
    assert a != Message(Type.CON, Code.GET, 1, b"t", [(3, b"h")])
    assert a != Message(Type.NON, Code.GET, 1, b"t", [(11, b"a"), (3, b"h")])
    assert Message(options=[(11, b"a"), (11, b"b")]) != Message(options=[(11, b"b"), (11, b"a")])
    assert a != "not a message"


# -- options module -----------------------------------------------------------


def test_option_number_bits() -> None:
    assert OptionNumber.URI_PATH.critical and OptionNumber.URI_PATH.unsafe
    assert not OptionNumber.CONTENT_FORMAT.critical
    assert not OptionNumber.ETAG.unsafe
    assert OptionNumber.SIZE1.no_cache_key and not OptionNumber.ETAG.no_cache_key
    assert is_critical(2049) and not is_critical(2048)
    assert is_unsafe(2050) and not is_unsafe(2048)
    assert is_no_cache_key(60) and is_no_cache_key(28) and not is_no_cache_key(4)


def test_option_specs_shape() -> None:
    assert set(OPTION_SPECS) == {int(n) for n in OptionNumber}
    assert OPTION_SPECS[OptionNumber.IF_NONE_MATCH] == (OptionFormat.EMPTY, 0, 0, False)
    assert OPTION_SPECS[OptionNumber.URI_PATH] == (OptionFormat.STRING, 0, 255, True)
    assert OPTION_SPECS[OptionNumber.PROXY_URI] == (OptionFormat.STRING, 1, 1034, False)
    assert OPTION_SPECS[OptionNumber.HOP_LIMIT] == (OptionFormat.UINT, 1, 1, False)
    assert OPTION_SPECS[OptionNumber.REQUEST_TAG] == (OptionFormat.OPAQUE, 0, 8, True)


def test_uint_codec() -> None:
    assert encode_uint(0) == b""
    assert encode_uint(255) == b"\xff"
    assert encode_uint(256) == b"\x01\x00"
    assert decode_uint(b"") == 0 and decode_uint(b"\x00\x01") == 1
    with pytest.raises(ValueError):
        encode_uint(-1)


def test_content_format_str() -> None:
    assert str(ContentFormat.TEXT_PLAIN) == "text/plain;charset=utf-8"
    assert str(ContentFormat.SENML_CBOR) == "application/senml+cbor"
    assert ContentFormat.from_media_type("Application/JSON") is ContentFormat.JSON
    assert ContentFormat.from_media_type("text/plain; charset=utf-8") is ContentFormat.TEXT_PLAIN
    with pytest.raises(ValueError):
        ContentFormat.from_media_type("image/png")


def test_block_values() -> None:
    b = Block(5, True, 6)
    assert b.size == 1024 and b.offset == 5 * 1024
    assert b.encode() == 5 << 4 | 8 | 6
    assert Block.decode(0x5E) == b
    assert Block.from_bytes(b.to_bytes()) == b
    assert Block(0, False, 0).to_bytes() == b""
    assert Block.from_size(0, False, 16) == Block(0, False, 0)
    with pytest.raises(MessageFormatError, match="SZX 7 is reserved"):
        Block.decode(0x0F)
    with pytest.raises(MessageFormatError):
        Block.decode(1 << 24)
    with pytest.raises(ValueError):
        Block(1 << 20, False, 0).encode()
    with pytest.raises(ValueError):
        Block(0, False, 7).encode()


@pytest.mark.parametrize("size", [0, 8, 15, 17, 48, 2048])
def test_size_to_szx_rejects(size: int) -> None:
    with pytest.raises(ValueError):
        size_to_szx(size)


def test_size_to_szx() -> None:
    assert [size_to_szx(1 << k) for k in range(4, 11)] == list(range(7))


@given(st.integers(0, (1 << 20) - 1), st.booleans(), st.integers(0, 6))
def test_block_round_trip(num: int, more: bool, szx: int) -> None:
    block = Block(num, more, szx)
    assert Block.decode(block.encode()) == block
    assert Block.from_bytes(block.to_bytes()) == block
    assert len(block.to_bytes()) <= 3
    assert block.offset == num * block.size


# -- properties ---------------------------------------------------------------

# Values of every length 0..300 (hypothesis favours short binaries otherwise, and
# the 13 / 269 extended-length boundaries need long ones).
option_values = st.one_of(
    st.binary(max_size=16),
    st.integers(0, 300).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
)
option_lists = st.lists(st.tuples(st.integers(0, 65000), option_values), max_size=6).map(
    lambda opts: sorted(opts, key=lambda o: o[0])
)


@st.composite
def messages(draw: st.DrawFn) -> Message:
    mtype = draw(st.sampled_from(list(Type)))
    code = draw(st.integers(0, 255))
    mid = draw(st.integers(0, 0xFFFF))
    if code == 0:
        return Message(mtype, Code(code), mid)
    token = draw(st.binary(max_size=8))
    options = draw(option_lists)
    payload = draw(st.binary(max_size=200))
    return Message(mtype, Code(code), mid, token, options, payload)


@given(messages())
def test_round_trip(msg: Message) -> None:
    data = encode(msg)
    back = decode(data)
    assert back == msg
    assert back.options == msg.options  # already sorted: identical order
    assert encode(back) == data
    assert back.bad_options == bad_option_numbers(msg.options)


@given(messages(), st.randoms())
def test_encode_sorts_any_order(msg: Message, rnd) -> None:  # noqa: ANN001 - hypothesis Random
    shuffled = list(msg.options)
    rnd.shuffle(shuffled)
    stable = sorted(shuffled, key=lambda o: o[0])
    unordered = Message(msg.mtype, msg.code, msg.mid, msg.token, shuffled, msg.payload)
    ordered = Message(msg.mtype, msg.code, msg.mid, msg.token, stable, msg.payload)
    assert encode(unordered) == encode(ordered)
    assert decode(encode(unordered)).options == stable


@given(st.binary(max_size=64))
def test_decode_never_raises_anything_else(data: bytes) -> None:
    try:
        msg = decode(data)
    except MessageFormatError:
        return
    assert encode(msg) == data


@given(st.binary(min_size=4, max_size=64))
def test_decode_mutated_valid_header(tail: bytes) -> None:
    data = b"\x42\x45\x00\x01" + tail
    try:
        msg = decode(data)
    except MessageFormatError:
        return
    assert encode(msg) == data
