"""CoAPthon3's ``coapthon.messages.request.Request``: a message with the
request options as properties (``uri_path`` takes ``"a/b?x=1"`` and splits
off the query, as CoAPthon3 does)."""

from __future__ import annotations

from typing import Any

from .. import defines
from .message import Message

_R = defines.OptionRegistry


class Request(Message):
    """A CoAP request."""

    @property
    def uri_path(self) -> str:
        """The Uri-Path segments joined with ``/`` (no leading slash)."""
        return "/".join(str(o.value) for o in self._options if o.number == _R.URI_PATH.number)

    @uri_path.setter
    def uri_path(self, path: str) -> None:
        path = path.strip("/")
        path, sep, query = path.partition("?")
        for segment in path.split("/"):
            self._put(_R.URI_PATH.number, segment)
        if sep:
            self.uri_query = query

    @uri_path.deleter
    def uri_path(self) -> None:
        self.del_option_by_number(_R.URI_PATH.number)

    @property
    def uri_query(self) -> str:
        """The Uri-Query items joined with ``&``."""
        return "&".join(str(o.value) for o in self._options if o.number == _R.URI_QUERY.number)

    @uri_query.setter
    def uri_query(self, value: str) -> None:
        del self.uri_query
        for q in value.split("&"):
            self._put(_R.URI_QUERY.number, str(q))

    @uri_query.deleter
    def uri_query(self) -> None:
        self.del_option_by_number(_R.URI_QUERY.number)

    @property
    def accept(self) -> int | None:
        o = self._first(_R.ACCEPT.number)
        return None if o is None else o.value

    @accept.setter
    def accept(self, value: int) -> None:
        if value in defines.Content_types.values():
            self.del_option_by_number(_R.ACCEPT.number)
            self._put(_R.ACCEPT.number, value)

    @accept.deleter
    def accept(self) -> None:
        self.del_option_by_number(_R.ACCEPT.number)

    @property
    def if_match(self) -> list[Any]:
        """If-Match values (``[]`` when absent; an empty one reads None)."""
        return [o.value for o in self._options if o.number == _R.IF_MATCH.number]

    @if_match.setter
    def if_match(self, values: list[Any]) -> None:
        for v in values if isinstance(values, list) else [values]:
            self._put(_R.IF_MATCH.number, v)

    @if_match.deleter
    def if_match(self) -> None:
        self.del_option_by_number(_R.IF_MATCH.number)

    @property
    def if_none_match(self) -> bool:
        return self._first(_R.IF_NONE_MATCH.number) is not None

    @if_none_match.setter
    def if_none_match(self, value: bool) -> None:
        self.del_option_by_number(_R.IF_NONE_MATCH.number)
        if value:
            self._put(_R.IF_NONE_MATCH.number, None)

    def add_if_none_match(self) -> None:
        """Add If-None-Match."""
        self.if_none_match = True

    @if_none_match.deleter
    def if_none_match(self) -> None:
        self.del_option_by_number(_R.IF_NONE_MATCH.number)

    def add_no_response(self) -> None:
        """No-Response: 26 (no 2.xx, no 4.xx, no 5.xx: RFC 7967)."""
        self.del_option_by_number(_R.NO_RESPONSE.number)
        self._put(_R.NO_RESPONSE.number, 26)

    @property
    def no_response(self) -> int | None:
        o = self._first(_R.NO_RESPONSE.number)
        return None if o is None else o.value

    @no_response.setter
    def no_response(self, value: int) -> None:
        self.del_option_by_number(_R.NO_RESPONSE.number)
        self._put(_R.NO_RESPONSE.number, value)

    @property
    def proxy_uri(self) -> str | None:
        o = self._first(_R.PROXY_URI.number)
        return None if o is None else o.value

    @proxy_uri.setter
    def proxy_uri(self, value: str) -> None:
        self.del_option_by_number(_R.PROXY_URI.number)
        self._put(_R.PROXY_URI.number, str(value))

    @proxy_uri.deleter
    def proxy_uri(self) -> None:
        self.del_option_by_number(_R.PROXY_URI.number)

    @property
    def proxy_schema(self) -> str | None:
        o = self._first(_R.PROXY_SCHEME.number)
        return None if o is None else o.value

    @proxy_schema.setter
    def proxy_schema(self, value: str) -> None:
        self.del_option_by_number(_R.PROXY_SCHEME.number)
        self._put(_R.PROXY_SCHEME.number, str(value))

    @proxy_schema.deleter
    def proxy_schema(self) -> None:
        self.del_option_by_number(_R.PROXY_SCHEME.number)
