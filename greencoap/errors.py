"""Exception hierarchy shared by every layer (layer 1: pure data).

Every error greencoap raises on purpose derives from :class:`CoapError`, so a
script can catch one class.  Timeouts are also builtin :class:`TimeoutError`
so code that already handles socket timeouts keeps working.
"""

from __future__ import annotations


class CoapError(Exception):
    """Base of all greencoap errors.

    Handlers may raise ``CoapError(Code.X, "diagnostic")`` to answer with that
    response code and the text as diagnostic payload.
    """

    def __init__(self, code: int | str | None = None, message: str = "") -> None:
        if isinstance(code, str) and not message:
            code, message = None, code
        self.code = code
        self.message = message
        super().__init__(*(a for a in (message,) if a) or ())

    def __str__(self) -> str:
        if self.code is not None:
            from .codes import Code  # layer 1 sibling, no cycle at import time

            text = str(Code(self.code))
            return f"{text}: {self.message}" if self.message else text
        return self.message or self.__class__.__name__


class MessageFormatError(CoapError, ValueError):
    """A datagram that is not a well-formed CoAP message (RFC 7252 §3)."""


class UriError(CoapError, ValueError):
    """A URI that cannot be used for CoAP (RFC 7252 §6)."""


class RequestTimeoutError(CoapError, TimeoutError):
    """No response arrived within the call's timeout or the CON schedule."""


class ResetError(CoapError, ConnectionResetError):
    """The peer answered with RST: it rejected or did not expect our message."""


class ClientClosedError(CoapError):
    """The client (or its endpoint) was closed while the call was waiting."""


class HandshakeError(CoapError, ConnectionError):
    """A DTLS session could not be set up or was torn down (coaps://).

    Raised by requests to a peer whose handshake failed: a wrong key or an
    unknown PSK identity (the peer's alert is named), no answer within the
    handshake's retransmission schedule, or a fatal alert on an established
    session.
    """


class ResponseError(CoapError):
    """Raised by ``Response.raise_for_status()`` for a 4.xx/5.xx response."""

    def __init__(self, response) -> None:  # noqa: ANN001 - a client Response
        self.response = response
        super().__init__(int(response.code), response.text if response.payload else "")
