"""The ETSI CoAP#4 plugtest resources on aiocoap: the peer server that
greencoap's client runs the plugtest TDs against (direction B).

Run as ``python tests/plugtest/aiocoap_peer.py --port P`` (127.0.0.1, UDP
only).  It prints ``ready`` once it serves and exits cleanly on SIGTERM or
SIGINT.  It imports nothing from greencoap (nor from the test suite), so what
it answers is aiocoap's behaviour plus the resources below, which mirror
``tests/plugtest/server.py``:

``/test`` (GET, PUT, POST: 2.01 with Location-Path location1/2/3, DELETE),
``/seg1/seg2/seg3``, ``/query`` (echoes the Uri-Query options),
``/separate`` (answers after ``--separate-time`` s: aiocoap sends the empty
ACK first), ``/large`` (1,300 bytes, block-wise), ``/large-update`` (PUT,
Block1), ``/large-create`` (POST → 2.01, Location-Path large-create/N;
GET ``/large-create/N``), ``/large-post`` (POST: Block1 in, Block2 out),
``/obs`` (observable, CON notifications every ``--obs-period`` s; PUT
updates it, a new Content-Format ends the observations with 4.06 as RFC
7641 §4.2 says; DELETE ends them with 4.04), ``/obs-non`` (NON
notifications), ``/obs-large`` (1,100-1,550 bytes, block-wise
notifications), ``/validate`` (ETag, 2.03, If-Match → 4.12),
``/create1`` (If-None-Match → 4.12 once it exists), ``/location-query``,
``/multi-format`` (Accept 0 or 41, 4.06 otherwise), ``/link1``-``/link3``
and ``/path`` (link-format of ``/path/sub1``-``sub3``) with the LINK TDs'
attributes, and ``/reset`` (POST: every resource back to its first state,
for a test suite that shares one process between tests).

``--ack-timeout`` and ``--max-retransmit`` shorten aiocoap's CON
retransmission schedule (its TransportTuning defaults are RFC 7252's).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

import aiocoap
from aiocoap import resource
from aiocoap.numbers.constants import TransportTuning
from aiocoap.optiontypes import BlockOption

TEXT, LINK_FORMAT, XML = 0, 40, 41

#: the same bodies as tests/plugtest/server.py builds (16-byte lines)
LARGE_SIZE = 1300
TEST_BODY = b"Hello from the plugtest server: /test"


def pattern(tag: str, size: int) -> bytes:
    tag = (tag + "-" * 11)[:11]
    units = (size + 15) // 16
    return b"".join(b"%04x%s\n" % (i & 0xFFFF, tag.encode()) for i in range(units))[:size]


LARGE_BODY = pattern("/large", LARGE_SIZE)


def obs_large_body(n: int) -> bytes:
    return pattern(f"obs{n}", 1100 + 150 * (n % 4))


class Settings:
    obs_period = 2.0
    max_age = 10
    separate_time = 1.0


def msg(payload: bytes | str = b"", code=None, ct=None, **opts) -> aiocoap.Message:
    if isinstance(payload, str):
        payload = payload.encode()
    kw = {} if code is None else {"code": code}
    m = aiocoap.Message(payload=payload, **kw)
    if ct is not None:
        m.opt.content_format = ct
    for name, value in opts.items():
        setattr(m.opt, name, value)
    return m


class Res(resource.Resource):
    """A resource with explicit link attributes (``links``: dict or None)."""

    links: dict | None = {}

    def get_link_description(self):
        return None if self.links is None else dict(self.links)

    def reset(self) -> None:
        pass


class Test(Res):
    def reset(self):
        self.body = TEST_BODY

    async def render_get(self, request):
        return msg(self.body, ct=TEXT)

    async def render_put(self, request):
        self.body = request.payload
        return msg(code=aiocoap.CHANGED)

    async def render_post(self, request):
        return msg(code=aiocoap.CREATED, location_path=("location1", "location2", "location3"))

    async def render_delete(self, request):
        self.body = TEST_BODY
        return msg(code=aiocoap.DELETED)


class Text(Res):
    def __init__(self, body: bytes, links: dict | None = None) -> None:
        super().__init__()
        self.body = body
        self.links = {} if links is None else links

    async def render_get(self, request):
        return msg(self.body, ct=TEXT)


class Query(Res):
    async def render_get(self, request):
        return msg("&".join(request.opt.uri_query) or "no query", ct=TEXT)


class Separate(Res):
    async def render_get(self, request):
        await asyncio.sleep(Settings.separate_time)
        return msg(b"Hello from /separate, late", ct=TEXT)


class LocationQuery(Res):
    async def render_post(self, request):
        return msg(code=aiocoap.CREATED, location_query=("first=1", "second=2"))


class MultiFormat(Res):
    links = {"ct": "0 41"}

    async def render_get(self, request):
        accept = request.opt.accept
        if accept == XML:
            return msg(b"<value>multi-format</value>", ct=XML)
        if accept in (None, TEXT):
            return msg(b"multi-format", ct=TEXT)
        return msg(code=aiocoap.NOT_ACCEPTABLE)


class Validate(Res):
    def reset(self):
        self.body = b"validate v1"
        self.version = 1

    @property
    def etag(self) -> bytes:
        return b"v%d" % self.version

    async def render_get(self, request):
        if self.etag in request.opt.etags:
            return msg(code=aiocoap.VALID, etag=self.etag)
        return msg(self.body, ct=TEXT, etag=self.etag)

    async def render_put(self, request):
        if request.opt.if_match and self.etag not in request.opt.if_match:
            return msg(code=aiocoap.PRECONDITION_FAILED)
        self.body = request.payload
        self.version += 1
        return msg(code=aiocoap.CHANGED, etag=self.etag)


class Create1(Res):
    def reset(self):
        self.body = None

    async def render_get(self, request):
        if self.body is None:
            return msg(code=aiocoap.NOT_FOUND)
        return msg(self.body, ct=TEXT)

    async def render_put(self, request):
        if request.opt.if_none_match and self.body is not None:
            return msg(code=aiocoap.PRECONDITION_FAILED)
        created = self.body is None
        self.body = request.payload
        return msg(code=aiocoap.CREATED if created else aiocoap.CHANGED)

    async def render_delete(self, request):
        self.body = None
        return msg(code=aiocoap.DELETED)


class Large(Res):
    links = {"sz": str(LARGE_SIZE)}

    async def render_get(self, request):
        return msg(LARGE_BODY, ct=TEXT)


class LargeUpdate(Res):
    def reset(self):
        self.body = b""

    async def render_get(self, request):
        return msg(self.body, ct=TEXT)

    async def render_put(self, request):
        self.body = request.payload
        return msg(code=aiocoap.CHANGED)


class LargeCreate(Res):
    def __init__(self) -> None:
        super().__init__()
        self.created: dict[str, bytes] = {}

    def reset(self):
        self.created.clear()

    async def render_post(self, request):
        name = str(len(self.created) + 1)
        self.created[name] = request.payload
        return msg(code=aiocoap.CREATED, location_path=("large-create", name))


class LargeCreated(resource.Resource, resource.PathCapable):
    """``/large-create/N``: what ``/large-create`` created."""

    def __init__(self, parent: LargeCreate) -> None:
        super().__init__()
        self.parent = parent

    async def render_get(self, request):
        body = self.parent.created.get("/".join(request.opt.uri_path))
        if body is None:
            return msg(code=aiocoap.NOT_FOUND)
        return msg(body, ct=TEXT)


class LargePost(Res):
    async def render_post(self, request):
        return msg(request.payload.upper(), code=aiocoap.CHANGED, ct=TEXT)


class Observed(resource.ObservableResource):
    """An observable plugtest resource; ``reliable``: CON (True) or NON (False)
    notifications.  A new Content-Format ends the observers registered with
    another one with 4.06 (RFC 7641 §4.2); a DELETE ends them all with 4.04."""

    def __init__(self, path: str, reliable: bool, links: dict | None = None) -> None:
        super().__init__()
        self.path = path
        self.tuning = aiocoap.Reliable if reliable else aiocoap.Unreliable
        self.links = links or {}
        self.registered_ct: dict = {}  # observation -> the Content-Format it got first
        self.task: asyncio.Task | None = None
        self.reset()

    def reset(self) -> None:
        self.n = 0
        self.body: bytes | None = None
        self.ct = TEXT
        self.exists = True

    def get_link_description(self):
        return {**self.links, "obs": None}

    async def add_observation(self, request, serverobservation):
        await super().add_observation(request, serverobservation)
        self.registered_ct[serverobservation] = self.ct

    def representation(self) -> bytes:
        if self.body is not None:
            return self.body
        if self.path == "/obs-large":
            return obs_large_body(self.n)
        return b"%s %d" % (self.path.encode(), self.n)

    def response(self, block: tuple[int, int] | None = None) -> aiocoap.Message:
        """The current state; ``block``: (NUM, SZX) of the block wanted when
        the representation is larger than that.  /obs-large cuts its blocks
        itself: aiocoap 0.4.17 does not cut an Observe response or a
        notification into blocks (it answers an RST with MID 0), and its
        Block2 cache answers 4.08 to a follow-up GET for a block it did not
        cut."""
        if not self.exists:
            return msg(code=aiocoap.NOT_FOUND)
        body = self.representation()
        etag = b"%d.%d" % (self.ct, self.n) if self.body is None else b"p%d" % len(body)
        m = msg(body, aiocoap.CONTENT, ct=self.ct, max_age=Settings.max_age, etag=etag)
        if block is not None and len(body) > 1 << (block[1] + 4):
            num, szx = block
            size = 1 << (szx + 4)
            m.payload = body[num * size : (num + 1) * size]
            more = (num + 1) * size < len(body)
            m.opt.block2 = BlockOption.BlockwiseTuple(num, more, szx)
            m.opt.size2 = len(body)
        m.transport_tuning = self.tuning()
        return m

    async def needs_blockwise_assembly(self, request):
        return self.path != "/obs-large"

    async def render_get(self, request):
        if self.path != "/obs-large":
            return self.response()
        b2 = request.opt.block2
        return self.response((0, 6) if b2 is None else (b2.block_number, min(b2.size_exponent, 6)))

    def notify(self) -> None:
        for obs in list(self._observations):
            if self.exists and self.registered_ct.get(obs, self.ct) != self.ct:
                obs.trigger(msg(code=aiocoap.NOT_ACCEPTABLE))
            else:
                obs.trigger(self.response((0, 6)))

    async def render_put(self, request):
        created = not self.exists
        self.exists = True
        self.body = request.payload
        ct = request.opt.content_format
        self.ct = TEXT if ct is None else int(ct)
        self.notify()
        return msg(code=aiocoap.CREATED if created else aiocoap.CHANGED)

    async def render_delete(self, request):
        self.exists = False
        self.notify()
        return msg(code=aiocoap.DELETED)

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(Settings.obs_period)
            if self.exists:
                self.n += 1
                self.notify()


class PathList(Res):
    links = {"ct": str(LINK_FORMAT)}
    subs = ("/path/sub1", "/path/sub2", "/path/sub3")

    async def render_get(self, request):
        return msg(",".join(f"<{s}>" for s in self.subs), ct=LINK_FORMAT)


def build_site() -> tuple[resource.Site, list[Res], list[Observed]]:
    site = resource.Site()
    plain: list = []
    observed = [
        Observed("/obs", True),
        Observed("/obs-non", False),
        Observed("/obs-large", True),
    ]

    def add(path: str, res):
        site.add_resource(tuple(path.strip("/").split("/")), res)
        if isinstance(res, Res):
            plain.append(res)

    add("/test", Test())
    add("/seg1/seg2/seg3", Text(b"Hello from /seg1/seg2/seg3"))
    add("/query", Query())
    add("/separate", Separate())
    add("/location-query", LocationQuery())
    add("/multi-format", MultiFormat())
    add("/validate", Validate())
    add("/create1", Create1())
    add("/large", Large())
    add("/large-update", LargeUpdate())
    creator = LargeCreate()
    add("/large-create", creator)
    site.add_resource(("large-create",), LargeCreated(creator))
    add("/large-post", LargePost())
    for obs in observed:
        add(obs.path, obs)
    add("/link1", Text(b"Hello from /link1", {"rt": "Type1 Type2", "if": "If1"}))
    body2 = b"Hello from /link2"
    add("/link2", Text(body2, {"rt": "Type2 Type3", "if": "If2", "sz": str(len(body2))}))
    add("/link3", Text(b"Hello from /link3", {"rt": "Type1 Type3", "if": "foo"}))
    add("/path", PathList())
    add("/path/sub1", Text(b"sub-resource /path/sub1"))
    add("/path/sub2", Text(b"sub-resource /path/sub2"))
    add("/path/sub3", Text(b"sub-resource /path/sub3", {"rt": ""}))

    class Reset(Res):
        links = None

        async def render_post(self, request):
            for res in plain:
                res.reset()
            for obs in observed:
                for o in list(obs._observations):
                    o.trigger(msg(code=aiocoap.SERVICE_UNAVAILABLE), is_last=True)
                obs.reset()
            return msg(code=aiocoap.CHANGED)

    add("/reset", Reset())
    for res in plain:
        res.reset()
    site.add_resource(
        (".well-known", "core"), resource.WKCResource(site.get_resources_as_linkheader)
    )
    return site, plain, observed


async def serve(port: int) -> None:
    site, _, observed = build_site()
    ctx = await aiocoap.Context.create_server_context(
        site, bind=("127.0.0.1", port), transports=["udp6"]
    )
    for obs in observed:
        obs.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    try:
        await stop.wait()
    finally:
        for obs in observed:
            if obs.task is not None:
                obs.task.cancel()
        await ctx.shutdown()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True, help="UDP port on 127.0.0.1")
    ap.add_argument("--obs-period", type=float, default=Settings.obs_period)
    ap.add_argument("--max-age", type=int, default=Settings.max_age)
    ap.add_argument("--separate-time", type=float, default=Settings.separate_time)
    ap.add_argument("--ack-timeout", type=float, default=TransportTuning.ACK_TIMEOUT)
    ap.add_argument("--max-retransmit", type=int, default=TransportTuning.MAX_RETRANSMIT)
    ap.add_argument("--log", help="write aiocoap's log (WARNING and up) to this file")
    args = ap.parse_args(argv)
    Settings.obs_period = args.obs_period
    Settings.max_age = args.max_age
    Settings.separate_time = args.separate_time
    TransportTuning.ACK_TIMEOUT = args.ack_timeout
    TransportTuning.MAX_RETRANSMIT = args.max_retransmit
    if args.log:
        logging.basicConfig(filename=args.log, level=logging.WARNING)
    else:
        logging.basicConfig(stream=sys.stderr, level=logging.ERROR)
    asyncio.run(serve(args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
