"""The ETSI CoAP#4 plugtest resources on a greencoap server.

Written with greencoap's public API only (:class:`~greencoap.Router`,
:class:`~greencoap.Server`, :class:`~greencoap.Response`,
:class:`~greencoap.Code`, the :class:`~greencoap.Request` properties,
``spawn``/``sleep``): nothing here reaches into the library.  In process::

    srv = PlugtestServer(port=0, obs_period=0.1).start()   # on this thread's hub
    ... srv.uri ...
    srv.stop()

or as a script (prints ``ready``, stops on SIGTERM/SIGINT)::

    python -m tests.plugtest.server --port 5683 [--obs-period 1] [--max-age 5]

The server is built with ``echo_factor=None``: greencoap's amplification
mitigation (RFC 9175 §2.4) answers 4.01 with an Echo option before it sends
an address it has not verified a response more than three times the size of
the request, and aiocoap's client (0.4.17) does not answer Echo outside
OSCORE, so with the default it would see 4.01 for ``/large`` and
``/.well-known/core``.  The plugtest configuration has no spoofed clients.

Resources (what each TD needs):

==========================  ===============================================
``/test``                   GET 2.05 text; PUT 2.04 (2.01 after a DELETE);
                            POST 2.01 with Location-Path
                            ``location1/location2/location3``; DELETE 2.02
``/seg1/seg2/seg3``         GET 2.05
``/query``                  GET 2.05 echoing the Uri-Query options
``/separate``               GET, answered after :data:`SEPARATE_TIME` s: an
                            empty ACK first (the server's ``separate_delay``)
``/large``                  GET, :data:`LARGE_SIZE` bytes, block-wise
``/large-update``           PUT (Block1) 2.04; GET returns it
``/large-create``           POST (Block1) 2.01, Location-Path
                            ``large-create/N``; GET ``/large-create/N``
``/large-post``             POST (Block1) 2.04 with a large (Block2) answer
``/obs``                    observable, CON notifications, changes every
                            ``obs_period`` s; PUT updates it (a new
                            Content-Format too), DELETE removes it
``/obs-non``                observable, NON notifications (every 20th CON)
``/obs-large``              observable, CON, 1,100-1,550 bytes (the size
                            changes with each state)
``/validate``               GET with ETag (2.03 by ``etag=``); PUT updates it
                            (If-Match: 4.12 when the ETag is not current)
``/create1``                PUT If-None-Match: 2.01, then 4.12; DELETE
``/location-query``         POST 2.01 with Location-Query ``first=1&second=2``
``/multi-format``           GET text/plain (0) or application/xml (41) by
                            Accept (``ct=[0, 41]``: 4.06 for others)
``/link1`` ... ``/link3``   rt="Type1 Type2" / "Type2 Type3" / "Type1 Type3",
                            if="If1" / "If2" / "foo"; sz on /link2 and /large
``/path``                   ct=40: the links of ``/path/sub1`` ... ``sub3``
                            (``/path/sub3`` has rt="", LINK_04's fourth group)
==========================  ===============================================
"""

from __future__ import annotations

import argparse
import signal
import sys
from dataclasses import dataclass, field
from typing import Any

from greencoap import Code, Link, Response, Router, Server, sleep, spawn

TEXT = 0
LINK_FORMAT = 40
XML = 41

#: Seconds between two states of the observable resources (the TDs say
#: "changes periodically, e.g. every 5 s"; the tests use 0.1).
OBS_PERIOD = 2.0
#: Max-Age of the observable resources' representations (seconds).
OBS_MAX_AGE = 10
#: How long ``/separate`` takes to answer (seconds).
SEPARATE_TIME = 1.0
#: After this long a handler still running gets its CON request an empty ACK.
SEPARATE_DELAY = 0.5
#: Size of ``/large`` (over 1,024 bytes: block-wise in any case).
LARGE_SIZE = 1300

TEST_BODY = b"Hello from the plugtest server: /test"


def pattern(tag: str, size: int) -> bytes:
    """``size`` bytes of 16-byte lines ``"%04x" + tag`` (tag cut or padded
    to 11 characters), so that a missing, repeated or misplaced block shows."""
    tag = (tag + "-" * 11)[:11]
    units = (size + 15) // 16
    return b"".join(b"%04x%s\n" % (i & 0xFFFF, tag.encode()) for i in range(units))[:size]


LARGE_BODY = pattern("/large", LARGE_SIZE)


def obs_large_size(n: int) -> int:
    """The size of ``/obs-large``'s ``n``-th state: 1,100 to 1,550 bytes."""
    return 1100 + 150 * (n % 4)


def obs_large_body(n: int) -> bytes:
    return pattern(f"obs{n}", obs_large_size(n))


@dataclass
class Observed:
    """The state of one observable resource."""

    path: str
    n: int = 0
    #: the representation set by a PUT (``None``: the counter's text)
    body: bytes | None = None
    ct: int = TEXT
    exists: bool = True

    def representation(self) -> bytes:
        if self.path == "/obs-large":
            return obs_large_body(self.n) if self.body is None else self.body
        return b"%s %d" % (self.path.encode(), self.n) if self.body is None else self.body


@dataclass
class Resources:
    """Everything the resources keep (tests may read it)."""

    test: bytes | None = TEST_BODY
    validate: bytes = b"validate v1"
    validate_version: int = 1
    create1: bytes | None = None
    large_update: bytes = b""
    created: dict[str, bytes] = field(default_factory=dict)
    observed: dict[str, Observed] = field(default_factory=dict)

    @property
    def validate_etag(self) -> bytes:
        return b"v%d" % self.validate_version


class PlugtestServer:
    """A greencoap :class:`~greencoap.Server` hosting the plugtest resources.

    ``obs_period`` is the time between two states of ``/obs``, ``/obs-non``
    and ``/obs-large``; ``max_age`` their Max-Age; ``separate_time`` how long
    ``/separate`` takes; ``separate_delay`` and the other keyword arguments
    go to :class:`~greencoap.Server` (``echo_factor`` is ``None``: see the
    module docstring).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        obs_period: float = OBS_PERIOD,
        max_age: int = OBS_MAX_AGE,
        separate_time: float = SEPARATE_TIME,
        separate_delay: float = SEPARATE_DELAY,
        **server_kwargs: Any,
    ) -> None:
        self.obs_period = obs_period
        self.max_age = max_age
        self.separate_time = separate_time
        self.state = Resources()
        for path in ("/obs", "/obs-non", "/obs-large"):
            self.state.observed[path] = Observed(path)
        server_kwargs.setdefault("echo_factor", None)
        self.router = self._build_router()
        self.server = Server(
            self.router, host=host, port=port, separate_delay=separate_delay, **server_kwargs
        )
        self._ticker: Any = None

    # -- life cycle ---------------------------------------------------------
    @property
    def port(self) -> int:
        return self.server.port

    @property
    def uri(self) -> str:
        return f"coap://{self.server.host}:{self.server.port}"

    @property
    def stats(self) -> dict[str, int]:
        return self.server.stats

    def start(self) -> PlugtestServer:
        self.server.start()
        if self._ticker is None:
            self._ticker = spawn(self._tick)
        return self

    def stop(self) -> None:
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.kill(block=False)
        self.server.stop()

    def __enter__(self) -> PlugtestServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _tick(self) -> None:
        """Every ``obs_period`` s: a new state of each observable resource."""
        while True:
            sleep(self.obs_period)
            for path, obs in self.state.observed.items():
                if obs.exists:
                    obs.n += 1
                    self.server.notify(path)

    # -- resources ----------------------------------------------------------
    def _build_router(self) -> Router:
        router = Router()
        st = self.state

        # TD_COAP_CORE_01..08, 10..15, 18: /test
        @router.get("/test")
        def test_get(request):
            if st.test is None:
                return Response(Code.NOT_FOUND)
            return Response(Code.CONTENT, st.test, content_format=TEXT)

        @router.put("/test")
        def test_put(request):
            created = st.test is None
            st.test = request.payload
            return Response(Code.CREATED if created else Code.CHANGED)

        @router.post("/test")
        def test_post(request):
            return Response(Code.CREATED, location_path=["location1", "location2", "location3"])

        @router.delete("/test")
        def test_delete(request):
            st.test = TEST_BODY  # the plugtest's /test stays available for the next TD
            return Response(Code.DELETED)

        @router.get("/seg1/seg2/seg3")
        def segments(request):
            return Response(Code.CONTENT, b"Hello from /seg1/seg2/seg3", content_format=TEXT)

        @router.get("/query")
        def query(request):
            items = request.message.uri_query
            return Response(Code.CONTENT, "&".join(items) or "no query", content_format=TEXT)

        # TD_COAP_CORE_09, 11, 16, 17: the handler parks; the server sends an empty
        # ACK to a CON request after separate_delay, then the response as a CON
        @router.get("/separate")
        def separate(request):
            sleep(self.separate_time)
            return Response(Code.CONTENT, b"Hello from /separate, late", content_format=TEXT)

        # TD_COAP_CORE_19
        @router.post("/location-query")
        def location_query(request):
            return Response(Code.CREATED, location_query=["first=1", "second=2"])

        # TD_COAP_CORE_20
        @router.get("/multi-format", ct=[TEXT, XML])
        def multi_format(request):
            if request.accept == XML:
                return Response(Code.CONTENT, b"<value>multi-format</value>", content_format=XML)
            return Response(Code.CONTENT, b"multi-format", content_format=TEXT)

        # TD_COAP_CORE_21, 22: the server answers 2.03 and 4.12 from the declared ETag
        @router.get("/validate", etag=lambda request: st.validate_etag)
        def validate_get(request):
            return Response(Code.CONTENT, st.validate, content_format=TEXT, etag=st.validate_etag)

        @router.put("/validate", etag=lambda request: st.validate_etag)
        def validate_put(request):
            st.validate = request.payload
            st.validate_version += 1
            return Response(Code.CHANGED, etag=st.validate_etag)

        # TD_COAP_CORE_23: If-None-Match on a resource that exists -> 4.12 (by etag=)
        def create1_etag(request):
            return None if st.create1 is None else b"c1"

        @router.get("/create1", etag=create1_etag)
        def create1_get(request):
            if st.create1 is None:
                return Response(Code.NOT_FOUND)
            return Response(Code.CONTENT, st.create1, content_format=TEXT, etag=b"c1")

        @router.put("/create1", etag=create1_etag)
        def create1_put(request):
            created = st.create1 is None
            st.create1 = request.payload
            return Response(Code.CREATED if created else Code.CHANGED)

        @router.delete("/create1")
        def create1_delete(request):
            st.create1 = None
            return Response(Code.DELETED)

        # TD_COAP_BLOCK_01, 02, 06 (and LINK_06: sz)
        @router.get("/large", sz=LARGE_SIZE)
        def large(request):
            return Response(Code.CONTENT, LARGE_BODY, content_format=TEXT)

        # TD_COAP_BLOCK_03
        @router.put("/large-update")
        def large_update_put(request):
            st.large_update = request.payload
            return Response(Code.CHANGED)

        @router.get("/large-update")
        def large_update_get(request):
            return Response(Code.CONTENT, st.large_update, content_format=TEXT)

        # TD_COAP_BLOCK_04
        @router.post("/large-create")
        def large_create(request):
            name = str(len(st.created) + 1)
            st.created[name] = request.payload
            return Response(Code.CREATED, location_path=["large-create", name])

        @router.get("/large-create/:name")
        def large_created(request, name):
            body = st.created.get(name)
            if body is None:
                return Response(Code.NOT_FOUND)
            return Response(Code.CONTENT, body, content_format=TEXT)

        # TD_COAP_BLOCK_05: Block1 in, a large answer (Block2) out
        @router.post("/large-post")
        def large_post(request):
            return Response(Code.CHANGED, request.payload.upper(), content_format=TEXT)

        # TD_COAP_OBS_*: push-style observables, re-rendered by server.notify()
        def observable(path: str, **attrs: Any) -> None:
            obs = st.observed[path]

            @router.get(path, observable=True, **attrs)
            def obs_get(request):
                if not obs.exists:
                    return Response(Code.NOT_FOUND)
                return Response(
                    Code.CONTENT, obs.representation(), content_format=obs.ct, max_age=self.max_age
                )

            @router.put(path)
            def obs_put(request):
                created = not obs.exists
                obs.exists = True
                obs.body = request.payload
                ct = request.content_format
                obs.ct = TEXT if ct is None else ct
                self.server.notify(path)
                return Response(Code.CREATED if created else Code.CHANGED)

            @router.delete(path)
            def obs_delete(request):
                obs.exists = False
                self.server.notify(path)
                return Response(Code.DELETED)

        observable("/obs", notifications="con")
        observable("/obs-non")
        observable("/obs-large", notifications="con")

        # TD_COAP_LINK_*
        links = {
            "/link1": {"rt": "Type1 Type2", "if_": "If1"},
            "/link2": {"rt": "Type2 Type3", "if_": "If2", "sz": len(b"Hello from /link2")},
            "/link3": {"rt": "Type1 Type3", "if_": "foo"},
        }
        for path, attrs in links.items():
            body = f"Hello from {path}".encode()

            def link_get(request, _body=body):
                return Response(Code.CONTENT, _body, content_format=TEXT)

            router.add("GET", path, link_get, **attrs)

        subs = {"/path/sub1": {}, "/path/sub2": {}, "/path/sub3": {"rt": ""}}

        @router.get("/path", ct=LINK_FORMAT)
        def path(request):
            text = ",".join(Link(p).to_text() for p in subs)
            return Response(Code.CONTENT, text, content_format=LINK_FORMAT)

        for sub, attrs in subs.items():

            def sub_get(request, _sub=sub):
                return Response(Code.CONTENT, f"sub-resource {_sub}", content_format=TEXT)

            router.add("GET", sub, sub_get, **attrs)

        return router


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.plugtest.server --port P``: serve until SIGTERM/SIGINT."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--obs-period", type=float, default=OBS_PERIOD)
    ap.add_argument("--max-age", type=int, default=OBS_MAX_AGE)
    ap.add_argument("--separate-time", type=float, default=SEPARATE_TIME)
    ap.add_argument("--separate-delay", type=float, default=SEPARATE_DELAY)
    ap.add_argument("--ack-timeout", type=float, default=2.0)
    args = ap.parse_args(argv)
    srv = PlugtestServer(
        args.host,
        args.port,
        obs_period=args.obs_period,
        max_age=args.max_age,
        separate_time=args.separate_time,
        separate_delay=args.separate_delay,
        ack_timeout=args.ack_timeout,
    ).start()
    hub = srv.server.hub

    def on_signal(*_: Any) -> None:
        hub.run_callback_threadsafe(srv.stop)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print("ready", flush=True)
    try:
        srv.server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
