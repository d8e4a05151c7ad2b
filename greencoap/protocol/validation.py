"""Which requests are refused before any handler work, and why (layer 2).

RFC 7252 §5.4.1: a request with a critical option the server does not
understand is answered 4.02 Bad Option; §5.4.3: a known option whose value
length is out of bounds counts as unrecognised (4.02 when critical, ignored
when elective; the codec lists those in ``Message.bad_options`` and the
accessors skip them); §5.4.5: a second occurrence of a non-repeatable
critical option is unrecognised too.  RFC 7959 §2.2: a Block1 or Block2
option with the reserved SZX 7 is a 4.00 Bad Request.  §5.7.2: a server that
is no proxy answers Proxy-Uri / Proxy-Scheme with 5.05 Proxying Not
Supported.

:func:`inspect_request` runs once per request on the server's hot path: one
pass over the (sorted) options, which also collects the raw Uri-Path for the
router, so it costs what the server's own scan cost before.
"""

from __future__ import annotations

from ..codes import Code
from ..message import Message
from ..options import OPTION_SPECS
from ..options import OptionNumber as O

__all__ = ["UNDERSTOOD_OPTIONS", "inspect_request"]

#: Options a greencoap server understands in requests; any other critical
#: option is answered 4.02 Bad Option.
UNDERSTOOD_OPTIONS = frozenset(
    {
        O.IF_MATCH,
        O.URI_HOST,
        O.ETAG,
        O.IF_NONE_MATCH,
        O.OBSERVE,
        O.URI_PORT,
        O.URI_PATH,
        O.CONTENT_FORMAT,
        O.URI_QUERY,
        O.ACCEPT,
        O.BLOCK2,
        O.BLOCK1,
        O.SIZE2,
        O.SIZE1,
        O.NO_RESPONSE,
        O.REQUEST_TAG,
        O.ECHO,
        O.HOP_LIMIT,
    }
)

#: Critical options that may appear once only (§5.4.5).
_SINGLE_CRITICAL = frozenset(
    n for n, spec in OPTION_SPECS.items() if n & 1 and not spec[3] and n in UNDERSTOOD_OPTIONS
)
_BLOCK1, _BLOCK2, _URI_PATH = O.BLOCK1.value, O.BLOCK2.value, O.URI_PATH.value
_ACCEPT = O.ACCEPT.value
_PROXY = frozenset({O.PROXY_URI.value, O.PROXY_SCHEME.value})


def inspect_request(
    msg: Message, understood: frozenset = UNDERSTOOD_OPTIONS
) -> tuple[tuple[bytes, ...], bool, int | None, tuple[int, str] | None]:
    """One pass over a request's options.

    Returns ``(raw Uri-Path segments, uses block-wise, Accept, refusal)``,
    where Accept is the wanted Content-Format (None: any) and ``refusal`` is
    ``None`` or ``(response code, diagnostic)`` for a request that must not
    reach a handler (see the module docstring).
    """
    raw_path = []
    blockwise = False
    accept = None
    prev = -1
    for number, value in msg.options:
        if number == _URI_PATH:
            raw_path.append(value)
        elif number == _ACCEPT:
            if accept is None and len(value) <= 2:
                accept = int.from_bytes(value, "big")
        elif number == _BLOCK2 or number == _BLOCK1:
            blockwise = True
            if value and value[-1] & 7 == 7:
                which = "Block2" if number == _BLOCK2 else "Block1"
                refusal = (Code.BAD_REQUEST, f"{which} SZX 7 is reserved (RFC 7959 §2.2)")
                return (), True, None, refusal
        elif number & 1 and number not in understood:
            if number in _PROXY:
                return (), False, None, (Code.PROXYING_NOT_SUPPORTED, "this server is not a proxy")
            return (), False, None, (Code.BAD_OPTION, f"unrecognised critical option {number}")
        if number == prev and number in _SINGLE_CRITICAL:
            return (), False, None, (Code.BAD_OPTION, f"critical option {number} repeated")
        prev = number
    if msg.bad_options:
        for number in msg.bad_options:
            if number & 1:
                return (), False, None, (Code.BAD_OPTION, f"option {number} has an invalid length")
    return tuple(raw_path), blockwise, accept, None
