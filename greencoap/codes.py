"""Message types and method/response codes of CoAP (layer 1: codec, pure data).

Holds :class:`Type` (CON/NON/ACK/RST, RFC 7252 §3) and :class:`Code` (the
8-bit ``c.dd`` code of RFC 7252 §12.1 plus the codes added by RFC 7959, 8132,
8516 and 8768), and the lookup tables :data:`CODES` and :data:`TYPES` that the
message decoder uses so that it never constructs an enum on the hot path.

Every byte value is a valid :class:`Code`: values without a registered name
become pseudo-members (``Code(0x46)`` prints as ``"2.06"``) so that upper
layers can inspect and answer them instead of the decoder rejecting them.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["CODES", "TYPES", "Code", "Type", "dotted", "is_success"]


class Type(IntEnum):
    """The 2-bit message type of the fixed header (RFC 7252 §4.2, §4.3)."""

    CON = 0  #: confirmable: retransmitted until ACKed or RST
    NON = 1  #: non-confirmable: fire and forget
    ACK = 2  #: acknowledges a CON (may piggyback a response)
    RST = 3  #: rejects a message the receiver cannot process

    def __str__(self) -> str:
        return self.name


# Reason phrases as printed after the dotted code; request methods print their
# method name instead.  Kept outside the enum so they are not members.
_PHRASES: dict[int, str] = {}
_METHOD_NAMES = {5: "FETCH", 6: "PATCH", 7: "iPATCH"}


def is_success(code: int) -> bool:
    """True for a 2.xx code (an int or a :class:`Code`)."""
    return code >> 5 == 2


def dotted(code: int) -> str:
    """The ``"c.dd"`` notation of a code (an int or a :class:`Code`), e.g. ``"2.05"``."""
    return f"{code >> 5}.{code & 31:02d}"


class Code(IntEnum):
    """The code byte of a CoAP message: ``class << 5 | detail``.

    ``str()`` gives ``"GET"`` for requests and ``"2.05 Content"`` for responses
    (``"0.00 Empty"`` for the empty message); unnamed values give the dotted
    form only (``"2.06"``).  ``format(code)`` / f-strings behave like ``str``.
    """

    EMPTY = 0

    # Methods (RFC 7252 §12.1.1, RFC 8132).
    GET = 1
    POST = 2
    PUT = 3
    DELETE = 4
    FETCH = 5
    PATCH = 6
    IPATCH = 7

    # 2.xx Success.
    CREATED = 2 << 5 | 1
    DELETED = 2 << 5 | 2
    VALID = 2 << 5 | 3
    CHANGED = 2 << 5 | 4
    CONTENT = 2 << 5 | 5
    CONTINUE = 2 << 5 | 31  # RFC 7959

    # 4.xx Client error.
    BAD_REQUEST = 4 << 5 | 0
    UNAUTHORIZED = 4 << 5 | 1
    BAD_OPTION = 4 << 5 | 2
    FORBIDDEN = 4 << 5 | 3
    NOT_FOUND = 4 << 5 | 4
    METHOD_NOT_ALLOWED = 4 << 5 | 5
    NOT_ACCEPTABLE = 4 << 5 | 6
    REQUEST_ENTITY_INCOMPLETE = 4 << 5 | 8  # RFC 7959
    CONFLICT = 4 << 5 | 9  # RFC 8132
    PRECONDITION_FAILED = 4 << 5 | 12
    REQUEST_ENTITY_TOO_LARGE = 4 << 5 | 13
    UNSUPPORTED_CONTENT_FORMAT = 4 << 5 | 15
    UNPROCESSABLE_ENTITY = 4 << 5 | 22  # RFC 8132
    TOO_MANY_REQUESTS = 4 << 5 | 29  # RFC 8516

    # 5.xx Server error.
    INTERNAL_SERVER_ERROR = 5 << 5 | 0
    NOT_IMPLEMENTED = 5 << 5 | 1
    BAD_GATEWAY = 5 << 5 | 2
    SERVICE_UNAVAILABLE = 5 << 5 | 3
    GATEWAY_TIMEOUT = 5 << 5 | 4
    PROXYING_NOT_SUPPORTED = 5 << 5 | 5
    HOP_LIMIT_REACHED = 5 << 5 | 8  # RFC 8768

    @classmethod
    def _missing_(cls, value: object) -> Code | None:
        """Make every byte value a usable (unnamed) code instead of an error."""
        if type(value) is int and 0 <= value <= 255:
            member = int.__new__(cls, value)
            member._name_ = f"UNKNOWN_{value >> 5}_{value & 31:02d}"
            member._value_ = value
            # Cache so that Code(x) is Code(x), like real members.
            return cls._value2member_map_.setdefault(value, member)  # type: ignore[return-value]
        return None

    @classmethod
    def from_dotted(cls, text: str) -> Code:
        """Parse the ``"c.dd"`` notation, e.g. ``Code.from_dotted("4.04")``."""
        cls_part, sep, detail_part = text.strip().partition(".")
        if (
            not sep
            or not (cls_part.isdigit() and detail_part.isdigit())
            or len(cls_part) != 1
            or len(detail_part) > 2
        ):
            raise ValueError(f"not a dotted CoAP code: {text!r}")
        code_class, detail = int(cls_part), int(detail_part)
        if code_class > 7 or detail > 31:
            raise ValueError(f"dotted CoAP code out of range: {text!r}")
        return cls(code_class << 5 | detail)

    @property
    def code_class(self) -> int:
        """The class digit: 0 request/empty, 2 success, 4 client error, 5 server error."""
        return self >> 5

    @property
    def detail(self) -> int:
        """The two-digit detail part (0..31)."""
        return self & 31

    @property
    def dotted(self) -> str:
        """The ``"c.dd"`` notation, e.g. ``"2.05"``."""
        return dotted(self)

    @property
    def is_request(self) -> bool:
        """True for method codes 0.01..0.31."""
        return 1 <= self <= 31

    @property
    def is_response(self) -> bool:
        """True for response codes 2.00..5.31."""
        return 64 <= self <= 191

    @property
    def is_success(self) -> bool:
        """True for 2.xx codes."""
        return is_success(self)

    @property
    def is_error(self) -> bool:
        """True for 4.xx and 5.xx codes."""
        return self >> 5 in (4, 5)

    @property
    def is_empty(self) -> bool:
        """True for 0.00, the code of Empty messages (pings, bare ACKs, RSTs)."""
        return self == 0

    def __str__(self) -> str:
        value = int(self)
        if 1 <= value <= 31 and not self._name_.startswith("UNKNOWN_"):
            return _METHOD_NAMES.get(value, self._name_)
        phrase = _PHRASES.get(value)
        dotted = f"{value >> 5}.{value & 31:02d}"
        return f"{dotted} {phrase}" if phrase else dotted

    def __format__(self, spec: str) -> str:
        return str(self) if not spec else int.__format__(int(self), spec)

    def __repr__(self) -> str:
        return f"<Code.{self._name_}: {self.dotted}>"


for _member in Code:
    if not 1 <= _member <= 31:
        _PHRASES[_member] = " ".join(w.capitalize() for w in _member.name.split("_"))
del _member

#: ``CODES[b] is Code(b)`` for every byte ``b``; the decoder indexes this table.
CODES: tuple[Code, ...] = tuple(Code(_b) for _b in range(256))
#: ``TYPES[t] is Type(t)`` for the four 2-bit type values.
TYPES: tuple[Type, ...] = tuple(Type(_t) for _t in range(4))
