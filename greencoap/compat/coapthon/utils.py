"""CoAPthon3's ``coapthon.utils``: URI splitting, tokens, Block values, the
resource tree."""

from __future__ import annotations

import binascii
import os
from typing import Any

__all__ = [
    "InvalidResponseCode",
    "Tree",
    "byte_len",
    "check_code",
    "check_nocachekey",
    "generate_random_token",
    "is_uri_option",
    "parse_blockwise",
    "parse_uri",
    "str_append_hash",
]


def str_append_hash(*args: Any) -> int:
    """A hash of the arguments' lower-case text (CoAPthon3's cache key helper)."""
    out = ""
    for a in args:
        if isinstance(a, (str, int)):
            out += str(a).lower()
        elif isinstance(a, bytes):
            out += binascii.hexlify(a).decode("utf-8")
    return hash(out)


def check_nocachekey(option: Any) -> bool:
    """True for a NoCacheKey option or ETag."""
    return ((option.number & 0x1E) == 0x1C) | (option.number == 4)


class InvalidResponseCode(Exception):
    """A response code outside the registered ones."""

    def __init__(self, code: int = 0) -> None:
        super().__init__(code)
        self.inv_code = code


def check_code(code: int) -> None:
    """Raise :class:`InvalidResponseCode` for a code RFC 7252 does not define."""
    if not (
        65 <= code <= 69
        or 128 <= code <= 134
        or code in (95, 136, 137, 140, 141, 143, 157)
        or 160 <= code <= 165
    ):
        raise InvalidResponseCode(code)


def is_uri_option(number: int) -> bool:
    """True for Uri-Host, Uri-Port, Uri-Path and Uri-Query.

    (CoAPthon3's version compares with ``|`` precedence wrong and is always
    False.)"""
    return number in (3, 7, 11, 15)


def generate_random_token(size: int) -> bytes:
    """``size`` random bytes."""
    return os.urandom(size)


def parse_blockwise(value: int) -> tuple[int, int, int]:
    """A Block1/Block2 option value → ``(num, more, size)``."""
    value = int(value or 0)
    return value >> 4, (value >> 3) & 1, 2 ** ((value & 7) + 4)


def byte_len(int_type: int) -> int:
    """Bytes needed to encode the unsigned int ``int_type``."""
    return (int(int_type).bit_length() + 7) // 8


def parse_uri(uri: str) -> tuple[str, int, str]:
    """``coap://host:port/path`` → ``(host, port, path)`` (IPv6 in brackets)."""
    rest = uri.split("://", 1)[1]
    hostport, _, path = rest.partition("/")
    if hostport.startswith("["):
        host, _, tail = hostport[1:].partition("]")
        port = int(tail[1:]) if tail.startswith(":") else 5683
    else:
        host, _, port_text = hostport.partition(":")
        port = int(port_text) if port_text else 5683
    return str(host), port, path


class Tree:
    """The resource tree: path → resource."""

    def __init__(self) -> None:
        self.tree: dict[str, Any] = {}

    def dump(self) -> list[str]:
        """Every registered path, sorted."""
        return sorted(self.tree)

    def with_prefix(self, path: str) -> list[str]:
        """The registered paths that ``path`` starts with (KeyError: none)."""
        found = [k for k in self.tree if path.startswith(k)]
        if not found:
            raise KeyError(path)
        return found

    def with_prefix_resource(self, path: str) -> list[Any]:
        """The resources whose paths ``path`` starts with (KeyError: none)."""
        found = [v for k, v in self.tree.items() if path.startswith(k)]
        if not found:
            raise KeyError(path)
        return found

    def __getitem__(self, item: str) -> Any:
        return self.tree[item]

    def __setitem__(self, key: str, value: Any) -> None:
        self.tree[key] = value

    def __delitem__(self, key: str) -> None:
        del self.tree[key]

    def __contains__(self, item: object) -> bool:
        return item in self.tree
