"""The demo server used by the README, the examples, the benchmarks and the interop tests (layer 4).

    python -m greencoap.demo --host 127.0.0.1 --port 5683

Resources:

* ``GET /hello`` → 2.05 ``Hello, world!`` (text/plain)
* ``POST /echo`` → 2.05 with the request's payload and content format
* ``GET /slow?ms=N`` → parks N ms on the hub (other requests go on), then 2.05
* ``GET /sensors/:id`` → 2.05 JSON ``{"id": id, "celsius": …}`` (CBOR with
  ``Accept: 60``; sensors 1-3 are listed in ``.well-known/core``)
* ``GET /large?size=N`` → N bytes (default 4096, at most 1 MiB) of
  ``0123456789abcdef…``, served block-wise
* ``PUT /store`` stores the (block-wise) body → 2.04; ``GET /store`` returns
  it; ``DELETE /store`` → 2.02
* ``GET /counter?interval=S`` → observable: ``0``, ``1``, ``2``, … every S s
* ``GET /whoami`` → the PSK identity of a ``coaps://`` request
  (``anonymous`` over plain CoAP)
* ``GET /.well-known/core`` → the resources above in link-format

``--workers N`` runs N worker processes sharing the port.
``--dtls-port P --psk IDENTITY:KEY`` also serves everything over DTLS 1.2
(``coaps://``, pre-shared key, TLS_PSK_WITH_AES_128_CCM_8); ``--psk`` may be
given several times, the key is the text libcoap's ``-k`` takes.
"""

from __future__ import annotations

import argparse
import functools
import logging
import signal
import sys
import zlib

from .codes import Code
from .errors import CoapError
from .hub import sleep, spawn
from .protocol.echo import DEFAULT_FACTOR
from .response import Request, Response
from .router import Router
from .server import Server

PATTERN = b"0123456789abcdef"


def query_number(request: Request, name: str, default, lo, hi, kind=int):  # noqa: ANN001
    """``?name=N`` as a number within lo..hi (4.00 Bad Request otherwise)."""
    text = request.query.get(name)
    if text is None:
        return default
    try:
        value = kind(text)
    except ValueError:
        raise CoapError(Code.BAD_REQUEST, f"{name} must be a number") from None
    if not lo <= value <= hi:
        raise CoapError(Code.BAD_REQUEST, f"{name} must be within {lo}..{hi}")
    return value


#: the sensors ``.well-known/core`` lists (``/sensors/:id`` answers any id)
DEMO_SENSORS = ("1", "2", "3")

#: the largest ``/large?size=`` (1 MiB, the server's default max body size)
LARGE_MAX = 1 << 20


@functools.lru_cache(maxsize=8)
def large_body(size: int) -> bytes:
    """``size`` bytes of the repeating pattern (the few sizes in use are kept)."""
    return (PATTERN * (size // 16 + 1))[:size]


def _large_etag(size: int) -> bytes:
    return b"L" + size.to_bytes(4, "big")


def build_router() -> Router:
    """The demo server's routes (a fresh router each call)."""
    router = Router()

    @router.get("/hello", rt="greeting", ct=0, title="Hello world")
    def hello(request: Request) -> Response:
        return Response(Code.CONTENT, b"Hello, world!", content_format=0)

    @router.post("/echo", title="Echo the payload")
    def echo(request: Request) -> Response:
        return Response(Code.CONTENT, request.payload, content_format=request.content_format)

    @router.get("/slow", title="Answer after ?ms=N milliseconds")
    def slow(request: Request) -> Response:
        ms = query_number(request, "ms", 1000, 0, 60_000)
        sleep(ms / 1000)
        return Response(Code.CONTENT, f"slept {ms} ms")

    @router.get(
        "/sensors/:id",
        rt="temperature",
        ct=50,
        enumerate=lambda: [{"id": i} for i in DEMO_SENSORS],  # listed in .well-known/core
    )
    def sensor(request: Request, id: str) -> dict:
        # a stable fake reading per sensor id
        return {"id": id, "celsius": 15 + (zlib.crc32(id.encode()) % 150) / 10}

    @router.get("/large", ct=0, title="N bytes of 0123456789abcdef (?size=N)")
    def large(request: Request) -> Response:
        size = query_number(request, "size", 4096, 0, LARGE_MAX)
        # bodies are built once per size and carry their own ETag (no hashing
        # per request): a one-datagram request costs a bounded, small amount
        return Response(Code.CONTENT, large_body(size), content_format=0, etag=_large_etag(size))

    store = {"body": b"", "ct": None}

    @router.put("/store", title="Store a body (block-wise welcome)")
    def store_put(request: Request) -> Response:
        store["body"], store["ct"] = request.payload, request.content_format
        return Response(Code.CHANGED)

    @router.get("/store")
    def store_get(request: Request) -> Response:
        return Response(Code.CONTENT, store["body"], content_format=store["ct"])

    @router.delete("/store")
    def store_delete(request: Request) -> Response:
        store["body"], store["ct"] = b"", None
        return Response(Code.DELETED)

    @router.get("/counter", rt="counter", ct=0, title="Observable counter (?interval=S)")
    def counter(request: Request):
        interval = query_number(request, "interval", 1.0, 0.01, 3600.0, float)
        n = 0
        while True:
            yield str(n)
            n += 1
            sleep(interval)

    @router.get("/whoami", rt="identity", ct=0, title="The request's PSK identity")
    def whoami(request: Request):
        return request.identity or "anonymous"

    return router


def parse_psk(text: str) -> tuple[str, bytes]:
    """``IDENTITY:KEY`` from the command line (the key as text, like libcoap's ``-k``)."""
    identity, sep, key = text.partition(":")
    if not sep or not identity or not key:
        raise argparse.ArgumentTypeError("expected IDENTITY:KEY")
    return identity, key.encode()


def make_server(host: str = "::", port: int = 5683, **kwargs) -> Server:
    """A :class:`Server` serving the demo routes."""
    return Server(build_router(), host=host, port=port, **kwargs)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: ``python -m greencoap.demo``."""
    ap = argparse.ArgumentParser(prog="greencoap demo-server", description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="::", help="address to bind (default :: = dual stack)")
    ap.add_argument("--port", type=int, default=5683, help="UDP port (default 5683)")
    ap.add_argument(
        "--workers", type=int, default=1, help="worker processes sharing the port (SO_REUSEPORT)"
    )
    ap.add_argument(
        "--dtls-port",
        type=int,
        default=None,
        help="also serve coaps:// (DTLS 1.2 PSK) on this UDP port (e.g. 5684)",
    )
    ap.add_argument(
        "--psk",
        type=parse_psk,
        action="append",
        default=[],
        metavar="IDENTITY:KEY",
        help="a pre-shared key for DTLS (repeatable)",
    )
    ap.add_argument("--psk-hint", default="", help="PSK identity hint sent to DTLS clients")
    ap.add_argument(
        "--echo-factor",
        type=float,
        default=DEFAULT_FACTOR,
        metavar="F",
        help="answer 4.01 + Echo before sending an address not yet verified more than "
        f"F times its request (RFC 9175 §2.4; default {DEFAULT_FACTOR:g}, 0 = off)",
    )
    ap.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    args = ap.parse_args(argv)
    if args.echo_factor and args.echo_factor < 1:
        ap.error("--echo-factor must be 0 (off) or at least 1")
    if args.dtls_port is not None and not args.psk:
        ap.error("--dtls-port needs at least one --psk IDENTITY:KEY")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    dtls = {}
    if args.dtls_port is not None:
        dtls = {"dtls_port": args.dtls_port, "psk": dict(args.psk), "psk_hint": args.psk_hint}
    echo = args.echo_factor or None
    server = make_server(args.host, args.port, workers=args.workers, echo_factor=echo, **dtls)
    secure = f", coaps on port {args.dtls_port}" if dtls else ""
    if args.workers > 1:
        print(
            f"greencoap demo server on [{args.host}]:{args.port} ({args.workers} workers{secure})",
            flush=True,
        )
        server.serve_forever()
        print("greencoap demo server stopped", file=sys.stderr, flush=True)
        return 0
    server.start()
    signal.signal(
        signal.SIGTERM,
        lambda *_: server.hub.run_callback_threadsafe(lambda: spawn(server.shutdown, 5.0)),
    )
    if dtls:
        secure = f", coaps on port {server.dtls_port}"
    print(
        f"greencoap demo server on [{args.host}]:{server.port} ({server.hub.backend} hub{secure})",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        stats = {k: v for k, v in server.stats.items() if v}
        server.stop()
        print(f"greencoap demo server stopped; stats: {stats}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
