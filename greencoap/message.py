"""The CoAP message and its wire encoding (layer 1: codec, pure data, no I/O).

Holds :class:`Message` and the strict datagram codec of RFC 7252 §3:
:func:`decode` turns a datagram into a :class:`Message` or raises
:class:`~greencoap.errors.MessageFormatError` naming the rule the datagram
breaks; :func:`encode` writes the one minimal encoding of a message.

Options are kept as a plain list of ``(number, raw value bytes)`` tuples.
Values are never interpreted by the codec, so ``encode(decode(x)) == x`` for
every valid datagram ``x``; the typed accessors (:meth:`Message.uint_opt`,
:attr:`Message.uri_path`, :attr:`Message.block2`, ...) interpret on demand.

This is the hot path of every endpoint, so decode builds no enums (it indexes
:data:`~greencoap.codes.CODES` / :data:`~greencoap.codes.TYPES`) and no
per-option objects beyond the tuple, and encode skips sorting when the options
are already in order.
"""

from __future__ import annotations

from operator import itemgetter
from struct import Struct
from struct import error as _StructError
from typing import TYPE_CHECKING

from ._ext import speedups
from .codes import CODES, TYPES, Code, Type
from .errors import MessageFormatError
from .options import (
    OPTION_BOUNDS,
    OPTION_SPECS,
    Block,
    OptionFormat,
    OptionNumber,
    encode_uint,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "CODEC",
    "DEFAULT_MAX_AGE",
    "Message",
    "bad_option_numbers",
    "decode",
    "decode_py",
    "encode",
    "encode_py",
]

#: Max-Age a response has when it carries no Max-Age option (RFC 7252 §5.10.5).
DEFAULT_MAX_AGE = 60

# option numbers as plain ints, for the accessors below
_URI_HOST, _URI_PORT, _PROXY_URI = (
    int(OptionNumber.URI_HOST),
    int(OptionNumber.URI_PORT),
    int(OptionNumber.PROXY_URI),
)
_CONTENT_FORMAT, _ACCEPT, _OBSERVE = (
    int(OptionNumber.CONTENT_FORMAT),
    int(OptionNumber.ACCEPT),
    int(OptionNumber.OBSERVE),
)
_BLOCK1, _BLOCK2, _SIZE1, _SIZE2 = (
    int(OptionNumber.BLOCK1),
    int(OptionNumber.BLOCK2),
    int(OptionNumber.SIZE1),
    int(OptionNumber.SIZE2),
)
_ETAG, _MAX_AGE, _IF_NONE_MATCH = (
    int(OptionNumber.ETAG),
    int(OptionNumber.MAX_AGE),
    int(OptionNumber.IF_NONE_MATCH),
)

_pack_header = Struct("!BBH").pack
_by_number = itemgetter(0)
_bounds_get = OPTION_BOUNDS.get
_from_bytes = int.from_bytes

OptionList = list[tuple[int, bytes]]


def _option_bytes(value: bytes | bytearray | memoryview | str | int | Block) -> bytes:
    """Convert a user-supplied option value to its wire bytes."""
    if type(value) is bytes:
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, Block):
        return value.to_bytes()
    if isinstance(value, int):
        return encode_uint(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"option value must be bytes, str, int or Block, not {type(value).__name__}")


def bad_option_numbers(options: Iterable[tuple[int, bytes]]) -> tuple[int, ...]:
    """Numbers of known options whose value length is outside :data:`OPTION_SPECS` bounds.

    This is what :func:`decode` stores in :attr:`Message.bad_options`; upper
    layers can use it on messages they built themselves.
    """
    bad = []
    for number, value in options:
        bounds = _bounds_get(number)
        if bounds is not None and not bounds[0] <= len(value) <= bounds[1]:
            bad.append(number)
    return tuple(bad)


class Message:
    """One CoAP message: header fields, token, options and payload.

    ``options`` is a ``list[tuple[int, bytes]]`` of (option number, raw value).
    After :func:`decode` it is in ascending number order (repeated options in
    wire order); code may append in any order, :meth:`encode` sorts (stably).

    ``bad_options`` is filled by :func:`decode` with the numbers of known
    options whose value length is outside the RFC bounds; those options stay in
    ``options`` and RFC 7252 §5.4.3 says to treat them as unrecognised
    (4.02 Bad Option if critical, ignore if elective).  Unknown numbers are not
    marked: check them with :func:`~greencoap.options.is_critical`.

    Equality compares type, code, mid, token, payload and the stably sorted
    options; ``bad_options`` is derived from the options and not compared.
    """

    __slots__ = ("mtype", "code", "mid", "token", "options", "payload", "bad_options")

    mtype: int
    code: int
    mid: int
    token: bytes
    options: OptionList
    payload: bytes
    bad_options: tuple[int, ...]

    def __init__(
        self,
        mtype: int = Type.CON,
        code: int = Code.EMPTY,
        mid: int = 0,
        token: bytes = b"",
        options: OptionList | None = None,
        payload: bytes = b"",
    ) -> None:
        self.mtype = mtype
        self.code = code
        self.mid = mid
        self.token = token
        self.options = [] if options is None else options
        self.payload = payload
        self.bad_options = ()

    # -- wire format -------------------------------------------------------

    def encode(self) -> bytes:
        """The datagram for this message (see :func:`encode`)."""
        return encode(self)

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> Message:
        """Parse a datagram (see :func:`decode`)."""
        return decode(data, cls)

    # -- option access -----------------------------------------------------

    # The accessors below read received options as RFC 7252 §5.4.3 says to:
    # an option listed in ``bad_options`` (its value length is out of
    # bounds) is treated as unrecognised, i.e. as absent here (a critical one
    # makes the whole request a 4.02 before any accessor is used).
    # ``options`` itself keeps everything, for ``encode(decode(x)) == x``.

    def opt(self, number: int) -> bytes | None:
        """Raw value of the first option ``number``, or None if absent."""
        if self.bad_options and number in self.bad_options:
            return None
        for n, value in self.options:
            if n == number:
                return value
        return None

    def opts(self, number: int) -> list[bytes]:
        """Raw values of every option ``number``, in order."""
        if self.bad_options and number in self.bad_options:
            return []
        return [value for n, value in self.options if n == number]

    def has_option(self, number: int) -> bool:
        """True if at least one option ``number`` is present."""
        if self.bad_options and number in self.bad_options:
            return False
        for n, _ in self.options:
            if n == number:
                return True
        return False

    def uint_opt(self, number: int) -> int | None:
        """First option ``number`` read as a uint, or None if absent."""
        if self.bad_options and number in self.bad_options:
            return None
        for n, value in self.options:
            if n == number:
                return _from_bytes(value, "big")
        return None

    def str_opts(self, number: int) -> list[str]:
        """Every option ``number`` decoded as UTF-8.

        Invalid UTF-8 raises :class:`MessageFormatError` (upper layers answer
        4.00 Bad Request to that).
        """
        if self.bad_options and number in self.bad_options:
            return []
        try:
            return [value.decode("utf-8") for n, value in self.options if n == number]
        except UnicodeDecodeError:
            raise MessageFormatError(f"option {number} is not valid UTF-8") from None

    def str_opt(self, number: int) -> str | None:
        """First option ``number`` decoded as UTF-8, or None (see :meth:`str_opts`)."""
        value = self.opt(number)
        if value is None:
            return None
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise MessageFormatError(f"option {number} is not valid UTF-8") from None

    def add_option(self, number: int, value: bytes | str | int | Block = b"") -> None:
        """Append option ``number``; str is UTF-8 encoded, int becomes a minimal uint."""
        self.options.append((number, _option_bytes(value)))

    def set_option(self, number: int, value: bytes | str | int | Block | None) -> None:
        """Replace every option ``number`` by one with ``value`` (None just removes)."""
        self.remove_option(number)
        if value is not None:
            self.options.append((number, _option_bytes(value)))

    def remove_option(self, number: int) -> None:
        """Remove every option ``number`` (in place; the list object is kept)."""
        options = self.options
        for n, _ in options:
            if n == number:
                options[:] = [o for o in options if o[0] != number]
                return

    def _set_str_list(self, number: int, values: Iterable[str]) -> None:
        self.remove_option(number)
        self.options.extend((number, v.encode("utf-8")) for v in values)

    # -- typed views (read: cheap scans of ``options``; write: set_option) --

    @property
    def uri_path(self) -> list[str]:
        """Uri-Path segments (empty list for the root resource)."""
        return self.str_opts(11)

    @uri_path.setter
    def uri_path(self, segments: Iterable[str]) -> None:
        self._set_str_list(11, segments)

    @property
    def uri_query(self) -> list[str]:
        """Uri-Query items, e.g. ``["rt=temp", "if=sensor"]``."""
        return self.str_opts(15)

    @uri_query.setter
    def uri_query(self, items: Iterable[str]) -> None:
        self._set_str_list(15, items)

    @property
    def location_path(self) -> list[str]:
        """Location-Path segments of a 2.01 Created response."""
        return self.str_opts(8)

    @location_path.setter
    def location_path(self, segments: Iterable[str]) -> None:
        self._set_str_list(8, segments)

    @property
    def location_query(self) -> list[str]:
        """Location-Query items of a 2.01 Created response."""
        return self.str_opts(20)

    @location_query.setter
    def location_query(self, items: Iterable[str]) -> None:
        self._set_str_list(20, items)

    @property
    def uri_host(self) -> str | None:
        """Uri-Host, or None if absent."""
        return self.str_opt(_URI_HOST)

    @uri_host.setter
    def uri_host(self, value: str | None) -> None:
        self.set_option(3, value)

    @property
    def uri_port(self) -> int | None:
        """Uri-Port, or None if absent."""
        return self.uint_opt(_URI_PORT)

    @uri_port.setter
    def uri_port(self, value: int | None) -> None:
        self.set_option(7, value)

    @property
    def proxy_uri(self) -> str | None:
        """Proxy-Uri, or None if absent."""
        return self.str_opt(_PROXY_URI)

    @proxy_uri.setter
    def proxy_uri(self, value: str | None) -> None:
        self.set_option(35, value)

    @property
    def content_format(self) -> int | None:
        """Content-Format number, or None if absent."""
        return self.uint_opt(_CONTENT_FORMAT)

    @content_format.setter
    def content_format(self, value: int | None) -> None:
        self.set_option(12, value)

    @property
    def accept(self) -> int | None:
        """Accept (wanted Content-Format), or None if absent."""
        return self.uint_opt(_ACCEPT)

    @accept.setter
    def accept(self, value: int | None) -> None:
        self.set_option(17, value)

    @property
    def observe(self) -> int | None:
        """Observe value (0 register / 1 deregister in requests, sequence in notifications)."""
        return self.uint_opt(_OBSERVE)

    @observe.setter
    def observe(self, value: int | None) -> None:
        self.set_option(6, value)

    @property
    def block1(self) -> Block | None:
        """Block1 value, or None; SZX 7 raises :class:`MessageFormatError`."""
        value = self.opt(_BLOCK1)
        return None if value is None else Block.decode(_from_bytes(value, "big"))

    @block1.setter
    def block1(self, value: Block | None) -> None:
        self.set_option(27, value)

    @property
    def block2(self) -> Block | None:
        """Block2 value, or None; SZX 7 raises :class:`MessageFormatError`."""
        value = self.opt(_BLOCK2)
        return None if value is None else Block.decode(_from_bytes(value, "big"))

    @block2.setter
    def block2(self, value: Block | None) -> None:
        self.set_option(23, value)

    @property
    def size1(self) -> int | None:
        """Size1 (request body size indication), or None if absent."""
        return self.uint_opt(_SIZE1)

    @size1.setter
    def size1(self, value: int | None) -> None:
        self.set_option(60, value)

    @property
    def size2(self) -> int | None:
        """Size2 (response body size indication), or None if absent."""
        return self.uint_opt(_SIZE2)

    @size2.setter
    def size2(self, value: int | None) -> None:
        self.set_option(28, value)

    @property
    def etag(self) -> bytes | None:
        """First ETag (the one a response carries), or None if absent."""
        return self.opt(_ETAG)

    @etag.setter
    def etag(self, value: bytes | None) -> None:
        self.set_option(4, value)

    @property
    def max_age(self) -> int | None:
        """Max-Age in seconds, or None if absent (then RFC 7252 means :data:`DEFAULT_MAX_AGE`)."""
        return self.uint_opt(_MAX_AGE)

    @max_age.setter
    def max_age(self, value: int | None) -> None:
        self.set_option(14, value)

    @property
    def if_none_match(self) -> bool:
        """True if the If-None-Match option is present."""
        return self.has_option(_IF_NONE_MATCH)

    @if_none_match.setter
    def if_none_match(self, value: bool) -> None:
        self.set_option(5, b"" if value else None)

    # -- Python protocol ---------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return (
            self.mtype == other.mtype
            and self.code == other.code
            and self.mid == other.mid
            and self.token == other.token
            and self.payload == other.payload
            and sorted(self.options, key=_by_number) == sorted(other.options, key=_by_number)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        try:
            mtype = TYPES[self.mtype].name
        except (IndexError, TypeError):
            mtype = repr(self.mtype)
        try:
            code = str(CODES[self.code])
        except (IndexError, TypeError):
            code = repr(self.code)
        opts = ", ".join(f"{n}:{_format_value(n, v)}" for n, v in self.options)
        bad = f" bad={list(self.bad_options)}" if self.bad_options else ""
        return (
            f"<Message {mtype} {code} mid=0x{self.mid:04x} token={bytes(self.token).hex()}"
            f" opts=[{opts}]{bad} payload={len(self.payload)}B>"
        )


def _format_value(number: int, value: bytes) -> str:
    """Short human form of an option value for ``repr``."""
    spec = OPTION_SPECS.get(number)
    fmt = spec[0] if spec else OptionFormat.OPAQUE
    if fmt is OptionFormat.STRING:
        try:
            return repr(value.decode("utf-8"))
        except UnicodeDecodeError:
            pass
    elif fmt is OptionFormat.UINT and len(value) <= 8:
        return str(_from_bytes(value, "big"))
    return "0x" + value.hex() if value else "''"


def decode_py(data: bytes | bytearray | memoryview, cls: type[Message] = Message) -> Message:
    """Parse one datagram into a ``cls`` (default :class:`Message`), strictly
    (the pure Python codec; :func:`decode` is this or its C twin).

    Raises :class:`MessageFormatError` naming the broken rule of RFC 7252 §3
    for: fewer than 4 bytes, version other than 1, token length 9-15, a
    truncated token or option, option delta or length nibble 15 outside the
    payload marker, a payload marker with no payload, an option number above
    65535, and an Empty (0.00) message that is not exactly 4 bytes.  Reserved
    code classes decode fine; known options with out-of-bounds value lengths
    are kept and listed in ``bad_options``.
    """
    if type(data) is not bytes:
        data = bytes(data)
    n = len(data)
    if n < 4:
        raise MessageFormatError("message shorter than the 4-byte header")
    b0 = data[0]
    if b0 & 0xC0 != 0x40:
        raise MessageFormatError(f"version must be 1, not {b0 >> 6}")
    tkl = b0 & 0x0F
    if tkl > 8:
        raise MessageFormatError(f"token length {tkl} is reserved (TKL 9-15)")
    code = data[1]
    pos = 4 + tkl
    if pos > n:
        raise MessageFormatError(f"truncated token: TKL {tkl} but {n - 4} bytes after header")
    if code == 0 and n != 4:
        raise MessageFormatError(
            "empty message must be exactly 4 bytes (no token, options or payload)"
        )

    msg = cls.__new__(cls)
    msg.mtype = TYPES[(b0 >> 4) & 3]
    msg.code = CODES[code]
    msg.mid = data[2] << 8 | data[3]
    msg.token = data[4:pos]
    options: OptionList = []
    msg.options = options
    msg.payload = b""
    msg.bad_options = ()
    if pos == n:
        return msg

    append = options.append
    bounds_get = _bounds_get
    bad = None
    number = 0
    while pos < n:
        b = data[pos]
        pos += 1
        if b == 0xFF:
            if pos == n:
                raise MessageFormatError("payload marker 0xFF followed by no payload")
            msg.payload = data[pos:]
            break
        delta = b >> 4
        length = b & 0x0F
        if delta > 12:
            if delta == 13:
                if pos >= n:
                    raise MessageFormatError("truncated option: missing 1-byte extended delta")
                delta = data[pos] + 13
                pos += 1
            elif delta == 14:
                if pos + 2 > n:
                    raise MessageFormatError("truncated option: missing 2-byte extended delta")
                delta = (data[pos] << 8 | data[pos + 1]) + 269
                pos += 2
            else:
                raise MessageFormatError("option delta nibble 15 is reserved for the 0xFF marker")
            if number + delta > 65535:
                raise MessageFormatError(f"option number {number + delta} exceeds 65535")
        if length > 12:
            if length == 13:
                if pos >= n:
                    raise MessageFormatError("truncated option: missing 1-byte extended length")
                length = data[pos] + 13
                pos += 1
            elif length == 14:
                if pos + 2 > n:
                    raise MessageFormatError("truncated option: missing 2-byte extended length")
                length = (data[pos] << 8 | data[pos + 1]) + 269
                pos += 2
            else:
                raise MessageFormatError("option length nibble 15 is reserved")
        number += delta
        end = pos + length
        if end > n:
            raise MessageFormatError(
                f"truncated option: option {number} value of {length} bytes runs past the end"
            )
        append((number, data[pos:end]))
        pos = end
        bounds = bounds_get(number)
        if bounds is not None and (length < bounds[0] or length > bounds[1]):
            if bad is None:
                bad = [number]
            else:
                bad.append(number)
    if bad is not None:
        msg.bad_options = tuple(bad)
    return msg


def _put_extended(buf: bytearray, delta: int, length: int) -> None:
    """Write an option header whose delta or length needs extended bytes."""
    if delta < 13:
        dn, dext = delta, b""
    elif delta < 269:
        dn, dext = 13, bytes((delta - 13,))
    else:
        dn, dext = 14, (delta - 269).to_bytes(2, "big")
    if length < 13:
        ln, lext = length, b""
    elif length < 269:
        ln, lext = 13, bytes((length - 13,))
    elif length < 65805:
        ln, lext = 14, (length - 269).to_bytes(2, "big")
    else:
        raise MessageFormatError(f"option value of {length} bytes is too long to encode")
    buf.append(dn << 4 | ln)
    buf += dext
    buf += lext


def _encode_options(buf: bytearray, options: OptionList) -> bool:
    """Append ``options`` to ``buf``; return False (buf untouched) if they are unsorted."""
    start = len(buf)
    prev = 0
    for number, value in options:
        delta = number - prev
        length = len(value)
        if delta < 0:
            del buf[start:]
            return False
        if delta < 13 and length < 13:
            buf.append(delta << 4 | length)
        else:
            if number > 65535:
                raise MessageFormatError(f"option number {number} exceeds 65535")
            _put_extended(buf, delta, length)
        buf += value
        prev = number
    return True


def encode_py(msg: Message) -> bytes:
    """The minimal datagram for ``msg`` (the pure Python codec; :func:`encode`
    is this or its C twin, which hands the rare cases back to this one).

    Options are written in stable number order.  Raises
    :class:`MessageFormatError` for a message that cannot be encoded: a token
    longer than 8 bytes, a type/code/mid out of range, an option number
    outside 0..65535, or an Empty (0.00) message with token, options or payload.
    """
    token = msg.token
    options = msg.options
    payload = msg.payload
    code = msg.code
    tkl = len(token)
    if tkl > 8:
        raise MessageFormatError(f"token longer than 8 bytes ({tkl})")
    if code == 0 and (tkl or options or payload):
        raise MessageFormatError(
            "empty message must be exactly 4 bytes (no token, options or payload)"
        )
    mtype = msg.mtype
    if not 0 <= mtype <= 3:
        raise MessageFormatError(f"message type out of range 0..3: {mtype}")
    try:
        buf = bytearray(_pack_header(0x40 | mtype << 4 | tkl, code, msg.mid))
    except _StructError:
        raise MessageFormatError(
            f"code (0..255) or message ID (0..65535) out of range: {code}, {msg.mid}"
        ) from None
    if tkl:
        buf += token
    if options and not _encode_options(buf, options):
        options = sorted(options, key=_by_number)
        if options[0][0] < 0:
            raise MessageFormatError(f"option number {options[0][0]} is negative")
        _encode_options(buf, options)
    if payload:
        buf.append(0xFF)
        buf += payload
    return bytes(buf)


def _load_speedups():  # noqa: ANN202 - the C module, or None
    """greencoap._speedups, configured, unless absent or GREENCOAP_NO_EXTENSIONS=1."""
    _speedups = speedups()
    if _speedups is None:
        return None
    _speedups.configure(TYPES, CODES, dict(OPTION_BOUNDS), MessageFormatError, Message, encode_py)
    return _speedups


_speedups = _load_speedups()

#: the codec in use: ``"c"`` (greencoap._speedups, built at install time) or
#: ``"python"`` (not built, or ``GREENCOAP_NO_EXTENSIONS=1``); both behave the same
CODEC = "c" if _speedups is not None else "python"

if _speedups is not None:
    decode = _speedups.decode
    encode = _speedups.encode
else:
    decode = decode_py
    encode = encode_py
