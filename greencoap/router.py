"""Routing requests to handler functions (layer 4).

    router = Router()

    @router.get("/sensors/:id", rt="temperature")
    def sensor(request, id): ...

A route is a method and a path pattern; ``:name`` segments match any one
segment and are passed to the handler as keyword arguments; a final
``*name`` segment matches the rest of the path (possibly empty) as a
``/``-joined string.  Static routes are found with one dict lookup.  Keyword
arguments given to the decorators are kept as link attributes for
``.well-known/core``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from .codes import Code
from .linkformat import Link

Handler = Callable[..., Any]

#: Route keyword arguments that configure the route rather than describe it
#: (everything else is a link attribute for ``.well-known/core``):
#: ``observable``, and for observable routes ``notifications="con"`` (every
#: notification confirmable), ``con_every=N`` (every N-th one; the server's
#: ``con_every`` otherwise) and ``on_observer_dropped=callable(request, why)``;
#: ``etag=callable(request, **params)`` (the current ETag, for preconditions);
#: ``enumerate=callable()`` (the parameters of a template route's resources,
#: for ``.well-known/core``).  ``ct`` is both: a link attribute and the
#: Content-Formats the route produces (Accept negotiation).
ROUTE_SETTINGS = frozenset(
    {"observable", "notifications", "con_every", "on_observer_dropped", "etag", "enumerate"}
)


@dataclass
class Route:
    """One registered route: method, path pattern, handler, link attributes."""

    method: Code
    path: str
    segments: tuple[str, ...]
    handler: Handler
    attrs: dict[str, Any] = field(default_factory=dict)
    observable: bool = False  # a generator function: each yielded value is a notification
    #: ``etag=callable(request, **params)``: the resource's current ETag (None:
    #: it does not exist), for the server's preconditions (RFC 7252 §5.10.8-9)
    etag_of: Handler | None = None
    #: the Content-Formats the route declares it produces (``ct=``), or None
    formats: tuple[int, ...] | None = None

    #: a segment is a ``:param`` or ``*wildcard`` (set from ``segments``)
    dynamic: bool = field(init=False)

    def __post_init__(self) -> None:
        self.dynamic = any(s[:1] in (":", "*") for s in self.segments)

    def match(self, segments: tuple[str, ...] | list[str]) -> dict[str, str] | None:
        """The path parameters if ``segments`` match this route, else None."""
        pat = self.segments
        params = {}
        for i, p in enumerate(pat):
            if p[:1] == "*":
                params[p[1:] or "rest"] = "/".join(segments[i:])
                return params
            if i >= len(segments):
                return None
            if p[:1] == ":":
                params[p[1:]] = segments[i]
            elif p != segments[i]:
                return None
        return params if len(segments) == len(pat) else None


def _fill(segments: tuple[str, ...], params: dict) -> str:
    """The path of one resource of a template route, from its parameters."""
    out = []
    for seg in segments:
        if seg[:1] in (":", "*"):
            value = str(params[seg[1:] or "rest"])
            out.append(quote(value, safe="/" if seg[:1] == "*" else ""))
        else:
            out.append(seg)
    return "/" + "/".join(out)


def split_path(path: str) -> tuple[str, ...]:
    """``"/a/b"`` → ``("a", "b")``; ``"/"`` → ``()``."""
    path = path.strip("/")
    return tuple(path.split("/")) if path else ()


class Router:
    """Maps (method, path) to handlers; see the module docstring."""

    def __init__(self) -> None:
        self.routes: list[Route] = []
        self._static: dict[tuple[str, ...], dict[int, Route]] = {}
        self._static_raw: dict[tuple[bytes, ...], dict[int, Route]] = {}
        self._dynamic: list[Route] = []

    def add(self, method: int | str, path: str, handler: Handler, **attrs: Any) -> Route:
        """Register ``handler`` for ``method`` on ``path`` (decorators call this)."""
        if isinstance(method, str):
            method = Code[method.upper()]
        method = Code(method)
        if not method.is_request:
            raise ValueError(f"{method} is not a request method")
        segs = split_path(path)
        for i, s in enumerate(segs):
            if s[:1] == "*" and i != len(segs) - 1:
                raise ValueError(f"{path!r}: a *wildcard must be the last segment")
        observable = inspect.isgeneratorfunction(handler) or bool(attrs.get("observable"))
        ct = attrs.get("ct")
        formats = (
            None
            if ct is None
            else tuple(int(c) for c in (ct if isinstance(ct, (list, tuple)) else (ct,)))
        )
        route = Route(
            method,
            "/" + "/".join(segs),
            segs,
            handler,
            attrs,
            observable,
            attrs.get("etag"),
            formats,
        )
        if route.dynamic:
            self._dynamic.append(route)
        else:
            methods = self._static.setdefault(segs, {})
            if method in methods:
                raise ValueError(f"{method} {route.path} is already routed")
            methods[int(method)] = route
            self._static_raw[tuple(s.encode() for s in segs)] = methods
        self.routes.append(route)
        return route

    def remove(self, method: int | str, path: str) -> Route:
        """Take the route for ``method`` on ``path`` away (a resource that
        ceased to exist): it answers 4.04 (or 4.05) and leaves
        ``.well-known/core`` from the next request on.  Raises KeyError when
        there is no such route."""
        if isinstance(method, str):
            method = Code[method.upper()]
        segs = split_path(path)
        found = [r for r in self.routes if r.method == method and r.segments == segs]
        if not found:
            raise KeyError(f"no route for {Code(method)} {path!r}")
        r = found[0]
        self.routes.remove(r)
        if r.dynamic:
            self._dynamic.remove(r)
        else:
            methods = self._static[segs]
            del methods[int(method)]
            if not methods:
                del self._static[segs]
                del self._static_raw[tuple(s.encode() for s in segs)]
        return r

    def route(self, path: str, methods: tuple = ("GET",), **attrs: Any) -> Callable:
        """Decorator registering a handler for several methods."""

        def deco(fn: Handler) -> Handler:
            for m in methods:
                self.add(m, path, fn, **attrs)
            return fn

        return deco

    def _deco(self, method: Code, path: str, attrs: dict) -> Callable:
        def deco(fn: Handler) -> Handler:
            self.add(method, path, fn, **attrs)
            return fn

        return deco

    def get(self, path: str, **attrs: Any) -> Callable:
        """``@router.get("/path", rt=..., ct=...)`` registers a GET handler."""
        return self._deco(Code.GET, path, attrs)

    def post(self, path: str, **attrs: Any) -> Callable:
        return self._deco(Code.POST, path, attrs)

    def put(self, path: str, **attrs: Any) -> Callable:
        return self._deco(Code.PUT, path, attrs)

    def delete(self, path: str, **attrs: Any) -> Callable:
        return self._deco(Code.DELETE, path, attrs)

    def fetch(self, path: str, **attrs: Any) -> Callable:
        return self._deco(Code.FETCH, path, attrs)

    def patch(self, path: str, **attrs: Any) -> Callable:
        return self._deco(Code.PATCH, path, attrs)

    def ipatch(self, path: str, **attrs: Any) -> Callable:
        return self._deco(Code.IPATCH, path, attrs)

    def links(self) -> list[Link]:
        """The router's resources as RFC 6690 links, for ``/.well-known/core``.

        One link per path (several methods share it), with the attributes
        given to the decorators (``rt``, ``if_``, ``ct``, ``sz``, ``title``, …)
        and ``obs`` for observable handlers (generator functions).  A route
        with ``:params`` or a ``*wildcard`` is a template, not a resource:
        it is listed only through its ``enumerate=callable()`` hook, which
        gives the parameters of the resources that exist now (dicts, e.g.
        ``{"id": "7"}``), each listed as its own link.
        """
        seen: dict[str, Link] = {}
        for r in self.routes:
            if r.path == "/.well-known/core":
                continue
            attrs = {k: v for k, v in r.attrs.items() if k not in ROUTE_SETTINGS}
            if r.observable:
                attrs["obs"] = True
            if r.dynamic:
                hook = r.attrs.get("enumerate")
                paths = [] if hook is None else [_fill(r.segments, p) for p in hook()]
            else:
                paths = [r.path]
            for path in paths:
                link = seen.get(path)
                if link is None:
                    seen[path] = Link(path, **attrs)
                else:
                    for name, value in Link(path, **attrs).params:
                        if name not in link:
                            link.params.append((name, value))
        return list(seen.values())

    def resolve_raw(self, method: int, raw: tuple[bytes, ...]) -> tuple[Route, dict]:
        """:meth:`resolve` for Uri-Path option values as received (bytes).

        Static routes are found without decoding; raises UnicodeDecodeError
        for a path that is not UTF-8.
        """
        methods = self._static_raw.get(raw)
        if methods is not None:
            r = methods.get(method)
            if r is not None:
                return r, {}
        return self.resolve(method, tuple(v.decode() for v in raw))

    def resolve(self, method: int, segments: tuple[str, ...] | list[str]) -> tuple[Route, dict]:
        """Find the route for a request.

        Returns ``(route, params)``; raises ``LookupError`` carrying
        :attr:`Code.NOT_FOUND` or :attr:`Code.METHOD_NOT_ALLOWED`.
        """
        segments = tuple(segments)
        methods = self._static.get(segments)
        if methods is not None:
            r = methods.get(method)
            if r is not None:
                return r, {}
        found_path = methods is not None
        for r in self._dynamic:
            params = r.match(segments)
            if params is not None:
                if r.method == method:
                    return r, params
                found_path = True
        raise LookupError(Code.METHOD_NOT_ALLOWED if found_path else Code.NOT_FOUND)
