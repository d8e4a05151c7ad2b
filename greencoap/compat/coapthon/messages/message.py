"""CoAPthon3's ``coapthon.messages.message.Message``: the attributes and
property setters legacy code uses, with the same types (``code`` and
``type`` ints, ``token`` bytes, ``payload`` str or bytes, ``source`` and
``destination`` ``(host, port)`` tuples, ``options`` a list of
:class:`~greencoap.compat.coapthon.messages.option.Option`)."""

from __future__ import annotations

import binascii
from typing import Any

from .. import defines, utils
from .option import Option

_SZX_FOR_SIZE = ((512, 6), (256, 5), (128, 4), (64, 3), (32, 2), (16, 1))


def _block_value(value: tuple) -> int:
    """``(num, more, size)`` → the Block option's uint (CoAPthon3's rounding)."""
    num, more, size = value
    szx = 0
    for bound, s in _SZX_FOR_SIZE:
        if size > bound:
            szx = s
            break
    return (num << 4) | (int(bool(more)) << 3) | szx


class Message:
    """A CoAP message as CoAPthon3 models it."""

    def __init__(self) -> None:
        self._type: int | None = None
        self._mid: int | None = None
        self._token: bytes | None = None
        self._options: list[Option] = []
        self._payload: Any = None
        self._destination: tuple | None = None
        self._source: tuple | None = None
        self._code: int | None = None
        self._acknowledged: bool | None = None
        self._rejected: bool | None = None
        self._timeouted: bool | None = None
        self._cancelled: bool | None = None
        self._duplicated: bool | None = None
        self._timestamp: float | None = None
        self._version = 1

    # -- header ------------------------------------------------------------------
    @property
    def version(self) -> int:
        return self._version

    @version.setter
    def version(self, v: int) -> None:
        if not isinstance(v, int) or v != 1:
            raise AttributeError("the CoAP version must be 1")
        self._version = v

    @property
    def type(self) -> int | None:
        return self._type

    @type.setter
    def type(self, value: int | None) -> None:
        if value not in defines.Types.values():
            raise AttributeError(f"not a message type: {value!r}")
        self._type = value

    @property
    def mid(self) -> int | None:
        return self._mid

    @mid.setter
    def mid(self, value: int) -> None:
        if not isinstance(value, int) or not 0 <= value <= 0xFFFF:
            raise AttributeError(f"a MID is 0..65535, not {value!r}")
        self._mid = value

    @mid.deleter
    def mid(self) -> None:
        self._mid = None

    @property
    def token(self) -> bytes | None:
        return self._token

    @token.setter
    def token(self, value: Any) -> None:
        if value is None:
            self._token = None
            return
        if not isinstance(value, bytes):
            value = bytes(value, "utf-8") if isinstance(value, str) else bytes(value)
        if len(value) > 8:
            raise AttributeError("a token is at most 8 bytes (RFC 7252 §3)")
        self._token = value

    @token.deleter
    def token(self) -> None:
        self._token = None

    @property
    def options(self) -> list[Option]:
        return self._options

    @options.setter
    def options(self, value: list[Option] | None) -> None:
        self._options = [] if value is None else list(value)

    @property
    def payload(self) -> Any:
        return self._payload

    @payload.setter
    def payload(self, value: Any) -> None:
        """A payload, or ``(content_type, payload)`` which sets Content-Format too."""
        if isinstance(value, tuple):
            content_type, value = value
            self.content_type = content_type
        self._payload = value

    @property
    def destination(self) -> tuple | None:
        return self._destination

    @destination.setter
    def destination(self, value: tuple | None) -> None:
        if value is not None and (not isinstance(value, tuple) or len(value) != 2):
            raise AttributeError("a destination is a (host, port) tuple")
        self._destination = value

    @property
    def source(self) -> tuple | None:
        return self._source

    @source.setter
    def source(self, value: tuple) -> None:
        if not isinstance(value, tuple) or len(value) != 2:
            raise AttributeError("a source is a (host, port) tuple")
        self._source = value

    @property
    def code(self) -> int | None:
        return self._code

    @code.setter
    def code(self, value: int | None) -> None:
        if value is not None and value not in defines.Codes.LIST:
            raise AttributeError(f"not a CoAP code: {value!r}")
        self._code = value

    # -- state flags (kept for code that reads them) -----------------------------
    @property
    def acknowledged(self) -> bool | None:
        return self._acknowledged

    @acknowledged.setter
    def acknowledged(self, value: bool) -> None:
        self._acknowledged = bool(value)
        if value:
            self._timeouted = self._rejected = self._cancelled = False

    @property
    def rejected(self) -> bool | None:
        return self._rejected

    @rejected.setter
    def rejected(self, value: bool) -> None:
        self._rejected = bool(value)
        if value:
            self._timeouted = self._acknowledged = False
            self._cancelled = True

    @property
    def timeouted(self) -> bool | None:
        return self._timeouted

    @timeouted.setter
    def timeouted(self, value: bool) -> None:
        self._timeouted = bool(value)
        if value:
            self._acknowledged = self._rejected = False
            self._cancelled = True

    @property
    def duplicated(self) -> bool | None:
        return self._duplicated

    @duplicated.setter
    def duplicated(self, value: bool) -> None:
        self._duplicated = bool(value)

    @property
    def timestamp(self) -> float | None:
        return self._timestamp

    @timestamp.setter
    def timestamp(self, value: float) -> None:
        self._timestamp = value

    # -- options -----------------------------------------------------------------
    def _already_in(self, option: Option) -> bool:
        return any(o.number == option.number for o in self._options)

    def add_option(self, option: Option) -> None:
        """Append ``option``; a second copy of a non-repeatable option is a TypeError."""
        if not isinstance(option, Option):
            raise TypeError("add_option takes an Option")
        if not defines.option_item(option.number).repeatable and self._already_in(option):
            raise TypeError(f"Option : {option.name} is not repeatable")
        self._options.append(option)

    def _put(self, number: int, value: Any) -> None:
        option = Option()
        option.number = number
        option.value = value
        self.add_option(option)

    def _first(self, number: int) -> Option | None:
        for o in self._options:
            if o.number == number:
                return o
        return None

    def del_option(self, option: Option) -> None:
        while option in self._options:
            self._options.remove(option)

    def del_option_by_name(self, name: str) -> None:
        self._options = [o for o in self._options if o.name != name]

    def del_option_by_number(self, number: int) -> None:
        self._options = [o for o in self._options if o.number != number]

    @property
    def etag(self) -> list[bytes]:
        """The ETag values (a list; ``[]`` when there is none)."""
        return [o.value for o in self._options if o.number == defines.OptionRegistry.ETAG.number]

    @etag.setter
    def etag(self, etag: Any) -> None:
        for e in etag if isinstance(etag, list) else [etag]:
            self._put(defines.OptionRegistry.ETAG.number, e if isinstance(e, bytes) else str(e))

    @etag.deleter
    def etag(self) -> None:
        self.del_option_by_number(defines.OptionRegistry.ETAG.number)

    @property
    def content_type(self) -> int:
        """The Content-Format, 0 when there is none (as CoAPthon3)."""
        o = self._first(defines.OptionRegistry.CONTENT_TYPE.number)
        return 0 if o is None else int(o.value or 0)

    @content_type.setter
    def content_type(self, content_type: int) -> None:
        self.del_option_by_number(defines.OptionRegistry.CONTENT_TYPE.number)
        self._put(defines.OptionRegistry.CONTENT_TYPE.number, int(content_type))

    @content_type.deleter
    def content_type(self) -> None:
        self.del_option_by_number(defines.OptionRegistry.CONTENT_TYPE.number)

    @property
    def observe(self) -> int | None:
        o = self._first(defines.OptionRegistry.OBSERVE.number)
        return None if o is None else (o.value or 0)

    @observe.setter
    def observe(self, ob: int) -> None:
        self.del_option_by_number(defines.OptionRegistry.OBSERVE.number)
        self._put(defines.OptionRegistry.OBSERVE.number, ob)

    @observe.deleter
    def observe(self) -> None:
        self.del_option_by_number(defines.OptionRegistry.OBSERVE.number)

    def _block(self, number: int) -> tuple | None:
        o = self._first(number)
        return None if o is None else utils.parse_blockwise(o.raw_value or 0)

    @property
    def block1(self) -> tuple | None:
        """Block1 as ``(num, more, size)``, or None."""
        return self._block(defines.OptionRegistry.BLOCK1.number)

    @block1.setter
    def block1(self, value: tuple) -> None:
        self.del_option_by_number(defines.OptionRegistry.BLOCK1.number)
        self._put(defines.OptionRegistry.BLOCK1.number, _block_value(value))

    @block1.deleter
    def block1(self) -> None:
        self.del_option_by_number(defines.OptionRegistry.BLOCK1.number)

    @property
    def block2(self) -> tuple | None:
        """Block2 as ``(num, more, size)``, or None."""
        return self._block(defines.OptionRegistry.BLOCK2.number)

    @block2.setter
    def block2(self, value: tuple) -> None:
        self.del_option_by_number(defines.OptionRegistry.BLOCK2.number)
        self._put(defines.OptionRegistry.BLOCK2.number, _block_value(value))

    @block2.deleter
    def block2(self) -> None:
        self.del_option_by_number(defines.OptionRegistry.BLOCK2.number)

    @property
    def size1(self) -> int | None:
        o = self._first(defines.OptionRegistry.SIZE1.number)
        return None if o is None else int(o.raw_value or 0)

    @size1.setter
    def size1(self, value: int) -> None:
        self.del_option_by_number(defines.OptionRegistry.SIZE1.number)
        self._put(defines.OptionRegistry.SIZE1.number, value)

    @size1.deleter
    def size1(self) -> None:
        self.del_option_by_number(defines.OptionRegistry.SIZE1.number)

    @property
    def size2(self) -> int | None:
        o = self._first(defines.OptionRegistry.SIZE2.number)
        return None if o is None else int(o.raw_value or 0)

    @size2.setter
    def size2(self, value: int) -> None:
        self.del_option_by_number(defines.OptionRegistry.SIZE2.number)
        self._put(defines.OptionRegistry.SIZE2.number, value)

    @size2.deleter
    def size2(self) -> None:
        self.del_option_by_number(defines.OptionRegistry.SIZE2.number)

    # -- printing ----------------------------------------------------------------
    def _names(self) -> tuple[str, str, str]:
        inv_types = {v: k for k, v in defines.Types.items()}
        code = self._code if self._code is not None else 0
        token = binascii.hexlify(self._token).decode() if self._token is not None else "None"
        item = defines.Codes.LIST.get(code)
        return inv_types.get(self._type, str(self._type)), item.name if item else str(code), token

    @property
    def line_print(self) -> str:
        """The message on one line (what ``str()`` gives)."""
        mtype, code, token = self._names()
        msg = f"From {self._source}, To {self._destination}, {mtype}-{self._mid}, {code}-{token}, ["
        for opt in self._options:
            value = utils.parse_blockwise(opt.raw_value) if "Block" in opt.name else opt.value
            msg += f"{opt.name}: {value}, "
        msg += "]"
        if self._payload is not None:
            msg += f" {self._payload[:20]}...{len(self._payload)} bytes"
        else:
            msg += " No payload"
        return msg

    def __str__(self) -> str:
        return self.line_print

    def pretty_print(self) -> str:
        """The message on several lines, one field each."""
        mtype, code, token = self._names()
        msg = f"Source: {self._source}\nDestination: {self._destination}\n"
        msg += f"Type: {mtype}\nMID: {self._mid}\nCode: {code}\nToken: {token}\n"
        for opt in self._options:
            msg += str(opt)
        msg += f"Payload: \n{self._payload}\n"
        return msg
