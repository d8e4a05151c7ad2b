"""What the message layer tells its caller, as small typed events.

:meth:`MessageLayer.receive <greencoap.protocol.messaging.MessageLayer.receive>`
returns one of these (or None), :meth:`~greencoap.protocol.messaging.MessageLayer.expire`
a list of :class:`TimedOut`; the caller dispatches on the type, as with h11's
events.  They are named tuples: cheap to make on the hot path (the layer
builds them with ``tuple.__new__``), immutable, and readable by field.
"""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = [
    "Acknowledged",
    "Event",
    "NotificationReceived",
    "RequestReceived",
    "ResetReceived",
    "ResponseReceived",
    "TimedOut",
]


class RequestReceived(NamedTuple):
    """Server role: a new request (not a copy) to handle and answer."""

    message: Any  # greencoap.message.Message
    peer: Any


class ResponseReceived(NamedTuple):
    """Client role: the exchange's final response arrived (``exchange.result``)."""

    exchange: Any  # greencoap.protocol.messaging.Exchange


class NotificationReceived(NamedTuple):
    """Client role: a notification for an observation (RFC 7641)."""

    exchange: Any
    message: Any


class Acknowledged(NamedTuple):
    """Our confirmable response or notification was acknowledged."""

    exchange: Any


class ResetReceived(NamedTuple):
    """The peer answered one of our messages with RST."""

    exchange: Any


class TimedOut(NamedTuple):
    """An exchange of ours got no answer in time (from ``expire``)."""

    exchange: Any


def _same_event(a: tuple, b: object) -> bool:
    return type(a) is type(b) and tuple.__eq__(a, b)  # type: ignore[arg-type]


def _other_event(a: tuple, b: object) -> bool:
    return not _same_event(a, b)


# two events are equal only when they are the same kind of event with equal
# fields (a TimedOut(ex) is not a ResetReceived(ex), as plain tuples would be)
for _cls in (
    RequestReceived,
    ResponseReceived,
    NotificationReceived,
    Acknowledged,
    ResetReceived,
    TimedOut,
):
    _cls.__eq__ = _same_event  # type: ignore[method-assign,assignment]
    _cls.__ne__ = _other_event  # type: ignore[method-assign,assignment]
    _cls.__hash__ = tuple.__hash__  # type: ignore[method-assign,assignment]

#: any of the events above
Event = (
    RequestReceived
    | ResponseReceived
    | NotificationReceived
    | Acknowledged
    | ResetReceived
    | TimedOut
)
