"""CoAPthon3's ``coapthon.messages.option.Option``: one option, its value
converted by the option's registered type (int, str or bytes)."""

from __future__ import annotations

from typing import Any

from .. import defines
from ..utils import byte_len


class Option:
    """One CoAP option: ``number`` and ``value`` (typed by the registry)."""

    def __init__(self) -> None:
        self._number: int | None = None
        self._value: Any = None

    @property
    def number(self) -> int | None:
        return self._number

    @number.setter
    def number(self, value: int) -> None:
        self._number = value

    @property
    def value(self) -> Any:
        """The value: an int for uint options (the registry's default when
        empty), a str for string options, bytes otherwise."""
        item = defines.option_item(self._number)
        if item.value_type == defines.INTEGER:
            v = self._value
            if v is None or byte_len(v) == 0:
                return item.default  # an empty uint: the registry's default, as CoAPthon3
            return int(v)
        return self._value

    @value.setter
    def value(self, value: Any) -> None:
        kind = defines.option_item(self._number).value_type
        if kind == defines.INTEGER:
            value = 0 if value is None or value == b"" else int(value)
        elif kind == defines.STRING:
            if isinstance(value, (bytes, bytearray)):
                value = bytes(value).decode("utf-8")
            elif not isinstance(value, str):
                value = str(value)
        elif value is not None and not isinstance(value, bytes):
            value = bytes(value, "utf-8") if isinstance(value, str) else bytes(value)
        self._value = value

    @property
    def raw_value(self) -> Any:
        """The value as stored (``value`` applies the registry's default)."""
        return self._value

    @property
    def length(self) -> int:
        """The value's length on the wire."""
        if isinstance(self._value, int):
            return byte_len(self._value)
        if self._value is None:
            return 0
        if isinstance(self._value, str):
            return len(self._value.encode("utf-8"))
        return len(self._value)

    def is_safe(self) -> bool:
        """True unless the option is part of the request URI, Max-Age or Proxy-*."""
        return self._number not in (3, 7, 11, 14, 15, 35, 39)

    @property
    def name(self) -> str:
        return defines.option_item(self._number).name

    def __str__(self) -> str:
        return f"{self.name}: {self.value}\n"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Option):
            return NotImplemented
        return self._number == other._number and self._value == other._value

    def __hash__(self) -> int:
        return hash((self._number, self._value if not isinstance(self._value, list) else None))

    def __repr__(self) -> str:
        return f"<Option {self.name}={self._value!r}>"
