"""Option numbers, option value formats, content formats and Block values (layer 1: codec).

Holds what the codec and upper layers need to know about CoAP options without
interpreting a message:

- :class:`OptionNumber` and the number-bit predicates :func:`is_critical`,
  :func:`is_unsafe`, :func:`is_no_cache_key` (RFC 7252 §5.4.6);
- :data:`OPTION_SPECS`, the value format and length bounds of every known
  option (RFC 7252 table 4, RFC 7641, 7959, 7967, 8613, 8768, 9175, 9177,
  9668), which the decoder uses to mark out-of-bounds values (§5.4.3);
- the uint value encoding :func:`encode_uint` / :func:`decode_uint` (§3.2);
- :class:`ContentFormat` (§12.3 registry, a useful subset);
- :class:`Block`, the Block1/Block2 option value (RFC 7959 §2.2).

Option values travel as raw ``bytes``; nothing here is used per option on the
decode hot path except the bounds table :data:`OPTION_BOUNDS`.
"""

from __future__ import annotations

from enum import Enum, IntEnum
from typing import NamedTuple

from .errors import MessageFormatError

__all__ = [
    "OPTION_BOUNDS",
    "OPTION_SPECS",
    "Block",
    "ContentFormat",
    "OptionFormat",
    "OptionNumber",
    "decode_uint",
    "encode_uint",
    "is_critical",
    "is_no_cache_key",
    "is_unsafe",
    "size_to_szx",
]


def is_critical(number: int) -> bool:
    """True if a receiver that does not understand option ``number`` must reject the message."""
    return number & 1 == 1


def is_unsafe(number: int) -> bool:
    """True if a proxy that does not understand option ``number`` must not forward it."""
    return number & 2 == 2


def is_no_cache_key(number: int) -> bool:
    """True if option ``number`` is not part of the cache key (only meaningful if safe)."""
    return number & 0x1E == 0x1C


class OptionNumber(IntEnum):
    """Registered option numbers (RFC 7252 §12.2 and later RFCs)."""

    IF_MATCH = 1
    URI_HOST = 3
    ETAG = 4
    IF_NONE_MATCH = 5
    OBSERVE = 6  # RFC 7641
    URI_PORT = 7
    LOCATION_PATH = 8
    OSCORE = 9  # RFC 8613
    URI_PATH = 11
    CONTENT_FORMAT = 12
    MAX_AGE = 14
    URI_QUERY = 15
    HOP_LIMIT = 16  # RFC 8768
    ACCEPT = 17
    Q_BLOCK1 = 19  # RFC 9177
    LOCATION_QUERY = 20
    EDHOC = 21  # RFC 9668
    BLOCK2 = 23  # RFC 7959
    BLOCK1 = 27  # RFC 7959
    SIZE2 = 28  # RFC 7959
    Q_BLOCK2 = 31  # RFC 9177
    PROXY_URI = 35
    PROXY_SCHEME = 39
    SIZE1 = 60
    ECHO = 252  # RFC 9175
    NO_RESPONSE = 258  # RFC 7967
    REQUEST_TAG = 292  # RFC 9175

    @property
    def critical(self) -> bool:
        """See :func:`is_critical`."""
        return self & 1 == 1

    @property
    def unsafe(self) -> bool:
        """See :func:`is_unsafe`."""
        return self & 2 == 2

    @property
    def no_cache_key(self) -> bool:
        """See :func:`is_no_cache_key`."""
        return self & 0x1E == 0x1C


class OptionFormat(Enum):
    """How an option value is to be interpreted (RFC 7252 §3.2)."""

    EMPTY = "empty"  #: zero-length value; presence is the information
    OPAQUE = "opaque"  #: an uninterpreted byte sequence
    UINT = "uint"  #: a big-endian unsigned integer, minimal length (0 is b"")
    STRING = "string"  #: UTF-8 (Net-Unicode) text


_E, _O, _U, _S = OptionFormat.EMPTY, OptionFormat.OPAQUE, OptionFormat.UINT, OptionFormat.STRING

#: ``number -> (format, min_len, max_len, repeatable)`` for every known option.
OPTION_SPECS: dict[int, tuple[OptionFormat, int, int, bool]] = {
    OptionNumber.IF_MATCH: (_O, 0, 8, True),
    OptionNumber.URI_HOST: (_S, 1, 255, False),
    OptionNumber.ETAG: (_O, 1, 8, True),
    OptionNumber.IF_NONE_MATCH: (_E, 0, 0, False),
    OptionNumber.OBSERVE: (_U, 0, 3, False),
    OptionNumber.URI_PORT: (_U, 0, 2, False),
    OptionNumber.LOCATION_PATH: (_S, 0, 255, True),
    OptionNumber.OSCORE: (_O, 0, 255, False),
    OptionNumber.URI_PATH: (_S, 0, 255, True),
    OptionNumber.CONTENT_FORMAT: (_U, 0, 2, False),
    OptionNumber.MAX_AGE: (_U, 0, 4, False),
    OptionNumber.URI_QUERY: (_S, 0, 255, True),
    OptionNumber.HOP_LIMIT: (_U, 1, 1, False),
    OptionNumber.ACCEPT: (_U, 0, 2, False),
    OptionNumber.Q_BLOCK1: (_U, 0, 3, False),
    OptionNumber.LOCATION_QUERY: (_S, 0, 255, True),
    OptionNumber.EDHOC: (_E, 0, 0, False),
    OptionNumber.BLOCK2: (_U, 0, 3, False),
    OptionNumber.BLOCK1: (_U, 0, 3, False),
    OptionNumber.SIZE2: (_U, 0, 4, False),
    OptionNumber.Q_BLOCK2: (_U, 0, 3, True),
    OptionNumber.PROXY_URI: (_S, 1, 1034, False),
    OptionNumber.PROXY_SCHEME: (_S, 1, 255, False),
    OptionNumber.SIZE1: (_U, 0, 4, False),
    OptionNumber.ECHO: (_O, 1, 40, False),
    OptionNumber.NO_RESPONSE: (_U, 0, 1, False),
    OptionNumber.REQUEST_TAG: (_O, 0, 8, True),
}

#: ``number -> (min_len, max_len)`` keyed by plain ``int``: the decoder's bounds check.
OPTION_BOUNDS: dict[int, tuple[int, int]] = {
    int(n): (spec[1], spec[2]) for n, spec in OPTION_SPECS.items()
}


_SMALL_UINTS = [b""] + [bytes((i,)) for i in range(1, 256)]


def encode_uint(value: int) -> bytes:
    """Encode a uint option value in the fewest bytes (``0 -> b""``); the one
    uint encoder of the codec (values below 256 come from a table)."""
    if value < 256:
        if value < 0:
            raise ValueError(f"uint option value must not be negative: {value}")
        return _SMALL_UINTS[value]
    return value.to_bytes((value.bit_length() + 7) >> 3, "big")


def decode_uint(data: bytes) -> int:
    """Decode a uint option value; leading zero bytes are accepted (RFC 7252 §3.2)."""
    return int.from_bytes(data, "big")


class ContentFormat(IntEnum):
    """Content-Format / Accept numbers (RFC 7252 §12.3 registry, a subset).

    ``str()`` gives the media type with parameters, e.g. ``"text/plain;charset=utf-8"``.
    """

    TEXT_PLAIN = 0
    LINK_FORMAT = 40
    XML = 41
    OCTET_STREAM = 42
    EXI = 47
    JSON = 50
    JSON_PATCH_JSON = 51
    MERGE_PATCH_JSON = 52
    CBOR = 60
    CWT = 61
    SENML_JSON = 110
    SENSML_JSON = 111
    SENML_CBOR = 112
    SENSML_CBOR = 113
    LWM2M_TLV = 11542
    LWM2M_JSON = 11543

    @property
    def media_type(self) -> str:
        """The media type string this number stands for."""
        return _MEDIA_TYPES[self]

    @classmethod
    def from_media_type(cls, media_type: str) -> ContentFormat:
        """Look a number up by media type (case and spaces around ``;`` ignored)."""
        key = ";".join(p.strip() for p in media_type.lower().split(";"))
        for number, text in _MEDIA_TYPES.items():
            if text == key:
                return cls(number)
        raise ValueError(f"no known Content-Format for {media_type!r}")

    def __str__(self) -> str:
        return _MEDIA_TYPES[self]


_MEDIA_TYPES: dict[int, str] = {
    0: "text/plain;charset=utf-8",
    40: "application/link-format",
    41: "application/xml",
    42: "application/octet-stream",
    47: "application/exi",
    50: "application/json",
    51: "application/json-patch+json",
    52: "application/merge-patch+json",
    60: "application/cbor",
    61: "application/cwt",
    110: "application/senml+json",
    111: "application/sensml+json",
    112: "application/senml+cbor",
    113: "application/sensml+cbor",
    11542: "application/vnd.oma.lwm2m+tlv",
    11543: "application/vnd.oma.lwm2m+json",
}

#: Largest block number a 3-byte Block option can carry.
MAX_BLOCK_NUM = (1 << 20) - 1


def size_to_szx(size: int) -> int:
    """Map a block size (16, 32, ... 1024) to its SZX exponent (0..6)."""
    if size < 16 or size > 1024 or size & (size - 1):
        raise ValueError(f"block size must be a power of two from 16 to 1024, not {size}")
    return size.bit_length() - 5


class Block(NamedTuple):
    """A Block1/Block2 option value (RFC 7959 §2.2): block number, more flag, size exponent."""

    num: int
    more: bool
    szx: int

    @property
    def size(self) -> int:
        """Block size in bytes: ``2 ** (szx + 4)``."""
        return 1 << (self.szx + 4)

    @property
    def offset(self) -> int:
        """Byte offset of this block in the whole body: ``num * size``."""
        return self.num << (self.szx + 4)

    def encode(self) -> int:
        """The option's uint value; validates the fields."""
        if not 0 <= self.num <= MAX_BLOCK_NUM:
            raise ValueError(f"block number out of range 0..{MAX_BLOCK_NUM}: {self.num}")
        if not 0 <= self.szx <= 6:
            raise ValueError(f"block SZX out of range 0..6: {self.szx}")
        return self.num << 4 | (8 if self.more else 0) | self.szx

    def to_bytes(self) -> bytes:
        """The option's wire value (minimal uint)."""
        return encode_uint(self.encode())

    @classmethod
    def decode(cls, value: int) -> Block:
        """Parse the uint value; SZX 7 (reserved, BERT only on reliable transports) is an error."""
        if not 0 <= value <= 0xFFFFFF:
            raise MessageFormatError(f"block option value longer than 3 bytes: {value}")
        szx = value & 7
        if szx == 7:
            raise MessageFormatError("block option SZX 7 is reserved")
        return cls(value >> 4, bool(value & 8), szx)

    @classmethod
    def from_bytes(cls, data: bytes) -> Block:
        """Parse the option's wire value (see :meth:`decode`)."""
        return cls.decode(int.from_bytes(data, "big"))

    @classmethod
    def from_size(cls, num: int, more: bool, size: int) -> Block:
        """Build from a byte size instead of an exponent: ``Block.from_size(0, True, 1024)``."""
        return cls(num, more, size_to_szx(size))


#: short Content-Format names people type, beside the registered media types
CONTENT_FORMAT_ALIASES: dict[str, ContentFormat] = {
    "text": ContentFormat.TEXT_PLAIN,
    "text/plain": ContentFormat.TEXT_PLAIN,
    "link": ContentFormat.LINK_FORMAT,
    "link-format": ContentFormat.LINK_FORMAT,
    "xml": ContentFormat.XML,
    "octet": ContentFormat.OCTET_STREAM,
    "octet-stream": ContentFormat.OCTET_STREAM,
    "binary": ContentFormat.OCTET_STREAM,
    "exi": ContentFormat.EXI,
    "json": ContentFormat.JSON,
    "cbor": ContentFormat.CBOR,
    "senml+json": ContentFormat.SENML_JSON,
    "senml+cbor": ContentFormat.SENML_CBOR,
    "lwm2m+tlv": ContentFormat.LWM2M_TLV,
    "lwm2m+json": ContentFormat.LWM2M_JSON,
}


def content_format_number(value: int | str) -> int:
    """A Content-Format (or Accept) number from a number, a
    :class:`ContentFormat`, a media type (``"application/json"``,
    ``"text/plain;charset=utf-8"``) or a short name (``"json"``, ``"cbor"``,
    ``"text"``, ``"link"``, ``"octet"``); ValueError with examples otherwise."""
    if isinstance(value, int):
        if not 0 <= value <= 0xFFFF:
            raise ValueError(f"a Content-Format number is 0..65535, not {value}")
        return int(value)
    if not isinstance(value, str):
        raise TypeError(f"a content format is a number or a name, not {type(value).__name__}")
    text = value.strip()
    if text.isdigit():
        return content_format_number(int(text))
    alias = CONTENT_FORMAT_ALIASES.get(text.lower())
    if alias is not None:
        return int(alias)
    try:
        return int(ContentFormat.from_media_type(text))
    except ValueError:
        raise ValueError(
            f"unknown content format {value!r}: give a number or a name such as "
            "application/json, text/plain;charset=utf-8, application/cbor, "
            "application/link-format (or json, text, cbor, link)"
        ) from None


class OptionList(list):
    """A message's options: the raw ``[(number, value), ...]`` list, also
    readable by name — ``options.etag``, ``options.max_age``,
    ``options.content_format``, ``options.get(number)`` (the first value's
    bytes), ``options.get_all(number)``."""

    __slots__ = ()

    def get(self, number: int, default: bytes | None = None) -> bytes | None:
        """The value of the first option ``number`` (its bytes), or ``default``."""
        for n, v in self:
            if n == number:
                return v
        return default

    def get_all(self, number: int) -> list[bytes]:
        """The values of every option ``number``, in order."""
        return [v for n, v in self if n == number]

    def _uint(self, number: int) -> int | None:
        v = self.get(number)
        return None if v is None else decode_uint(v)

    def _strs(self, number: int) -> list[str]:
        return [v.decode("utf-8", "replace") for v in self.get_all(number)]

    @property
    def etag(self) -> bytes | None:
        return self.get(OptionNumber.ETAG)

    @property
    def etags(self) -> list[bytes]:
        return self.get_all(OptionNumber.ETAG)

    @property
    def max_age(self) -> int | None:
        return self._uint(OptionNumber.MAX_AGE)

    @property
    def content_format(self) -> int | None:
        return self._uint(OptionNumber.CONTENT_FORMAT)

    @property
    def accept(self) -> int | None:
        return self._uint(OptionNumber.ACCEPT)

    @property
    def observe(self) -> int | None:
        return self._uint(OptionNumber.OBSERVE)

    @property
    def size1(self) -> int | None:
        return self._uint(OptionNumber.SIZE1)

    @property
    def size2(self) -> int | None:
        return self._uint(OptionNumber.SIZE2)

    @property
    def block1(self) -> Block | None:
        v = self.get(OptionNumber.BLOCK1)
        return None if v is None else Block.from_bytes(v)

    @property
    def block2(self) -> Block | None:
        v = self.get(OptionNumber.BLOCK2)
        return None if v is None else Block.from_bytes(v)

    @property
    def uri_path(self) -> list[str]:
        return self._strs(OptionNumber.URI_PATH)

    @property
    def uri_query(self) -> list[str]:
        return self._strs(OptionNumber.URI_QUERY)

    @property
    def location_path(self) -> list[str]:
        return self._strs(OptionNumber.LOCATION_PATH)

    @property
    def location_query(self) -> list[str]:
        return self._strs(OptionNumber.LOCATION_QUERY)

    @property
    def echo(self) -> bytes | None:
        return self.get(OptionNumber.ECHO)
