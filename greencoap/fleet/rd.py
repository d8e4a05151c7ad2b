"""A small CoAP Resource Directory (RFC 9176) for tests, examples and labs.

    python -m greencoap.fleet.rd --host 127.0.0.1 --port 5683

:class:`ResourceDirectory` gives a :class:`~greencoap.Router` that
implements the RD's registration interface and simple lookup:

* ``POST /rd?ep=NAME[&d=SECTOR][&lt=LT][&base=URI][&et=TYPE]…`` with the
  endpoint's links (link-format) → 2.01 Created, Location-Path
  ``/reg/N``.  Registering the same ``ep`` (and ``d``) again replaces the
  registration and keeps its location (RFC 9176 §5.3).  No ``ep`` → 4.00.
* ``POST /reg/N[?lt=…&base=…]`` (an empty payload) refreshes it → 2.04;
  4.04 for a registration that is gone (removed, or its lifetime passed).
* ``DELETE /reg/N`` → 2.02 (4.04 when gone); ``GET /reg/N`` → its links.
* ``GET /rd-lookup/ep[?ep=…&d=…&et=…]`` → the registrations
  (``</reg/N>;ep="…";base="…";lt=…``), ``GET /rd-lookup/res[?rt=…]`` →
  every registered resource with its ``anchor`` (the endpoint's base).
* ``/.well-known/core`` lists ``</rd>;rt="core.rd"`` and the lookups.

Without ``base`` a registration's base is the request's source address (so
a device registering from its own socket is found where it serves).
Everything it got is kept in :attr:`ResourceDirectory.history` (kind,
endpoint, time) and counted in :attr:`ResourceDirectory.counts`, which is
what tests check.  It is not a full RD: no security, no groups, no
simple registration, no paging; it lives in the thread of its server.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from time import monotonic

from ..codes import Code
from ..linkformat import Link, LinkFormatError, filter_links, format_link_format, parse_link_format
from ..response import Request, Response
from ..router import Router

__all__ = ["Registration", "ResourceDirectory"]

DEFAULT_LIFETIME = 90000


@dataclass
class Registration:
    """One endpoint's registration at the RD."""

    id: int
    ep: str
    d: str | None
    base: str
    lifetime: int
    links: list[Link]
    params: dict[str, str] = field(default_factory=dict)
    registered: float = 0.0
    refreshed: float = 0.0
    source: tuple = ()

    @property
    def location(self) -> str:
        return f"/reg/{self.id}"

    def expired(self, now: float) -> bool:
        return now > self.refreshed + self.lifetime


class ResourceDirectory:
    """The RD's state and routes (see the module docstring)."""

    def __init__(self) -> None:
        self.registrations: dict[int, Registration] = {}
        self.by_name: dict[tuple[str, str | None], int] = {}
        self._next = 1
        #: ``(kind, ep, monotonic time)`` of every registration, refresh and removal
        self.history: list[tuple[str, str, float]] = []
        self.counts = {"register": 0, "refresh": 0, "remove": 0, "expired": 0, "refused": 0}
        self.router = Router()
        r = self.router
        r.add("POST", "/rd", self._register, rt="core.rd", ct=40)
        r.add("POST", "/reg/:id", self._refresh)
        r.add("DELETE", "/reg/:id", self._remove)
        r.add("GET", "/reg/:id", self._read, ct=40, enumerate=lambda: [])
        r.add("GET", "/rd-lookup/ep", self._lookup_ep, rt="core.rd-lookup-ep", ct=40)
        r.add("GET", "/rd-lookup/res", self._lookup_res, rt="core.rd-lookup-res", ct=40)

    # -- what tests read -----------------------------------------------------------
    def endpoints(self) -> dict[str, Registration]:
        """The live registrations by endpoint name."""
        self._expire(monotonic())
        return {reg.ep: reg for reg in self.registrations.values()}

    def __len__(self) -> int:
        self._expire(monotonic())
        return len(self.registrations)

    # -- the interface ------------------------------------------------------------
    def _register(self, request: Request) -> Response:
        now = monotonic()
        q = request.query
        ep = q.get("ep")
        if not ep:
            self.counts["refused"] += 1
            return Response(Code.BAD_REQUEST, b"ep= is required (RFC 9176 5.3)")
        try:
            lifetime = int(q.get("lt", DEFAULT_LIFETIME))
            if not 1 <= lifetime <= 0xFFFFFFFF:
                raise ValueError
        except ValueError:
            self.counts["refused"] += 1
            return Response(Code.BAD_REQUEST, b"lt must be 1..2**32-1 seconds")
        try:
            links = parse_link_format(request.payload.decode()) if request.payload else []
        except (UnicodeDecodeError, LinkFormatError) as e:
            self.counts["refused"] += 1
            return Response(Code.BAD_REQUEST, f"bad link-format: {e}".encode())
        d = q.get("d")
        base = q.get("base") or _source_base(request.peer)
        params = {k: v for k, v in q.items() if k not in ("ep", "d", "lt", "base")}
        key = (ep, d)
        self._expire(now)
        rid = self.by_name.get(key)
        if rid is None:
            rid = self._next
            self._next += 1
            self.by_name[key] = rid
        reg = Registration(rid, ep, d, base, lifetime, links, params, now, now, request.peer)
        self.registrations[rid] = reg
        self.counts["register"] += 1
        self.history.append(("register", ep, now))
        return Response(Code.CREATED, location_path=reg.location)

    def _get(self, id: str) -> Registration | None:
        self._expire(monotonic())
        try:
            return self.registrations.get(int(id))
        except ValueError:
            return None

    def _refresh(self, request: Request, id: str) -> Response:
        reg = self._get(id)
        if reg is None:
            return Response(Code.NOT_FOUND)
        q = request.query
        if "lt" in q:
            try:
                reg.lifetime = int(q["lt"])
            except ValueError:
                return Response(Code.BAD_REQUEST, b"lt must be a number")
        if "base" in q:
            reg.base = q["base"]
        reg.refreshed = monotonic()
        self.counts["refresh"] += 1
        self.history.append(("refresh", reg.ep, reg.refreshed))
        return Response(Code.CHANGED)

    def _remove(self, request: Request, id: str) -> Response:
        reg = self._get(id)
        if reg is None:
            return Response(Code.NOT_FOUND)
        self._drop(reg)
        self.counts["remove"] += 1
        self.history.append(("remove", reg.ep, monotonic()))
        return Response(Code.DELETED)

    def _read(self, request: Request, id: str) -> Response:
        reg = self._get(id)
        if reg is None:
            return Response(Code.NOT_FOUND)
        return Response(Code.CONTENT, format_link_format(reg.links).encode(), content_format=40)

    def _lookup_ep(self, request: Request) -> Response:
        self._expire(monotonic())
        links = []
        for reg in self.registrations.values():
            params = [("ep", reg.ep), ("base", reg.base), ("lt", str(reg.lifetime))]
            if reg.d is not None:
                params.append(("d", reg.d))
            params += [(k, v) for k, v in reg.params.items()]
            links.append(Link(reg.location, params))
        return self._answer(links, request)

    def _lookup_res(self, request: Request) -> Response:
        self._expire(monotonic())
        links = []
        for reg in self.registrations.values():
            for link in reg.links:
                params = [p for p in link.params if p[0] != "anchor"]
                links.append(Link(link.target, [*params, ("anchor", reg.base)]))
        return self._answer(links, request)

    @staticmethod
    def _answer(links: list[Link], request: Request) -> Response:
        query = list(request.query.items())
        if query:
            links = filter_links(links, query)
        return Response(Code.CONTENT, format_link_format(links).encode(), content_format=40)

    def _expire(self, now: float) -> None:
        for reg in [r for r in self.registrations.values() if r.expired(now)]:
            self._drop(reg)
            self.counts["expired"] += 1
            self.history.append(("expired", reg.ep, now))

    def _drop(self, reg: Registration) -> None:
        self.registrations.pop(reg.id, None)
        if self.by_name.get((reg.ep, reg.d)) == reg.id:
            del self.by_name[(reg.ep, reg.d)]


def _source_base(peer: tuple) -> str:
    host, port = peer[0], peer[1]
    if host.startswith("::ffff:"):
        host = host[7:]
    return f"coap://[{host}]:{port}" if ":" in host else f"coap://{host}:{port}"


def main(argv: list[str] | None = None) -> int:
    """``python -m greencoap.fleet.rd``: serve a test RD until Ctrl-C."""
    from ..server import Server

    ap = argparse.ArgumentParser(prog="greencoap rd", description="a small test Resource Directory")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=5683)
    args = ap.parse_args(argv)
    rd = ResourceDirectory()
    server = Server(rd.router, host=args.host, port=args.port, echo_factor=None).start()
    print(f"greencoap test RD on coap://{args.host}:{server.port}/rd", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
