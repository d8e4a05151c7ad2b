"""The exchanges the message layer tracks, one type per role (layer 2).

A message we send and must follow up on is an *exchange*:

* :class:`RequestExchange` (client role): a request of ours, from queued behind
  NSTART to its response.  Its states are ``QUEUED → SENT → (ACKED) →
  DONE``, or ``… → OBSERVING → DONE`` for an Observe registration that
  succeeded (its token stays registered for the notifications).
* :class:`ReplyExchange` (server role): a confirmable response or notification of
  ours awaiting its ACK, or a NON notification whose RST we would still
  match.  Its states are ``SENT → DONE``.

Both end exactly once, with an :class:`Outcome` saying how; ``result`` is
the one response message the exchange got (``None`` for every ending that
brought none), ``error`` the exception a failed transport gave.  The
predicates (:attr:`Exchange.done`, :attr:`RequestExchange.awaiting`,
:attr:`RequestExchange.observing`) say what the layer above may expect next; the
engine itself compares ``state`` with the :class:`State` members by
identity on its hot path.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from .timers import NOT_SCHEDULED

INF = float("inf")


class State(Enum):
    """Where an exchange is (the values of ``Exchange.state``)."""

    QUEUED = "queued"  # a RequestExchange waiting for an NSTART slot; nothing sent yet
    SENT = "sent"  # sent; a CON is retransmitted until its ACK (or response)
    ACKED = "acked"  # a RequestExchange whose empty ACK came: the separate response follows
    OBSERVING = "observing"  # a RequestExchange registered as an observer: notifications follow
    DONE = "done"  # ended (see Outcome); removed from every table of the engine


class Outcome(Enum):
    """How an exchange ended (the values of ``Exchange.outcome``)."""

    RESPONSE = "response"  # a RequestExchange's final response came: it is ``result``
    ACKNOWLEDGED = "acknowledged"  # a ReplyExchange was ACKed by its peer
    RESET = "reset"  # the peer answered with RST
    TIMEOUT = "timeout"  # no answer in time (for a NON ReplyExchange: its RST window closed)
    CANCELLED = "cancelled"  # the caller gave up
    REPLACED = "replaced"  # an observation whose token a re-registration took over
    CLOSED = "closed"  # the endpoint closed
    FAILED = "failed"  # the transport to the peer failed: ``error`` says why


QUEUED, SENT, ACKED, OBSERVING, DONE = State
WAITING = frozenset((QUEUED, SENT, ACKED))


class Exchange:
    """What both roles' exchanges have: a datagram, its retransmission
    schedule, a deadline and, once ``state`` is DONE, an ``outcome``.

    ``waiter`` is free for the layer above (the endpoint parks the calling
    greenlet there, an observer of ours hears of its notification's fate);
    the engine never touches it.  Not thread-safe: it belongs to the
    endpoint's hub, like the engine.
    """

    __slots__ = (
        "peer",
        "token",
        "mid",
        "con",
        "datagram",
        "state",
        "retransmits",
        "interval",
        "next_retransmit",
        "deadline",
        "result",
        "outcome",
        "error",
        "waiter",
        "due",
        "due_key",
        "sent_at",
    )

    def __init__(self, peer: Any, token: Any, con: bool, deadline: float) -> None:
        self.peer = peer
        self.token = token
        self.mid = -1
        self.con = con
        self.datagram: Any = b""  # the Message until it is sent, then its bytes
        self.state = QUEUED
        self.retransmits = 0
        self.interval = 0.0
        self.next_retransmit = INF
        self.deadline = deadline
        self.result: Any = None  # the response Message (RequestExchange only)
        self.outcome: Outcome | None = None
        self.error: BaseException | None = None
        self.waiter: Any = None
        self.due = 0.0  # when expire() must look at this exchange next
        self.due_key = NOT_SCHEDULED  # the timer bucket (ms) holding its live entry
        self.sent_at = 0.0  # when it was (first) transmitted: an RTT sample when ACKed at once

    @property
    def done(self) -> bool:
        """It ended: ``outcome`` says how."""
        return self.state is DONE

    def __repr__(self) -> str:
        token = self.token.hex() if isinstance(self.token, bytes) else "(ping)"
        how = f" {self.outcome.name}" if self.outcome is not None else ""
        return (
            f"<{type(self).__name__} {self.peer} token={token} mid={self.mid} "
            f"{self.state.name}{how}>"
        )


class RequestExchange(Exchange):
    """One outgoing request of ours and what became of it (client role)."""

    __slots__ = ("observe", "sink")

    def __init__(self, peer: Any, token: Any, con: bool, deadline: float, observe: bool) -> None:
        super().__init__(peer, token, con, deadline)
        self.observe = observe  # an Observe registration (RFC 7641)
        self.sink: Any = None  # the layer above's notification consumer (never touched here)

    @property
    def awaiting(self) -> bool:
        """Still waiting for its (first) response: queued, sent or ACKed."""
        state = self.state  # by identity: hashing an Enum member calls Python code
        return state is SENT or state is QUEUED or state is ACKED

    @property
    def observing(self) -> bool:
        """A registration that succeeded: its notifications are coming."""
        return self.state is OBSERVING


class ReplyExchange(Exchange):
    """A response or notification of ours that the peer may still ACK or
    reject with RST (server role): a separate CON response, a CON
    notification, or a NON notification within its RST window."""

    __slots__ = ()


__all__ = [
    "State",
    "Outcome",
    "Exchange",
    "RequestExchange",
    "ReplyExchange",
    "QUEUED",
    "SENT",
    "ACKED",
    "OBSERVING",
    "DONE",
]
