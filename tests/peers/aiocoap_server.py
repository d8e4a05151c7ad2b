"""A standalone aiocoap server: the reference peer for greencoap's client tests.

Run as ``python tests/peers/aiocoap_server.py --port P`` (127.0.0.1 only,
UDP only).  It prints ``ready`` on stdout once it serves and exits cleanly on
SIGTERM or SIGINT.  It imports nothing from greencoap, so what it answers is
aiocoap's behaviour, not ours.

Resources:

- ``/hello``: GET -> ``Hello, world!``;
- ``/big``: GET -> 120,000 bytes of ``0123456789abcdef`` repeated (aiocoap
  serves it block-wise, Block2);
- ``/upload``: PUT/POST stores the body (aiocoap reassembles Block1) and
  answers 2.04 with ``<decimal length>:<sha256 hex>``; GET returns the stored
  body;
- ``/counter``: observable; GET returns the counter as text; it increments
  every 0.2 s and notifies observers;
- ``/bigcounter``: like ``/counter`` with 2,400-byte representations
  (block-wise notifications);
- ``/echo``: POST answers with the body (Block1 up, Block2 down);
- ``/fresh``: GET answers 4.01 with an Echo option (RFC 9175) unless the
  request carries that Echo value;
- ``/separate``: GET answers after 1.0 s (``?d=SECONDS`` overrides, at most
  10), so aiocoap sends an empty ACK first and the response separately;
- ``/.well-known/core``: the link-format list of the above.

aiocoap's log goes to ``--log FILE`` when given (stdout is a pipe nobody
drains while the server runs, so it must stay quiet), else to stderr at
ERROR level.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import signal
import sys

import aiocoap
from aiocoap import resource

#: The body of ``/big``: 7,500 repetitions of a 16-byte pattern.
BIG_PATTERN = b"0123456789abcdef"
BIG_SIZE = 120_000
BIG_BODY = BIG_PATTERN * (BIG_SIZE // len(BIG_PATTERN))

#: Seconds between two increments of ``/counter``.
COUNTER_PERIOD = 0.2

#: Default and maximum delay of ``/separate``, in seconds.
SEPARATE_DELAY = 1.0
SEPARATE_MAX = 10.0

TEXT_PLAIN = 0


def text(payload: str | bytes, code=None) -> aiocoap.Message:
    """A text/plain response (``code`` None lets aiocoap pick the default for the method)."""
    if isinstance(payload, str):
        payload = payload.encode()
    kw = {} if code is None else {"code": code}
    return aiocoap.Message(payload=payload, content_format=TEXT_PLAIN, **kw)


class Hello(resource.Resource):
    """``/hello``: a fixed greeting."""

    async def render_get(self, request):
        return text("Hello, world!")


class Big(resource.Resource):
    """``/big``: a body far larger than one block; aiocoap slices it into Block2."""

    async def render_get(self, request):
        return aiocoap.Message(payload=BIG_BODY, content_format=TEXT_PLAIN)


class Upload(resource.Resource):
    """``/upload``: keeps the last PUT/POST body; answers with its length and digest."""

    def __init__(self) -> None:
        super().__init__()
        self.body = b""

    async def render_get(self, request):
        return aiocoap.Message(payload=self.body)

    async def _store(self, request):
        self.body = request.payload
        digest = hashlib.sha256(self.body).hexdigest()
        return text(f"{len(self.body)}:{digest}", code=aiocoap.CHANGED)

    render_put = _store
    render_post = _store


class Counter(resource.ObservableResource):
    """``/counter``: an integer that grows every ``COUNTER_PERIOD`` s; observers are told."""

    def __init__(self) -> None:
        super().__init__()
        self.value = 0
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        """Start ticking; needs a running event loop."""
        self.task = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(COUNTER_PERIOD)
            self.value += 1
            self.updated_state()

    async def render_get(self, request):
        return text(str(self.value))


class BigCounter(Counter):
    """``/bigcounter``: like ``/counter`` but each representation is 2,400 bytes
    (the counter as 6 digits, 400 times), so notifications are block-wise."""

    async def render_get(self, request):
        return text(f"{self.value:06d}" * 400)


class Echo(resource.Resource):
    """``/echo``: POST answers with the request body (Block1 in, Block2 out)."""

    async def render_post(self, request):
        return aiocoap.Message(code=aiocoap.CONTENT, payload=request.payload)


class Fresh(resource.Resource):
    """``/fresh``: demands an RFC 9175 Echo round trip before it answers."""

    ECHO = b"\x0e\xc0\x01\x02"

    async def render_get(self, request):
        if request.opt.echo != self.ECHO:
            m = aiocoap.Message(code=aiocoap.UNAUTHORIZED)
            m.opt.echo = self.ECHO
            return m
        return text("fresh")


class Separate(resource.Resource):
    """``/separate``: a slow handler, so the response comes after an empty ACK."""

    async def render_get(self, request):
        delay = SEPARATE_DELAY
        for q in request.opt.uri_query:
            if q.startswith("d="):
                try:
                    delay = min(max(float(q[2:]), 0.0), SEPARATE_MAX)
                except ValueError:
                    return text("bad d=", code=aiocoap.BAD_REQUEST)
        await asyncio.sleep(delay)
        return text(f"separate after {delay:g} s")


def build_site() -> tuple[resource.Site, list[Counter]]:
    """The resource tree, and the counters (to be started on the running loop)."""
    site = resource.Site()
    counter = Counter()
    bigcounter = BigCounter()
    site.add_resource(["hello"], Hello())
    site.add_resource(["big"], Big())
    site.add_resource(["upload"], Upload())
    site.add_resource(["counter"], counter)
    site.add_resource(["bigcounter"], bigcounter)
    site.add_resource(["echo"], Echo())
    site.add_resource(["fresh"], Fresh())
    site.add_resource(["separate"], Separate())
    site.add_resource(
        [".well-known", "core"], resource.WKCResource(site.get_resources_as_linkheader)
    )
    return site, [counter, bigcounter]


async def serve(port: int) -> None:
    """Serve on 127.0.0.1:``port`` (UDP only) until SIGTERM or SIGINT."""
    site, counters = build_site()
    # UDP only: the default server transports also open TCP (and maybe TLS,
    # WebSockets) on the same port number, which nothing here needs.
    ctx = await aiocoap.Context.create_server_context(
        site, bind=("127.0.0.1", port), transports=["udp6"]
    )
    for counter in counters:
        counter.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    try:
        await stop.wait()
    finally:
        for counter in counters:
            if counter.task is not None:
                counter.task.cancel()
        await ctx.shutdown()


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the server; 0 on a clean stop."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True, help="UDP port on 127.0.0.1")
    ap.add_argument("--log", help="write aiocoap's log (WARNING and up) to this file")
    ap.add_argument("--debug", action="store_true", help="log at DEBUG level")
    args = ap.parse_args(argv)
    level = logging.DEBUG if args.debug else logging.WARNING
    if args.log:
        logging.basicConfig(
            filename=args.log, level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s"
        )
    else:
        logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if args.debug else logging.ERROR)
    asyncio.run(serve(args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
