"""Tests for greencoap.codes: Type and Code values, text forms, properties, unknown codes."""

from __future__ import annotations

import pytest

from greencoap.codes import CODES, TYPES, Code, Type


def test_type_values() -> None:
    assert [int(t) for t in (Type.CON, Type.NON, Type.ACK, Type.RST)] == [0, 1, 2, 3]
    assert str(Type.ACK) == "ACK"
    assert TYPES == (Type.CON, Type.NON, Type.ACK, Type.RST)


@pytest.mark.parametrize(
    ("code", "value"),
    [
        (Code.EMPTY, 0),
        (Code.GET, 1),
        (Code.IPATCH, 7),
        (Code.CREATED, 0x41),
        (Code.CONTENT, 0x45),
        (Code.CONTINUE, 0x5F),
        (Code.BAD_REQUEST, 0x80),
        (Code.REQUEST_ENTITY_INCOMPLETE, 0x88),
        (Code.CONFLICT, 0x89),
        (Code.UNPROCESSABLE_ENTITY, 0x96),
        (Code.TOO_MANY_REQUESTS, 0x9D),
        (Code.INTERNAL_SERVER_ERROR, 0xA0),
        (Code.PROXYING_NOT_SUPPORTED, 0xA5),
        (Code.HOP_LIMIT_REACHED, 0xA8),
    ],
)
def test_code_values(code: Code, value: int) -> None:
    assert int(code) == value


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (Code.CONTENT, "2.05 Content"),
        (Code.GET, "GET"),
        (Code.FETCH, "FETCH"),
        (Code.IPATCH, "iPATCH"),
        (Code.EMPTY, "0.00 Empty"),
        (Code.NOT_FOUND, "4.04 Not Found"),
        (Code.REQUEST_ENTITY_TOO_LARGE, "4.13 Request Entity Too Large"),
        (Code.CONTINUE, "2.31 Continue"),
        (Code.HOP_LIMIT_REACHED, "5.08 Hop Limit Reached"),
    ],
)
def test_code_str(code: Code, text: str) -> None:
    assert str(code) == text
    assert f"{code}" == text


def test_code_format_with_spec_is_numeric() -> None:
    assert f"{Code.CONTENT:d}" == "69"
    assert f"{Code.CONTENT:#x}" == "0x45"


def test_code_properties() -> None:
    c = Code.CONTENT
    assert (c.code_class, c.detail, c.dotted) == (2, 5, "2.05")
    assert c.is_response and c.is_success and not c.is_error and not c.is_request
    assert Code.GET.is_request and not Code.GET.is_response and not Code.GET.is_empty
    assert Code.NOT_FOUND.is_error and Code.BAD_GATEWAY.is_error
    assert not Code.NOT_FOUND.is_success
    assert Code.EMPTY.is_empty and not Code.EMPTY.is_request and not Code.EMPTY.is_response
    assert Code.GATEWAY_TIMEOUT.dotted == "5.04"


def test_unknown_code_is_pseudo_member() -> None:
    c = Code(0x46)
    assert isinstance(c, Code)
    assert int(c) == 0x46
    assert str(c) == "2.06"
    assert c.is_success and c.is_response and c.detail == 6
    assert Code(0x46) is c
    assert c not in list(Code)  # not added to the member list
    assert str(Code(0x20)) == "1.00"
    assert not Code(0x20).is_request and not Code(0x20).is_response
    assert str(Code(8)) == "0.08"  # unknown method
    assert Code(8).is_request
    assert str(Code(0xE1)) == "7.01"


@pytest.mark.parametrize("value", [-1, 256, 1000])
def test_code_out_of_range(value: int) -> None:
    with pytest.raises(ValueError):
        Code(value)


def test_codes_table() -> None:
    assert len(CODES) == 256
    for b in range(256):
        assert CODES[b] is Code(b)
        assert CODES[b].dotted == f"{b >> 5}.{b & 31:02d}"


def test_from_dotted() -> None:
    assert Code.from_dotted("2.05") is Code.CONTENT
    assert Code.from_dotted("0.01") is Code.GET
    assert Code.from_dotted("4.4") is Code.NOT_FOUND
    assert Code.from_dotted("2.06") is Code(0x46)


@pytest.mark.parametrize("text", ["", "2", "2.", ".05", "8.00", "2.32", "x.05", "2.005", "22.05"])
def test_from_dotted_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        Code.from_dotted(text)


def test_repr_is_readable() -> None:
    assert repr(Code.CONTENT) == "<Code.CONTENT: 2.05>"
