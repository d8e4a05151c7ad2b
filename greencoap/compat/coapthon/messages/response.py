"""CoAPthon3's ``coapthon.messages.response.Response``: a message with the
response options as properties."""

from __future__ import annotations

from .. import defines
from .message import Message

_R = defines.OptionRegistry


class Response(Message):
    """A CoAP response."""

    @property
    def location_path(self) -> str:
        """Location-Path segments joined with ``/``."""
        return "/".join(str(o.value) for o in self._options if o.number == _R.LOCATION_PATH.number)

    @location_path.setter
    def location_path(self, path: str) -> None:
        path = path.strip("/").partition("?")[0]
        for segment in path.split("/"):
            self._put(_R.LOCATION_PATH.number, segment)

    @location_path.deleter
    def location_path(self) -> None:
        self.del_option_by_number(_R.LOCATION_PATH.number)

    @property
    def location_query(self) -> list[str]:
        """Location-Query items (a list, as CoAPthon3)."""
        return [o.value for o in self._options if o.number == _R.LOCATION_QUERY.number]

    @location_query.setter
    def location_query(self, value: str | list[str]) -> None:
        del self.location_query
        items = value.split("&") if isinstance(value, str) else list(value)
        for q in items:
            self._put(_R.LOCATION_QUERY.number, str(q))

    @location_query.deleter
    def location_query(self) -> None:
        self.del_option_by_number(_R.LOCATION_QUERY.number)

    @property
    def max_age(self) -> int:
        """Max-Age (60 when absent, as RFC 7252 §5.10.5 and CoAPthon3)."""
        o = self._first(_R.MAX_AGE.number)
        return _R.MAX_AGE.default if o is None else int(o.raw_value or 0)

    @max_age.setter
    def max_age(self, value: int) -> None:
        self.del_option_by_number(_R.MAX_AGE.number)
        self._put(_R.MAX_AGE.number, value)

    @max_age.deleter
    def max_age(self) -> None:
        self.del_option_by_number(_R.MAX_AGE.number)
