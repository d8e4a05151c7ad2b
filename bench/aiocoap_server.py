"""An aiocoap server with ``GET /hello`` → 2.05 ``Hello, world!``, the peer row of bench/server.py.

    .venv/bin/python bench/aiocoap_server.py --port 5683 [--host 127.0.0.1]

It serves until SIGTERM/SIGINT. aiocoap answers a CoAP ping (empty CON) with
RST itself, which is how bench/server.py knows it is up.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import aiocoap
import aiocoap.resource as resource

HELLO = b"Hello, world!"


class Hello(resource.Resource):
    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        return aiocoap.Message(code=aiocoap.CONTENT, payload=HELLO, content_format=0)


async def serve(host: str, port: int) -> None:
    site = resource.Site()
    site.add_resource(["hello"], Hello())
    ctx = await aiocoap.Context.create_server_context(site, bind=(host, port))
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(
            sig, lambda: stop.done() or stop.set_result(None)
        )
    print(f"aiocoap server on {host}:{port}", flush=True)
    try:
        await stop
    finally:
        await ctx.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=5683)
    args = ap.parse_args()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
