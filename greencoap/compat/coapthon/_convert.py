"""Between CoAPthon3's message objects and greencoap's codec (internal).

greencoap's :class:`~greencoap.message.Message` keeps options as raw
``(number, bytes)``; CoAPthon3's keeps :class:`Option` objects with typed
values.  The payload of a received message is text unless its content
format is binary (octet-stream, EXI, CBOR) or it is not UTF-8, as CoAPthon3
decides (CoAPthon3 crashes on invalid UTF-8; here it stays bytes).
"""

from __future__ import annotations

from typing import Any

from greencoap.message import Message as CoapMessage
from greencoap.options import encode_uint

from . import defines
from .messages.message import Message
from .messages.option import Option
from .messages.request import Request
from .messages.response import Response

_BINARY = frozenset(
    (
        defines.Content_types["application/octet-stream"],
        defines.Content_types["application/exi"],
        defines.Content_types["application/cbor"],
    )
)


def option_bytes(option: Option) -> bytes:
    """An option's value on the wire."""
    value = option.raw_value
    kind = defines.option_item(option.number).value_type
    if value is None:
        return b""
    if kind == defines.INTEGER:
        return encode_uint(int(value))
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, int):
        return encode_uint(value)
    return bytes(value)


def payload_bytes(payload: Any) -> bytes:
    if payload is None:
        return b""
    if isinstance(payload, str):
        return payload.encode("utf-8")
    return bytes(payload)


def to_coap(msg: Message) -> CoapMessage:
    """A CoAPthon3 message → greencoap's (type/MID/token as set, or 0/empty)."""
    options = [(o.number, option_bytes(o)) for o in msg.options]
    return CoapMessage(
        msg.type if msg.type is not None else 0,
        msg.code if msg.code is not None else 0,
        msg.mid if msg.mid is not None else 0,
        msg.token or b"",
        options,
        payload_bytes(msg.payload),
    )


def from_coap(coap: CoapMessage, source: tuple | None = None) -> Message:
    """greencoap's message → a CoAPthon3 Request, Response or (empty) Message."""
    code = int(coap.code)
    if 1 <= code <= 31:
        msg: Message = Request()
    elif code >= 64:
        msg = Response()
    else:
        msg = Message()
    msg._code = code
    msg._type = int(coap.mtype)
    msg._mid = coap.mid
    msg._token = bytes(coap.token) if coap.token else None
    if source is not None:
        msg._source = (source[0], source[1])
    ctype = None
    for number, value in coap.options:
        option = Option()
        option.number = number
        kind = defines.option_item(number).value_type
        if not value:
            option._value = None if kind != defines.INTEGER else 0
        elif kind == defines.INTEGER:
            option._value = int.from_bytes(value, "big")
        elif kind == defines.STRING:
            option._value = value.decode("utf-8", "replace")
        else:
            option._value = bytes(value)
        msg._options.append(option)
        if number == defines.OptionRegistry.CONTENT_TYPE.number:
            ctype = option._value
    if coap.payload:
        payload: Any = bytes(coap.payload)
        if ctype not in _BINARY:
            try:
                payload = payload.decode("utf-8")
            except UnicodeDecodeError:
                pass
        msg._payload = payload
    return msg
