"""Server-side block-wise transfers (RFC 7959): raw datagrams for the error
codes, libcoap's and aiocoap's clients for byte-exact bodies both ways."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
from time import monotonic

import greencoap
from greencoap import Client, Code, Router, Server, Type
from greencoap.demo import build_router
from greencoap.message import Message
from greencoap.options import Block

from .conftest import which_or_skip
from .test_server import exchange

PATTERN = b"0123456789abcdef"


def put_block(mid, num, more, szx, payload, size1=None, path=("store",)):
    opts = [(11, p.encode()) for p in path] + [(27, Block(num, more, szx).to_bytes())]
    if size1 is not None:
        opts.append((60, size1.to_bytes(4, "big")))
    return Message(Type.CON, Code.PUT, mid, b"t", opts, payload).encode()


def test_block1_continue_then_complete(hub, server):
    blocks = [put_block(1, 0, True, 0, b"a" * 16), put_block(2, 1, False, 0, b"b" * 5)]
    first, last = (Message.decode(d) for d in exchange(hub, server.port, blocks, expect=2))
    assert first.code == Code.CONTINUE and first.block1 == Block(0, True, 0)
    assert last.code == Code.CHANGED and last.block1 == Block(1, False, 0)
    with Client(timeout=5) as c:
        assert c.get(server.uri + "/store").payload == b"a" * 16 + b"b" * 5


def test_block1_gap_is_4_08(hub, server):
    blocks = [put_block(3, 0, True, 0, b"x" * 16), put_block(4, 2, False, 0, b"late")]
    _, gap = exchange(hub, server.port, blocks, expect=2)
    assert Message.decode(gap).code == Code.REQUEST_ENTITY_INCOMPLETE
    assert server.stats["block1_incomplete"] == 1


def test_block1_over_the_limit_is_4_13_with_size1(hub):
    router = Router()

    @router.put("/up")
    def up(request):
        return None

    srv = Server(router, host="127.0.0.1", port=0, max_body_size=1000).start()
    try:
        d = put_block(5, 0, True, 2, b"y" * 64, size1=5000, path=("up",))
        (r,) = exchange(hub, srv.port, [d], expect=1)
        m = Message.decode(r)
        assert m.code == Code.REQUEST_ENTITY_TOO_LARGE and m.size1 == 1000
        with Client(timeout=5) as c:
            assert c.put(f"coap://127.0.0.1:{srv.port}/up", payload=b"z" * 900).code == (
                Code.CHANGED
            )
            r = c.put(f"coap://127.0.0.1:{srv.port}/up", payload=b"z" * 3000)
            assert r.code == Code.REQUEST_ENTITY_TOO_LARGE
    finally:
        srv.stop()


def test_block2_served_with_etag_size2_and_handler_run_once(hub):
    calls = []
    router = Router()

    @router.get("/big")
    def big(request):
        calls.append(1)
        return PATTERN * 200  # 3,200 bytes

    srv = Server(router, host="127.0.0.1", port=0).start()
    try:
        with Client(timeout=5, block_size=256) as c:
            r = c.get(f"coap://127.0.0.1:{srv.port}/big")
            assert r.payload == PATTERN * 200 and len(calls) == 1
            # 13 blocks, block 0 twice: first answered 4.01 + Echo (a 256-byte
            # answer to a 15-byte request from an address not yet verified)
            assert r.etag is not None and c.stats["requests_sent"] == 14
            assert srv.stats["echo_challenges"] == 1 and srv.stats["echo_verified"] == 1
        srv.echo = None  # the raw client's address is not verified: no challenge for it
        block0 = (23, Block(0, False, 4).to_bytes())
        raw = Message(Type.CON, Code.GET, 9, b"q", [(11, b"big"), block0])
        (d,) = exchange(hub, srv.port, [raw.encode()], expect=1)
        m = Message.decode(d)
        assert m.block2 == Block(0, True, 4) and m.size2 == 3200 and len(m.payload) == 256
    finally:
        srv.stop()


def test_libcoap_client_block_wise_both_ways(hub, demo_proc, tmp_path):
    client = which_or_skip("coap-client-notls")
    body = bytes((i * 31 + 7) & 0x7F or 1 for i in range(12_345))
    f = tmp_path / "body.bin"
    f.write_bytes(body)
    out = subprocess.run(
        [client, "-B", "10", "-b", "64", "-m", "put", "-f", str(f), demo_proc.uri + "/store"],
        capture_output=True,
        timeout=30,
    )
    assert out.returncode == 0, out
    out = subprocess.run(
        [client, "-B", "10", "-b", "64", demo_proc.uri + "/store"], capture_output=True, timeout=30
    )
    assert out.stdout[: len(body)] == body and len(out.stdout.rstrip(b"\n")) == len(body)
    out = subprocess.run(
        [client, "-B", "10", "-b", "64", demo_proc.uri + "/large?size=5000"],
        capture_output=True,
        timeout=30,
    )
    assert out.stdout.rstrip(b"\n") == (PATTERN * 313)[:5000]


def test_aiocoap_client_block_wise_both_ways(hub, demo_proc_no_echo, aiocoap_mod):
    demo_proc = demo_proc_no_echo
    aiocoap = aiocoap_mod
    body = hashlib.sha256(b"seed").digest() * 2000  # 64,000 bytes

    async def run():
        ctx = await aiocoap.Context.create_client_context()
        try:
            put = await ctx.request(
                aiocoap.Message(code=aiocoap.PUT, payload=body, uri=demo_proc.uri + "/store")
            ).response
            got = await ctx.request(
                aiocoap.Message(code=aiocoap.GET, uri=demo_proc.uri + "/store")
            ).response
            large = await ctx.request(
                aiocoap.Message(code=aiocoap.GET, uri=demo_proc.uri + "/large?size=100000")
            ).response
            return put, got, large
        finally:
            await ctx.shutdown()

    put, got, large = asyncio.run(asyncio.wait_for(run(), 60))
    assert put.code == aiocoap.CHANGED
    assert got.payload == body
    assert large.payload == (PATTERN * 6250)


def test_handler_etag_is_kept_across_blocks(hub):
    router = Router()

    @router.get("/tagged")
    def tagged(request):
        from greencoap import Response

        return Response(Code.CONTENT, PATTERN * 100, etag=b"v1")

    srv = Server(router, host="127.0.0.1", port=0).start()
    try:
        with Client(timeout=5) as c:
            r = c.get(f"coap://127.0.0.1:{srv.port}/tagged")
            assert r.payload == PATTERN * 100 and r.etag == b"v1"
    finally:
        srv.stop()


def test_abandoned_block_wise_state_goes_without_more_traffic(hub):
    """An upload left half-way and a Block2 body never fetched are dropped
    after ``upload_timeout`` by the server's housekeeping timer, even when no
    block-wise request ever comes again; so are the rate buckets of peers
    that went quiet."""
    srv = Server(build_router(), host="127.0.0.1", port=0, upload_timeout=0.5, echo_factor=None)
    srv.start()
    try:
        part = Message(
            Type.CON,
            Code.PUT,
            1,
            b"u",
            [(11, b"store"), (27, Block(0, True, 2).to_bytes())],
            b"x" * 64,
        )
        first = Message(Type.CON, Code.GET, 2, b"g", [(11, b"large"), (15, b"size=5000")])
        exchange(hub, srv.port, [part.encode(), first.encode()], expect=2)
        sizes = srv.table_sizes()
        assert sizes["block1_uploads"] == 1 and sizes["block2_bodies"] == 1
        srv.buckets.allow(("198.51.100.1", 1), monotonic() - 10)  # a peer long quiet
        deadline = monotonic() + 5
        while monotonic() < deadline:
            sizes = srv.table_sizes()
            if sizes["block1_uploads"] == sizes["block2_bodies"] == sizes["rate_buckets"] == 0:
                break
            greencoap.sleep(0.1)
        assert sizes["block1_uploads"] == 0 and sizes["block2_bodies"] == 0
        assert sizes["rate_buckets"] == 0 and sizes["block1_bytes"] == 0
    finally:
        srv.stop()
