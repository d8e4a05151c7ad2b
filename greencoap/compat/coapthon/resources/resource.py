"""CoAPthon3's ``coapthon.resources.resource.Resource``: the base class of a
legacy server's resources.

A subclass overrides ``render_GET/PUT/POST/DELETE(request)`` (or the
``..._advanced(request, response)`` forms) with CoAPthon3's return
conventions, which :mod:`greencoap.compat.coapthon.server.coap` honours:

* GET/PUT/POST: the resource (``self``, or for POST a new resource: a
  child created at the request's path); ``(resource, callback)`` for a
  separate response (``callback(request)`` gives the resource; greencoap
  sends the empty ACK itself when the work takes long); the advanced forms
  ``(resource, response)`` and ``(resource, response, callback)``;
* DELETE: ``True``, or ``(resource, callback)`` / ``(True, response)``.

Attributes as CoAPthon3's: ``payload`` (kept per content type; ``payload =
(content_type, text)`` adds one), ``content_type`` (link-format ``ct``
list), ``etag``, ``max_age``, ``resource_type``, ``interface_type``,
``maximum_size_estimated``, ``observe_count``, ``changed``, ``deleted``,
``visible``, ``observable``, ``allow_children``, ``attributes``,
``location_query``.
"""

from __future__ import annotations

from typing import Any

from .. import defines

_TEXT = defines.Content_types["text/plain"]


class Resource:
    """One resource of a legacy server (see the module docstring)."""

    def __init__(
        self,
        name: str,
        coap_server: Any = None,
        visible: bool = True,
        observable: bool = True,
        allow_children: bool = True,
    ) -> None:
        self._attributes: dict[str, Any] = {}
        self.name = name
        self.path: str | None = None
        self._visible = visible
        self._observable = observable
        if observable:
            self._attributes["obs"] = ""
        self._allow_children = allow_children
        self._observe_count = 1
        self._payload: dict[int, Any] = {}
        self._content_type: int | None = None
        self._etag: list[bytes] = []
        self._location_query: Any = []
        self._max_age: int | None = None
        self._coap_server = coap_server
        self._deleted = False
        self._changed = False

    # -- state ---------------------------------------------------------------------
    @property
    def deleted(self) -> bool:
        return self._deleted

    @deleted.setter
    def deleted(self, b: bool) -> None:
        self._deleted = b

    @property
    def changed(self) -> bool:
        return self._changed

    @changed.setter
    def changed(self, b: bool) -> None:
        self._changed = b

    @property
    def etag(self) -> bytes | None:
        """The current (last set) ETag, or None."""
        return self._etag[-1] if self._etag else None

    @etag.setter
    def etag(self, etag: Any) -> None:
        self._etag.append(etag if isinstance(etag, bytes) else bytes(str(etag), "utf-8"))

    @property
    def location_query(self) -> Any:
        return self._location_query

    @location_query.setter
    def location_query(self, lq: Any) -> None:
        self._location_query = lq

    @location_query.deleter
    def location_query(self) -> None:
        self._location_query = []

    @property
    def max_age(self) -> int | None:
        return self._max_age

    @max_age.setter
    def max_age(self, ma: int | None) -> None:
        self._max_age = ma

    @property
    def payload(self) -> Any:
        """The representation for the content type asked for
        (``actual_content_type``; KeyError when there is none), else the
        text/plain one, else ``(content_type, payload)`` of the first."""
        if self._content_type is not None:
            try:
                return self._payload[self._content_type]
            except KeyError:
                raise KeyError("Content-Type not available") from None
        if _TEXT in self._payload:
            return self._payload[_TEXT]
        if not self._payload:
            return None
        first = next(iter(self._payload))
        return first, self._payload[first]

    @payload.setter
    def payload(self, p: Any) -> None:
        if isinstance(p, tuple):
            content_type, value = p
            self.actual_content_type = content_type
            self._payload[content_type] = value
        else:
            self._payload = {_TEXT: p}

    @property
    def attributes(self) -> dict[str, Any]:
        """Link-format attributes for ``.well-known/core``."""
        return self._attributes

    @attributes.setter
    def attributes(self, att: dict[str, Any]) -> None:
        self._attributes = att

    @property
    def visible(self) -> bool:
        return self._visible

    @property
    def observable(self) -> bool:
        return self._observable

    @property
    def allow_children(self) -> bool:
        return self._allow_children

    @property
    def observe_count(self) -> int:
        return self._observe_count

    @observe_count.setter
    def observe_count(self, v: int) -> None:
        self._observe_count = int(v) % 65000

    @property
    def actual_content_type(self) -> int | None:
        return self._content_type

    @actual_content_type.setter
    def actual_content_type(self, act: int | None) -> None:
        self._content_type = act

    # -- link-format attributes ---------------------------------------------------------
    @property
    def content_type(self) -> str:
        """``"ct=0 50"`` for the declared content types, ``""`` when none."""
        formats = self._attributes.get("ct")
        return "ct=" + " ".join(str(v) for v in formats) if formats else ""

    @content_type.setter
    def content_type(self, value: Any) -> None:
        for ct in [value] if isinstance(value, (str, int)) else list(value):
            self.add_content_type(ct)

    def add_content_type(self, ct: Any) -> None:
        """Declare content type ``ct`` (a number or a name from ``Content_types``)."""
        if isinstance(ct, str):
            ct = defines.Content_types[ct]
        self._attributes.setdefault("ct", []).append(ct)

    def _quoted(self, key: str) -> str:
        value = self._attributes.get(key)
        return "" if value is None else f'{key}="{value}"'

    @property
    def resource_type(self) -> str:
        return self._quoted("rt")

    @resource_type.setter
    def resource_type(self, rt: Any) -> None:
        self._attributes["rt"] = str(rt)

    @property
    def interface_type(self) -> str:
        return self._quoted("if")

    @interface_type.setter
    def interface_type(self, ift: Any) -> None:
        self._attributes["if"] = str(ift)

    @property
    def maximum_size_estimated(self) -> str:
        return self._quoted("sz")

    @maximum_size_estimated.setter
    def maximum_size_estimated(self, sz: Any) -> None:
        self._attributes["sz"] = str(sz)

    @property
    def observing(self) -> str | None:
        return "obs" if self._observable else None

    # -- helpers --------------------------------------------------------------------------
    def init_resource(self, request: Any, res: Resource) -> Resource:
        """Fill a new (child) resource from a request: its payload and query."""
        res.location_query = request.uri_query
        res.payload = (request.content_type, request.payload)
        return res

    def edit_resource(self, request: Any) -> None:
        """Take a request's payload (and query) as this resource's new state."""
        self.location_query = request.uri_query
        self.payload = (request.content_type, request.payload)

    # -- what subclasses override ---------------------------------------------------------------
    def render_GET(self, request: Any) -> Any:  # noqa: N802 - CoAPthon3's names
        raise NotImplementedError

    def render_GET_advanced(self, request: Any, response: Any) -> Any:  # noqa: N802
        raise NotImplementedError

    def render_PUT(self, request: Any) -> Any:  # noqa: N802
        raise NotImplementedError

    def render_PUT_advanced(self, request: Any, response: Any) -> Any:  # noqa: N802
        raise NotImplementedError

    def render_POST(self, request: Any) -> Any:  # noqa: N802
        raise NotImplementedError

    def render_POST_advanced(self, request: Any, response: Any) -> Any:  # noqa: N802
        raise NotImplementedError

    def render_DELETE(self, request: Any) -> Any:  # noqa: N802
        raise NotImplementedError

    def render_DELETE_advanced(self, request: Any, response: Any) -> Any:  # noqa: N802
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<Resource {self.name} at {self.path}>"
