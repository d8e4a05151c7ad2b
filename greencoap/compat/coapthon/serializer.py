"""CoAPthon3's ``coapthon.serializer.Serializer`` on greencoap's strict codec."""

from __future__ import annotations

from typing import Any

from greencoap.errors import MessageFormatError

from . import defines
from ._convert import from_coap, to_coap
from .messages.message import Message


class Serializer:
    """Datagram ↔ message."""

    @staticmethod
    def deserialize(datagram: bytes, source: tuple) -> Message | int:
        """A datagram from ``source`` → a Request, Response or Message.

        As CoAPthon3, a datagram that cannot be parsed gives the int code
        ``BAD_REQUEST`` (and an unknown critical option ``BAD_OPTION``) instead
        of a message: the caller answers it."""
        from greencoap.message import Message as CoapMessage

        try:
            coap = CoapMessage.decode(datagram)
        except MessageFormatError:
            return defines.Codes.BAD_REQUEST.number
        for number, _ in coap.options:
            if number & 1 and number not in defines.OptionRegistry.LIST:
                return defines.Codes.BAD_OPTION.number
        return from_coap(coap, source)

    @staticmethod
    def serialize(message: Message) -> bytes:
        """A message → its datagram."""
        return to_coap(message).encode()

    @staticmethod
    def is_request(code: int) -> bool:
        return defines.REQUEST_CODE_LOWER_BOUND <= code <= defines.REQUEST_CODE_UPPER_BOUND

    @staticmethod
    def is_response(code: int) -> bool:
        return defines.RESPONSE_CODE_LOWER_BOUND <= code <= defines.RESPONSE_CODE_UPPER_BOUND

    @staticmethod
    def as_sorted_list(options: list[Any]) -> list[Any]:
        """Options sorted by number (repeated ones keep their order)."""
        return sorted(options, key=lambda o: o.number)
