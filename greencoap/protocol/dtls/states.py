"""DTLS session states, handshake phases and counters (layer 2), shared by
the session and its client and server halves."""

from __future__ import annotations

from enum import IntEnum

from .messages import CLIENT_HELLO, FINISHED, SERVER_HELLO_DONE, TLS_PSK_WITH_AES_128_CCM_8


class State(IntEnum):
    """Where a session stands, as the caller sees it."""

    HANDSHAKING = 0  # the handshake is in progress (or, for a client, not started yet)
    ESTABLISHED = 1  # application data flows both ways
    CLOSED = 2  # closed in order (close_notify either way, or idle expiry)
    FAILED = 3  # a fatal alert, a timeout or a protocol error: see ``error``


HANDSHAKING = State.HANDSHAKING
ESTABLISHED = State.ESTABLISHED
CLOSED = State.CLOSED
FAILED = State.FAILED

# Handshake phases (internal; which message or record comes next).
C_IDLE = 0  # client: start() not called yet
C_WAIT_SERVER_HELLO = 1  # client: sent a ClientHello; HelloVerifyRequest or ServerHello next
C_WAIT_HELLO_DONE = 2  # client: got ServerHello; ServerKeyExchange* and ServerHelloDone next
C_WAIT_CCS = 3  # client: sent flight 5; the server's ChangeCipherSpec next
C_WAIT_FINISHED = 4  # client: reading epoch 1; the server's Finished next
S_WAIT_CLIENT_HELLO = 5  # server: a ClientHello (the DtlsServer checked its cookie)
S_WAIT_KEY_EXCHANGE = 6  # server: sent flight 4; ClientKeyExchange next
S_WAIT_CCS = 7  # server: keys derived; the client's ChangeCipherSpec next
S_WAIT_FINISHED = 8  # server: reading epoch 1; the client's Finished next
DONE = 9  # handshake over (established, closed or failed)

EPOCH_1 = 1 << 48
FLIGHT_ENDS = frozenset((CLIENT_HELLO, SERVER_HELLO_DONE, FINISHED))  # last message of a flight
CCS_BODY = b"\x01"
SUITE = TLS_PSK_WITH_AES_128_CCM_8

STAT_NAMES = (
    "records_in",  # records parsed from datagrams
    "records_out",  # records sent (handshake, alerts, application data)
    "bad_records",  # garbage datagrams, malformed records or handshake fragments
    "auth_failures",  # epoch ≥ 1 records that failed AEAD authentication
    "replays",  # duplicates or records older than the replay window
    "wrong_epoch",  # records of an epoch we cannot read (yet)
    "early_records",  # epoch-1 records kept until the peer's ChangeCipherSpec
    "unexpected_records",  # well-formed but out of place (dropped)
    "retransmits",  # flights sent again (timer or peer retransmission)
    "alerts_in",
    "alerts_out",
    "app_records_in",
    "app_records_out",
    "internal_errors",  # bugs caught at the public boundary (should stay 0)
)


def show_identity(identity: bytes) -> str:
    """A PSK identity quoted for error messages."""
    return "'" + identity.decode("utf-8", "backslashreplace") + "'"


class BugLog:
    """Exceptions an engine caught at its public boundary (each one a bug:
    peer input must never escape the engine), kept with their tracebacks
    for the I/O layer to report.  Bounded: past :attr:`LIMIT` unreported
    ones, the rest are only counted (``dropped``)."""

    __slots__ = ("errors", "dropped")
    LIMIT = 32

    def __init__(self) -> None:
        self.errors: list[BaseException] = []
        self.dropped = 0

    def add(self, exc: BaseException) -> None:
        """Keep ``exc`` for the next :meth:`take`."""
        if len(self.errors) < self.LIMIT:
            self.errors.append(exc)
        else:
            self.dropped += 1

    def take(self) -> list[BaseException]:
        """The exceptions kept since the last call (and forget them)."""
        out, self.errors = self.errors, []
        return out
