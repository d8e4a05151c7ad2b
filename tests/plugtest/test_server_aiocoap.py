"""Direction A, aiocoap's client: each TD driven with aiocoap 0.4.17 (under
``asyncio.run`` in a thread, so the test's hub keeps serving) against
greencoap's plugtest server.  The verify steps are checked on what aiocoap
returns and, for the wire (types, MIDs, tokens, ACKs), on the datagrams a
:class:`~tests.plugtest.wire.Tap` recorded, decoded by aiocoap's own codec."""

from __future__ import annotations

import asyncio
import random

import pytest

from .checks import LARGE_BODY, UPLOAD, check_recovery, link_targets, obs_large_state, seq_newer
from .conftest import ACK_TIMEOUT, MAX_AGE, wait_until
from .tds import LINK_FILTERS, PATH_SUBS, PLUGTEST_RESOURCES
from .wire import C2S, S2C, Tap, run_async

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("aiocoap")]


CON, NON, ACK, RST = 0, 1, 2, 3


def aio(hub, body, timeout: float = 15.0, tuning=None):
    """``await body(ctx, aiocoap)`` with a fresh aiocoap client context."""
    import aiocoap

    async def main():
        ctx = await aiocoap.Context.create_client_context(transports=["udp6"])
        try:
            return await body(ctx, aiocoap)
        finally:
            await ctx.shutdown()

    return run_async(hub, main, timeout)


def fast():
    """aiocoap transmission parameters for a lossy link (ACK_TIMEOUT 0.1 s)."""
    from aiocoap.numbers.constants import TransportTuning

    class Fast(TransportTuning):
        ACK_TIMEOUT = ACK_TIMEOUT
        MAX_RETRANSMIT = 6

    return Fast()


def wire(tap: Tap, direction: str | None = None) -> list:
    """The datagrams the tap saw, decoded by aiocoap (its view of the wire)."""
    import aiocoap

    return [
        aiocoap.Message.decode(s.data)
        for s in tap.snapshot()
        if direction is None or s.direction == direction
    ]


def requests(tap: Tap) -> list:
    return [m for m in wire(tap, C2S) if m.code.is_request()]


def sole_request(tap: Tap):
    reqs = requests(tap)
    assert len(reqs) == 1, reqs
    return reqs[0]


@pytest.fixture
def tap(plug):
    with Tap(("127.0.0.1", plug.port)) as t:
        yield t


def request(hub, uri: str, code: str, *, payload=b"", mtype=None, tuning=None, **opts):
    """One request (aiocoap's blockwise handling on); returns the response."""

    async def body(ctx, aiocoap):
        kw = {} if tuning is None else {"transport_tuning": tuning}
        if mtype is not None:
            kw["transport_tuning"] = aiocoap.Unreliable() if mtype == NON else aiocoap.Reliable()
        msg = aiocoap.Message(code=getattr(aiocoap, code), uri=uri, payload=payload, **kw)
        for name, value in opts.items():
            setattr(msg.opt, name, value)
        return await ctx.request(msg).response

    return aio(hub, body)


# -- CORE -------------------------------------------------------------------------

CASES = {
    "TD_COAP_CORE_01": ("GET", CON, b"", ("2.05",)),
    "TD_COAP_CORE_02": ("DELETE", CON, b"", ("2.02",)),
    "TD_COAP_CORE_03": ("PUT", CON, b"plugtest PUT", ("2.04", "2.01")),
    "TD_COAP_CORE_04": ("POST", CON, b"plugtest POST", ("2.01", "2.04")),
    "TD_COAP_CORE_05": ("GET", NON, b"", ("2.05",)),
    "TD_COAP_CORE_06": ("DELETE", NON, b"", ("2.02",)),
    "TD_COAP_CORE_07": ("PUT", NON, b"plugtest PUT", ("2.04", "2.01")),
    "TD_COAP_CORE_08": ("POST", NON, b"plugtest POST", ("2.01", "2.04")),
}


def code_str(code) -> str:
    return code.dotted


@pytest.mark.parametrize("td", sorted(CASES))
def test_transaction(hub, tap, td):
    method, mtype, payload, codes = CASES[td]
    opts = {"content_format": 0} if payload else {}
    r = request(hub, tap.uri + "/test", method, payload=payload, mtype=mtype, **opts)
    req = sole_request(tap)
    assert req.mtype == mtype and req.code.name == method and req.token
    assert code_str(r.code) in codes, r
    assert r.token == req.token
    if mtype == CON:
        assert r.mtype == ACK and r.mid == req.mid
    else:
        assert r.mtype == NON
    if r.payload or method == "GET":
        assert r.opt.content_format is not None and r.payload


def check_separate(tap: Tap, r) -> None:
    req = sole_request(tap)
    assert req.mtype == CON
    s2c = wire(tap, S2C)
    ack = next(m for m in s2c if m.mtype == ACK and m.mid == req.mid)
    assert ack.code.name == "EMPTY" and ack.payload == b"" and ack.token == b""
    resp = next(m for m in s2c if m.code.is_response())
    assert resp.mtype == CON and resp.token == req.token and resp.payload
    assert r.mtype == CON and r.payload == resp.payload and code_str(r.code) == "2.05"

    # aiocoap hands the response over before its ACK is on the wire: wait for it
    def cack():
        return [m for m in wire(tap, C2S) if m.mtype == ACK and m.mid == resp.mid]

    assert wait_until(cack, 2)
    assert cack()[0].payload == b"" and cack()[0].code.name == "EMPTY"


def test_TD_COAP_CORE_09(hub, tap):
    r = request(hub, tap.uri + "/separate", "GET")
    check_separate(tap, r)
    assert r.opt.content_format is not None


def test_TD_COAP_CORE_10(hub, tap):
    r = request(hub, tap.uri + "/test", "GET")
    req = sole_request(tap)
    assert 1 <= len(req.token) <= 8 and r.token == req.token
    assert r.mtype == ACK and r.payload and r.opt.content_format is not None


def test_TD_COAP_CORE_11(hub, tap):
    r = request(hub, tap.uri + "/separate", "GET")
    assert 1 <= len(sole_request(tap).token) <= 8
    check_separate(tap, r)


def test_TD_COAP_CORE_12(hub, tap):
    """aiocoap has no option for a zero-length token, but its token counter
    gives one when it stands at 0: it is set so before the request."""

    async def body(ctx, aiocoap):
        for ri in ctx.request_interfaces:
            if hasattr(ri, "_token"):
                ri._token = 2**64 - 1  # next_token(): 0 -> b""
        return await ctx.request(aiocoap.Message(code=aiocoap.GET, uri=tap.uri + "/test")).response

    r = aio(hub, body)
    req = sole_request(tap)
    assert req.token == b"" and r.token == b"" and r.mtype == ACK and r.mid == req.mid
    assert code_str(r.code) == "2.05" and r.payload and r.opt.content_format is not None


def test_TD_COAP_CORE_13(hub, tap):
    r = request(hub, tap.uri + "/seg1/seg2/seg3", "GET")
    assert sole_request(tap).opt.uri_path == ("seg1", "seg2", "seg3")
    assert code_str(r.code) == "2.05" and r.payload and r.opt.content_format is not None


def test_TD_COAP_CORE_14(hub, tap):
    r = request(hub, tap.uri + "/query?first=1&second=2&third=3", "GET")
    assert sole_request(tap).opt.uri_query == ("first=1", "second=2", "third=3")
    assert r.payload == b"first=1&second=2&third=3" and r.opt.content_format is not None


class LossyLink:
    """Seeded loss both ways, at most two drops in a row per direction."""

    def __init__(self, seed: int, loss: float = 0.3) -> None:
        self.rng = random.Random(seed)
        self.loss = loss
        self.run = {C2S: 0, S2C: 0}

    def __call__(self, direction, msg) -> bool:
        if self.rng.random() < self.loss and self.run[direction] < 2:
            self.run[direction] += 1
            return True
        self.run[direction] = 0
        return False


@pytest.mark.parametrize("td", ["TD_COAP_CORE_15", "TD_COAP_CORE_16"])
def test_lossy(hub, make_plug, td):
    plug = make_plug(max_retransmit=4, separate_time=0.1)
    path = "/test" if td == "TD_COAP_CORE_15" else "/separate"
    with Tap(("127.0.0.1", plug.port), drop=LossyLink(seed=15)) as tap:

        async def body(ctx, aiocoap):
            got = []
            for _ in range(12):
                msg = aiocoap.Message(code=aiocoap.GET, uri=tap.uri + path, transport_tuning=fast())
                got.append(await ctx.request(msg).response)
                if tap.dropped(C2S) and tap.dropped(S2C):
                    break
            await asyncio.sleep(0.3)  # the last ACKs
            return got

        got = aio(hub, body, 30)
    assert all(code_str(r.code) == "2.05" and r.payload for r in got)
    assert tap.dropped(C2S) and tap.dropped(S2C)
    # aiocoap 0.4.17 goes on retransmitting a request whose empty ACK was lost
    # after the separate response came (and RSTs that response's copies): the
    # client's step 9, not the server's, so it is not checked here
    cases = check_recovery(tap.snapshot(), client_stops=td == "TD_COAP_CORE_15")
    assert sum(cases.values()) >= 2, cases


def test_TD_COAP_CORE_17(hub, tap):
    r = request(hub, tap.uri + "/separate", "GET", mtype=NON)
    req = sole_request(tap)
    assert req.mtype == NON
    assert not [m for m in wire(tap, S2C) if m.mtype == ACK]
    assert r.mtype == NON and code_str(r.code) == "2.05" and r.token == req.token
    assert r.payload and r.opt.content_format is not None


def test_TD_COAP_CORE_18(hub, tap):
    r = request(hub, tap.uri + "/test", "POST", payload=b"x", content_format=0)
    assert code_str(r.code) == "2.01" and r.mtype == ACK
    assert r.opt.location_path == ("location1", "location2", "location3")


def test_TD_COAP_CORE_19(hub, tap):
    r = request(hub, tap.uri + "/location-query", "POST", content_format=0)
    assert code_str(r.code) == "2.01" and r.opt.location_query == ("first=1", "second=2")


def test_TD_COAP_CORE_20(hub, tap):
    r = request(hub, tap.uri + "/multi-format", "GET", accept=0)
    assert r.opt.content_format == 0 and r.payload == b"multi-format"
    r2 = request(hub, tap.uri + "/multi-format", "GET", accept=41)
    assert r2.opt.content_format == 41 and r2.payload.startswith(b"<")
    a, b = requests(tap)
    assert a.opt.accept == 0 and b.opt.accept == 41


def test_TD_COAP_CORE_21(hub, tap):
    uri = tap.uri + "/validate"
    r1 = request(hub, uri, "GET")
    etag1 = r1.opt.etag
    assert code_str(r1.code) == "2.05" and etag1 and r1.payload
    r2 = request(hub, uri, "GET", etags=(etag1,))
    assert code_str(r2.code) == "2.03" and r2.opt.etag == etag1 and r2.payload == b""
    assert code_str(request(hub, uri, "PUT", payload=b"v2 now", content_format=0).code) == "2.04"
    r3 = request(hub, uri, "GET", etags=(etag1,))
    assert code_str(r3.code) == "2.05" and r3.opt.etag not in (None, etag1)
    assert r3.payload not in (b"", r1.payload)


def test_TD_COAP_CORE_22(hub, tap, plug):
    uri = tap.uri + "/validate"
    etag1 = request(hub, uri, "GET").opt.etag
    r = request(hub, uri, "PUT", payload=b"step 5", content_format=0, if_match=(etag1,))
    assert code_str(r.code) == "2.04"
    r = request(hub, uri, "GET")
    etag2 = r.opt.etag
    assert etag2 not in (None, etag1) and r.payload == b"step 5"
    request(hub, uri, "PUT", payload=b"step 13", content_format=0)
    r = request(hub, uri, "PUT", payload=b"step 17", content_format=0, if_match=(etag2,))
    assert code_str(r.code) == "4.12"
    assert plug.state.validate == b"step 13"


def test_TD_COAP_CORE_23(hub, tap, plug):
    uri = tap.uri + "/create1"
    r = request(hub, uri, "PUT", payload=b"first", content_format=0, if_none_match=True)
    assert code_str(r.code) == "2.01"
    r = request(hub, uri, "PUT", payload=b"second", content_format=0, if_none_match=True)
    assert code_str(r.code) == "4.12"
    assert plug.state.create1 == b"first"


def test_TD_COAP_CORE_31(hub, tap):
    """aiocoap has no ping command: its message layer sends the empty CON
    (with its own retransmission) and reports the RST to the monitor."""

    async def body(ctx, aiocoap):
        mm = ctx.request_interfaces[0].token_interface  # the MessageManager
        probe = aiocoap.Message(code=aiocoap.GET, uri=tap.uri)
        await mm.fill_or_recognize_remote(probe)  # resolves the remote
        msg = aiocoap.Message(code=aiocoap.EMPTY, transport_tuning=aiocoap.Reliable())
        msg.remote = probe.remote
        msg.mtype = aiocoap.CON
        got = asyncio.get_running_loop().create_future()
        mm.send_message(msg, lambda: got.done() or got.set_result("RST"))
        return await asyncio.wait_for(got, 3)

    assert aio(hub, body) == "RST"
    (ping,) = [s.data for s in tap.snapshot() if s.direction == C2S]
    assert len(ping) == 4 and ping[0] == 0x40 and ping[1] == 0  # CON, code 0, no token
    (rst,) = [s.data for s in tap.snapshot() if s.direction == S2C]
    assert rst == bytes([0x70, 0]) + ping[2:]  # four-byte RST, the same MID


# -- LINK -------------------------------------------------------------------------


def test_TD_COAP_LINK_01(hub, tap):
    r = request(hub, tap.uri + "/.well-known/core", "GET")
    assert code_str(r.code) == "2.05" and r.opt.content_format == 40
    assert PLUGTEST_RESOURCES <= link_targets(r.payload)


@pytest.mark.parametrize("td", sorted(LINK_FILTERS))
def test_link_filter(hub, tap, td):
    query, expected = LINK_FILTERS[td]
    r = request(hub, f"{tap.uri}/.well-known/core?{query}", "GET")
    assert r.opt.content_format == 40 and link_targets(r.payload) == expected
    assert sole_request(tap).opt.uri_query == (query,)


def test_TD_COAP_LINK_09(hub, tap):
    r = request(hub, tap.uri + "/.well-known/core?ct=40", "GET")
    assert link_targets(r.payload) == {"/path"}
    r = request(hub, tap.uri + "/path", "GET")
    assert r.opt.content_format == 40 and link_targets(r.payload) == PATH_SUBS
    r = request(hub, tap.uri + "/path/sub1", "GET")
    assert code_str(r.code) == "2.05" and b"/path/sub1" in r.payload


# -- BLOCK ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "td, szx", [("TD_COAP_BLOCK_01", 2), ("TD_COAP_BLOCK_02", None), ("TD_COAP_BLOCK_06", 0)]
)
def test_block2(hub, tap, td, szx):
    from aiocoap.optiontypes import BlockOption

    opts = {} if szx is None else {"block2": BlockOption.BlockwiseTuple(0, False, szx)}
    r = request(hub, tap.uri + "/large", "GET", **opts)
    assert code_str(r.code) == "2.05" and r.payload == LARGE_BODY
    gets = requests(tap)
    if szx is None:
        assert gets[0].opt.block2 is None
    else:
        assert tuple(gets[0].opt.block2) == (0, False, szx)
    resps = [m for m in wire(tap, S2C) if m.code.is_response()]
    act = resps[0].opt.block2.size_exponent
    assert resps[0].opt.block2.more and len(resps[0].payload) == 1 << (act + 4)
    nums = [m.opt.block2.block_number for m in gets[1:]]
    assert nums == list(range(1, len(gets)))
    assert all(m.opt.block2.size_exponent == act for m in gets[1:])
    assert not resps[-1].opt.block2.more


def block1_check(tap: Tap, method: str, body: bytes) -> None:
    """The Block1 requests carry NUM = 0..n, M = 1 but on the last, one SZX
    (aiocoap's choice: 1,024 bytes), the body in order; 2.31 Continue answers
    each but the last, all with Block1 NUM = i."""
    ups = [m for m in requests(tap) if m.code.name == method and m.opt.block1 is not None]
    assert ups, requests(tap)
    szx = ups[0].opt.block1.size_exponent
    size = 1 << (szx + 4)
    n = (len(body) + size - 1) // size
    assert [tuple(m.opt.block1) for m in ups] == [(i, i < n - 1, szx) for i in range(n)]
    assert b"".join(m.payload for m in ups) == body
    acks = {m.mid: m for m in wire(tap, S2C) if m.mtype == ACK}
    for i, m in enumerate(ups):
        r = acks[m.mid]
        assert r.opt.block1.block_number == i and r.opt.block1.more == (i < n - 1)
        if i < n - 1:
            assert code_str(r.code) == "2.31"


#: larger than aiocoap's 1,024-byte blocks (it sends Block1 only then)
BIG_UPLOAD = UPLOAD * 3


def test_TD_COAP_BLOCK_03(hub, tap, plug):
    r = request(hub, tap.uri + "/large-update", "PUT", payload=BIG_UPLOAD, content_format=0)
    assert code_str(r.code) == "2.04" and plug.state.large_update == BIG_UPLOAD
    block1_check(tap, "PUT", BIG_UPLOAD)


def test_TD_COAP_BLOCK_04(hub, tap):
    r = request(hub, tap.uri + "/large-create", "POST", payload=BIG_UPLOAD, content_format=0)
    assert code_str(r.code) == "2.01"
    loc = r.opt.location_path
    assert len(loc) == 2 and loc[0] == "large-create"
    block1_check(tap, "POST", BIG_UPLOAD)
    got = request(hub, tap.uri + "/" + "/".join(loc), "GET")
    assert code_str(got.code) == "2.05" and got.payload == BIG_UPLOAD


def test_TD_COAP_BLOCK_05(hub, tap):
    r = request(hub, tap.uri + "/large-post", "POST", payload=BIG_UPLOAD, content_format=0)
    assert code_str(r.code) == "2.04" and r.payload == BIG_UPLOAD.upper()
    block1_check(tap, "POST", BIG_UPLOAD)
    down = [m for m in requests(tap) if m.opt.block1 is None]
    assert down and all(m.payload == b"" and m.opt.block2 is not None for m in down)


# -- OBS --------------------------------------------------------------------------


def observe(hub, uri: str, count: int, *, during=None, non: bool = False, tuning=None):
    """Observe ``uri`` with aiocoap: the registration's response and up to
    ``count`` notifications (or until a final one); ``during(ctx, aiocoap,
    items)`` runs after the second item (a stimulus)."""

    async def body(ctx, aiocoap):
        kw = {}
        if non:
            kw["transport_tuning"] = aiocoap.Unreliable()
        elif tuning is not None:
            kw["transport_tuning"] = tuning
        msg = aiocoap.Message(code=aiocoap.GET, uri=uri, observe=0, **kw)
        req = ctx.request(msg)
        items = [await req.response]
        try:
            async for r in req.observation:
                items.append(r)
                if len(items) == 2 and during is not None:
                    await during(ctx, aiocoap, items)
                if len(items) > count:
                    break
        except aiocoap.error.Error as e:  # a final response ends the iteration
            items.append(e)
        finally:
            if not req.observation.cancelled:
                req.observation.cancel()
        return items

    return aio(hub, body)


def check_stream(items) -> None:
    assert all(code_str(r.code) == "2.05" for r in items), items
    assert len({r.opt.content_format for r in items}) == 1
    seqs = [r.opt.observe for r in items]
    assert all(seq_newer(a, b) for a, b in zip(seqs, seqs[1:], strict=False)), seqs


def registration(tap: Tap):
    return next(m for m in requests(tap) if m.opt.observe == 0)


def test_TD_COAP_OBS_01(hub, tap):
    items = observe(hub, tap.uri + "/obs", 3)
    check_stream(items)
    reg = registration(tap)
    assert reg.mtype == CON and items[0].mtype == ACK
    assert all(r.mtype == CON and r.token == reg.token for r in items[1:])
    acks = {m.mid for m in wire(tap, C2S) if m.mtype == ACK}
    assert all(r.mid in acks for r in items[1:])  # the client ACKs each


def test_TD_COAP_OBS_02(hub, tap):
    items = observe(hub, tap.uri + "/obs-non", 4, non=True)
    check_stream(items)
    assert registration(tap).mtype == NON
    notes = items[1:]
    assert sum(r.mtype == NON for r in notes) >= len(notes) - 1  # greencoap's first is a CON


def test_TD_COAP_OBS_04(hub, plug_process):
    """The server reboots and loses its observation; after Max-Age without a
    notification aiocoap's observation is re-registered by the test (aiocoap
    does not do it by itself, and takes a new token)."""
    proc = plug_process.start()

    async def body(ctx, aiocoap):
        uri = proc.uri + "/obs"
        req = ctx.request(aiocoap.Message(code=aiocoap.GET, uri=uri, observe=0))
        first = [await req.response]
        it = req.observation.__aiter__()
        first += [await it.__anext__(), await it.__anext__()]
        # one pending read of the stream throughout (cancelling an aiocoap
        # observation's __anext__ ends its iterator)
        nxt = asyncio.ensure_future(it.__anext__())
        proc.crash()
        # a notification the old process sent just before it died may still
        # be on its way into aiocoap: take those before the new one starts
        # (nothing taken here can come from the rebooted server)
        while (await asyncio.wait({nxt}, timeout=0.1))[0]:
            nxt.result()
            nxt = asyncio.ensure_future(it.__anext__())
        proc.start()
        if (await asyncio.wait({nxt}, timeout=0.3))[0]:
            raise AssertionError("a notification from the rebooted server")
        nxt.cancel()
        req.observation.cancel()
        again = ctx.request(aiocoap.Message(code=aiocoap.GET, uri=uri, observe=0))
        second = [await again.response]
        it = again.observation.__aiter__()
        second += [await it.__anext__(), await it.__anext__()]
        again.observation.cancel()
        return first, second

    first, second = aio(hub, body, 20)
    assert all(r.opt.max_age == MAX_AGE for r in first)
    check_stream(first)
    check_stream(second)
    assert second[0].mtype == ACK and second[0].opt.observe is not None


def test_TD_COAP_OBS_05(hub, make_plug):
    """Client OFF: after some notifications nothing reaches aiocoap any more
    (the tap drops everything); the server's CON notifications are
    retransmitted with newer Observe values, then it gives up."""
    plug = make_plug(max_retransmit=2, ack_timeout=0.05)
    with Tap(("127.0.0.1", plug.port)) as tap:
        stop = []

        async def body(ctx, aiocoap):
            req = ctx.request(aiocoap.Message(code=aiocoap.GET, uri=tap.uri + "/obs", observe=0))
            items = [await req.response]
            it = req.observation.__aiter__()
            items += [await it.__anext__(), await it.__anext__()]
            await asyncio.sleep(0.05)  # its ACK goes
            tap.blackhole = True  # switched off
            stop.append(len(tap.snapshot()))
            await asyncio.sleep(0.2)
            return items

        items = aio(hub, body)
        check_stream(items)
        assert wait_until(lambda: plug.stats["observers"] == 0, 4)
        off_seen = [s.msg for s in tap.snapshot()[stop[0] :] if s.direction == S2C]
    assert off_seen and all(m.mtype == CON for m in off_seen), off_seen
    assert len({m.observe for m in off_seen}) >= 2  # newer states in the retransmissions
    assert plug.stats.get("observers_dropped_timeout") == 1


def test_TD_COAP_OBS_06(hub, plug):
    """The client reboots: its aiocoap endpoint (a server context, so that the
    port can be chosen) shuts down without deregistering, a new one comes up
    on the same port, gets the next notification (an unknown token to it) and
    answers RST; the server stops notifying."""
    from ..conftest import free_port

    port = free_port()
    with Tap(("127.0.0.1", plug.port)) as tap:

        async def body(ctx_unused, aiocoap):
            from aiocoap import resource

            site = resource.Site()
            bind = ("127.0.0.1", port)
            old = await aiocoap.Context.create_server_context(site, bind, transports=["udp6"])
            msg = aiocoap.Message(code=aiocoap.GET, uri=tap.uri + "/obs", observe=0)
            req = old.request(msg)
            await req.response
            await req.observation.__aiter__().__anext__()
            await old.shutdown()
            n = len(tap.snapshot())
            new = await aiocoap.Context.create_server_context(site, bind, transports=["udp6"])
            await asyncio.sleep(0.25)
            await new.shutdown()
            return n

        n = aio(hub, body)
    after = tap.snapshot()[n:]
    rst = [s.msg for s in after if s.direction == C2S and s.msg.mtype == RST]
    assert rst, after
    note = next(s.msg for s in after if s.direction == S2C and s.msg.mid == rst[0].mid)
    assert note.mtype == CON and note.token == registration(tap).token
    assert wait_until(lambda: plug.stats["observers"] == 0, 2)
    assert plug.stats.get("observers_dropped_rst") == 1


def stimulus(code: str, payload: bytes = b"", ct: int | None = None):
    async def during(ctx, aiocoap, items):
        uri = items[0].get_request_uri()
        msg = aiocoap.Message(code=getattr(aiocoap, code), uri=uri, payload=payload)
        if ct is not None:
            msg.opt.content_format = ct
        r = await ctx.request(msg).response
        assert code_str(r.code) in ("2.04", "2.02")

    return during


def final_of(items):
    import aiocoap

    last = items[-1]
    assert isinstance(last, aiocoap.error.UnexpectedResponse) or not isinstance(last, Exception), (
        last
    )
    return last.args[0] if isinstance(last, Exception) else last


def test_TD_COAP_OBS_07(hub, tap, plug):
    items = observe(hub, tap.uri + "/obs", 20, during=stimulus("DELETE"))
    final = [m for m in wire(tap, S2C) if m.code.is_response() and code_str(m.code) == "4.04"]
    assert final and final[0].mtype == CON and final[0].opt.observe is None
    assert final[0].token == registration(tap).token
    assert len(items) < 20  # the iteration ended
    assert plug.stats["observers"] == 0


def test_TD_COAP_OBS_08(hub, tap, plug):
    observe(hub, tap.uri + "/obs", 5, during=stimulus("PUT", b"<v>new</v>", 41))
    token = registration(tap).token
    after = [m for m in wire(tap, S2C) if m.token == token and m.code.is_response()]
    changed = [m for m in after if m.opt.content_format != 0 or code_str(m.code) != "2.05"]
    assert changed, after
    final = changed[0]
    assert code_str(final.code) == "4.06" and final.mtype == CON and final.opt.observe is None, (
        final
    )
    assert plug.stats["observers"] == 0


def test_TD_COAP_OBS_09(hub, tap):
    items = observe(hub, tap.uri + "/obs", 6, during=stimulus("PUT", b"a new value", 0))
    check_stream(items)
    new = [r for r in items if r.payload == b"a new value"]
    assert new and new[0].mtype == CON


def test_TD_COAP_OBS_10(hub, tap):
    async def unrelated(ctx, aiocoap, items):
        r = await ctx.request(
            aiocoap.Message(code=aiocoap.GET, uri=items[0].get_request_uri())
        ).response
        assert r.opt.observe is None and r.mtype == ACK
        assert r.opt.content_format == items[0].opt.content_format

    items = observe(hub, tap.uri + "/obs", 4, during=unrelated)
    check_stream(items)
    reg = registration(tap)
    plain = next(m for m in requests(tap) if m.opt.observe is None)
    assert plain.token != reg.token and all(r.token == reg.token for r in items)


def test_TD_COAP_OBS_11(hub, make_plug):
    plug = make_plug(max_retransmit=4)
    with Tap(("127.0.0.1", plug.port), drop=LossyLink(seed=11, loss=0.25)) as tap:
        items = observe(hub, tap.uri + "/obs", 5, tuning=fast())
    check_stream(items)
    assert tap.dropped(S2C) and tap.dropped(C2S)
    token = registration(tap).token
    runs: list[int] = []
    for s in tap.snapshot():
        m = s.msg
        if s.direction == S2C and m.mtype == CON and m.token == token:
            if runs and runs[-1] == m.mid:
                continue
            assert m.mid not in runs, f"notification MID {m.mid:#x} again after another"
            runs.append(m.mid)


@pytest.mark.parametrize("td", ["TD_COAP_OBS_13", "TD_COAP_OBS_14"])
def test_observe_large(hub, tap, td):
    items = observe(hub, tap.uri + "/obs-large", 4)
    states = [obs_large_state(r.payload) for r in items]
    assert None not in states, [len(r.payload) for r in items]
    reg = registration(tap)
    follow = [m for m in requests(tap) if m.opt.block2 is not None]
    assert follow and all(m.opt.observe is None for m in follow)
    notes = [m for m in wire(tap, S2C) if m.token == reg.token and m.mtype == CON]
    assert notes and all(m.opt.block2.block_number == 0 and m.opt.block2.more for m in notes)
    if td == "TD_COAP_OBS_14":
        assert len({len(r.payload) for r in items}) >= 2
