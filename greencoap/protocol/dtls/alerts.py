"""TLS alert codes and the DTLS error type (layer 2; RFC 5246 §7.2, RFC 4279 §2,
RFC 5746 §3.5 no_renegotiation).

An alert is two bytes, level then description.  :class:`DtlsError` carries the
description code of the alert that ended a session (sent or received) so the
caller can tell a wrong key (``decrypt_error``) from an unknown identity.
"""

from __future__ import annotations

WARNING = 1
FATAL = 2

CLOSE_NOTIFY = 0
UNEXPECTED_MESSAGE = 10
BAD_RECORD_MAC = 20
HANDSHAKE_FAILURE = 40
ILLEGAL_PARAMETER = 47
DECODE_ERROR = 50
DECRYPT_ERROR = 51
PROTOCOL_VERSION = 70
INTERNAL_ERROR = 80
USER_CANCELED = 90
NO_RENEGOTIATION = 100
UNSUPPORTED_EXTENSION = 110
UNKNOWN_PSK_IDENTITY = 115

ALERT_NAMES: dict[int, str] = {
    0: "close_notify",
    10: "unexpected_message",
    20: "bad_record_mac",
    21: "decryption_failed",
    22: "record_overflow",
    30: "decompression_failure",
    40: "handshake_failure",
    41: "no_certificate",
    42: "bad_certificate",
    43: "unsupported_certificate",
    44: "certificate_revoked",
    45: "certificate_expired",
    46: "certificate_unknown",
    47: "illegal_parameter",
    48: "unknown_ca",
    49: "access_denied",
    50: "decode_error",
    51: "decrypt_error",
    60: "export_restriction",
    70: "protocol_version",
    71: "insufficient_security",
    80: "internal_error",
    86: "inappropriate_fallback",
    90: "user_canceled",
    100: "no_renegotiation",
    110: "unsupported_extension",
    115: "unknown_psk_identity",
}

# What a received alert most likely means for a PSK handshake.
_HINTS = {
    DECRYPT_ERROR: " — wrong PSK?",
    BAD_RECORD_MAC: " — wrong PSK?",
    UNKNOWN_PSK_IDENTITY: " — the server does not know this identity",
    HANDSHAKE_FAILURE: " — no common cipher suite (only PSK-AES128-CCM8 is offered)?",
}


def alert_name(code: int) -> str:
    """The RFC name of an alert description, or ``alert_<code>``."""
    return ALERT_NAMES.get(code, f"alert_{code}")


def describe_received(code: int, during_handshake: bool) -> str:
    """The error message for a fatal alert received from the peer."""
    what = "handshake failed" if during_handshake else "connection failed"
    return f"{what}: peer sent alert {alert_name(code)} ({code}){_HINTS.get(code, '')}"


class DtlsError(Exception):
    """Why a DTLS session failed or an operation is impossible.

    ``alert`` is the alert description code involved (sent or received), or
    None when no alert was exchanged (a timeout, a local misuse).
    """

    def __init__(self, message: str, alert: int | None = None) -> None:
        super().__init__(message)
        self.alert = alert
