"""Direction A, raw datagrams: each TD's stimulus sent from a plain UDP socket
to greencoap's plugtest server, every verify step checked on the wire (type,
code, MID and token echo, options, payload)."""

from __future__ import annotations

import time

import pytest

from greencoap import Code, Message, Type

from .checks import (
    LARGE_BODY,
    UPLOAD,
    block_value,
    check_recovery,
    link_attrs,
    link_targets,
    obs_large_state,
)
from .checks import seq_newer as newer
from .conftest import MAX_AGE, OBS_PERIOD, SEPARATE_TIME, wait_until
from .tds import LINK_FILTERS, PATH_SUBS, PLUGTEST_RESOURCES
from .wire import C2S, S2C, RawPeer, Tap, raw_session

pytestmark = pytest.mark.timeout(60)


CF, ETAG, OBSERVE, LOC_PATH, LOC_QUERY = 12, 4, 6, 8, 20
ACCEPT, IF_MATCH, IF_NONE_MATCH, BLOCK2, BLOCK1, SIZE2 = 17, 1, 5, 23, 27, 28
TOKEN = b"\x5a\x11\xc0\xde"


def block(num: int, more: bool, szx: int) -> bytes:
    v = (num << 4) | (8 if more else 0) | szx
    return v.to_bytes((v.bit_length() + 7) // 8, "big") if v else b""


def piggybacked(req: Message, resp: Message, *codes: int) -> None:
    """ACK carrying the response: MID = CMID, Token = CTOK, code one of ``codes``."""
    assert resp.mtype == Type.ACK, resp
    assert resp.mid == req.mid and resp.token == req.token, (req, resp)
    assert resp.code in codes, resp


def cf_if_payload(resp: Message) -> None:
    if resp.payload:
        assert resp.content_format is not None, f"payload without Content-Format: {resp}"


def content(resp: Message) -> None:
    """2.05 with a Content-Format option and a non-empty payload."""
    assert resp.code == Code.CONTENT, resp
    assert resp.content_format is not None and resp.payload, resp


# -- CORE: CON and NON transactions ------------------------------------------------

CON_CASES = {
    "TD_COAP_CORE_01": (Code.GET, b"", (Code.CONTENT,)),
    "TD_COAP_CORE_02": (Code.DELETE, b"", (Code.DELETED,)),
    "TD_COAP_CORE_03": (Code.PUT, b"plugtest PUT", (Code.CHANGED, Code.CREATED)),
    "TD_COAP_CORE_04": (Code.POST, b"plugtest POST", (Code.CREATED, Code.CHANGED)),
}
NON_CASES = {
    "TD_COAP_CORE_05": (Code.GET, b"", (Code.CONTENT,)),
    "TD_COAP_CORE_06": (Code.DELETE, b"", (Code.DELETED,)),
    "TD_COAP_CORE_07": (Code.PUT, b"plugtest PUT", (Code.CHANGED, Code.CREATED)),
    "TD_COAP_CORE_08": (Code.POST, b"plugtest POST", (Code.CREATED, Code.CHANGED)),
}


@pytest.mark.parametrize("td", sorted(CON_CASES))
def test_con_transaction(hub, plug, td):
    code, payload, codes = CON_CASES[td]

    def script(peer: RawPeer):
        opts = [(CF, b"")] if payload else []
        req = peer.request(code, "/test", token=TOKEN, options=opts, payload=payload)
        resp = peer.expect(mid=req.mid)
        piggybacked(req, resp, *codes)
        cf_if_payload(resp)
        if code == Code.GET:
            content(resp)
        return resp

    resp = raw_session(hub, plug.port, script)
    if td == "TD_COAP_CORE_04":  # zero or more Location-Path options
        assert all(b"/" not in v for v in resp.opts(LOC_PATH))
    if td == "TD_COAP_CORE_03":
        assert plug.state.test == b"plugtest PUT"  # the server took it


@pytest.mark.parametrize("td", sorted(NON_CASES))
def test_non_transaction(hub, plug, td):
    code, payload, codes = NON_CASES[td]

    def script(peer: RawPeer):
        opts = [(CF, b"")] if payload else []
        peer.request(code, "/test", mtype=Type.NON, token=TOKEN, options=opts, payload=payload)
        resp = peer.expect(token=TOKEN)
        assert resp.mtype == Type.NON, resp  # a NON request gets a NON response
        assert resp.code in codes, resp
        cf_if_payload(resp)
        if code == Code.GET:
            assert resp.content_format is not None
        assert not [m for m in peer.gather(0.05) if m.mtype == Type.ACK], "a NON got an ACK"
        return resp

    raw_session(hub, plug.port, script)


def separate_exchange(peer: RawPeer, token: bytes) -> tuple[Message, Message, Message]:
    """CON GET /separate: the empty ACK (MID = CMID), then the CON response
    (token = CTOK), which we ACK; the server must not send it again."""
    req = peer.request(Code.GET, "/separate", token=token)
    first = peer.recv(SEPARATE_TIME + 2)
    second = peer.recv(SEPARATE_TIME + 2)
    ack, resp = (first, second) if first.mtype == Type.ACK else (second, first)  # any order
    assert ack.mtype == Type.ACK and ack.code == Code.EMPTY and ack.mid == req.mid, ack
    assert ack.payload == b"" and ack.token == b"", ack
    assert resp.mtype == Type.CON and resp.code == Code.CONTENT, resp
    assert resp.token == token and resp.payload, resp
    peer.ack(resp)
    again = [m for m in peer.gather(0.25) if m.mid == resp.mid]
    assert not again, f"the server retransmitted an ACKed response: {again}"
    return req, ack, resp


def test_TD_COAP_CORE_09(hub, plug):
    def script(peer: RawPeer):
        req, ack, resp = separate_exchange(peer, TOKEN)
        assert resp.content_format is not None

    raw_session(hub, plug.port, script)


def test_TD_COAP_CORE_10(hub, plug):
    token = bytes(range(1, 9))  # 8 bytes, the longest

    def script(peer: RawPeer):
        req = peer.request(Code.GET, "/test", token=token)
        resp = peer.expect(mid=req.mid)
        piggybacked(req, resp, Code.CONTENT)
        content(resp)

    raw_session(hub, plug.port, script)


def test_TD_COAP_CORE_11(hub, plug):
    raw_session(hub, plug.port, lambda peer: separate_exchange(peer, b"\x01\x02\x03"))


def test_TD_COAP_CORE_12(hub, plug):
    def script(peer: RawPeer):
        req = peer.request(Code.GET, "/test", token=b"")
        resp = peer.expect(mid=req.mid)
        piggybacked(req, resp, Code.CONTENT)
        assert resp.token == b""
        content(resp)

    raw_session(hub, plug.port, script)


def test_TD_COAP_CORE_13(hub, plug):
    def script(peer: RawPeer):
        req = peer.request(Code.GET, "/seg1/seg2/seg3", token=TOKEN)
        assert req.opts(11) == [b"seg1", b"seg2", b"seg3"]
        resp = peer.expect(mid=req.mid)
        piggybacked(req, resp, Code.CONTENT)
        content(resp)

    raw_session(hub, plug.port, script)


def test_TD_COAP_CORE_14(hub, plug):
    def script(peer: RawPeer):
        req = peer.request(Code.GET, "/query?first=1&second=2&third=3", token=TOKEN)
        resp = peer.expect(mid=req.mid)
        piggybacked(req, resp, Code.CONTENT)
        content(resp)
        assert resp.payload == b"first=1&second=2&third=3"  # all three reached the resource

    raw_session(hub, plug.port, script)


# -- CORE: lossy context --------------------------------------------------------


class LossyLink:
    """Seeded loss in both directions, at most two drops in a row per direction
    (a bad link, not a dead one: the exchange lifetimes stay within the test)."""

    def __init__(self, seed: int, loss: float = 0.3) -> None:
        import random

        self.rng = random.Random(seed)
        self.loss = loss
        self.run = {C2S: 0, S2C: 0}

    def __call__(self, direction: str, msg: Message) -> bool:
        if self.rng.random() < self.loss and self.run[direction] < 2:
            self.run[direction] += 1
            return True
        self.run[direction] = 0
        return False


def lossy_get(peer: RawPeer, path: str, token: bytes, rto: float = 0.15) -> Message:
    """A CON GET with RFC 7252 retransmission (same MID) until its response
    arrives (piggybacked, or separate after an empty ACK), ACKing CONs."""
    req = peer.request(Code.GET, path, token=token)
    acked = False
    deadline = time.monotonic() + 20
    timeout = rto
    while time.monotonic() < deadline:
        try:
            msg = peer.recv(timeout)
        except TimeoutError:
            if not acked:
                peer.send(req)  # retransmission: the same MID and token
                timeout *= 2
            else:
                timeout = rto
            continue
        if msg.mtype == Type.ACK and msg.mid == req.mid:
            if msg.code == Code.EMPTY:
                acked = True  # separate response on its way: stop retransmitting
                continue
            return msg
        if msg.token == token and msg.mtype in (Type.CON, Type.NON):
            if msg.mtype == Type.CON:
                peer.ack(msg)
            return msg
        if msg.mtype == Type.CON:
            peer.ack(msg)  # a retransmission of a response we had: ACK again
    raise AssertionError(f"no response for {path}")


@pytest.mark.parametrize("td", ["TD_COAP_CORE_15", "TD_COAP_CORE_16"])
def test_lossy(hub, make_plug, td):
    plug = make_plug(max_retransmit=4, separate_time=0.1)
    path = "/test" if td == "TD_COAP_CORE_15" else "/separate"
    with Tap(("127.0.0.1", plug.port), drop=LossyLink(seed=15)) as tap:

        def script(peer: RawPeer):
            peer.dest = ("127.0.0.1", tap.port)
            got = []
            for i in range(12):
                resp = lossy_get(peer, path, token=bytes([0x15, i]))
                assert resp.code == Code.CONTENT and resp.payload, resp
                assert resp.content_format is not None
                got.append(resp)
                if tap.dropped(C2S) and tap.dropped(S2C):
                    break
            # ACK late retransmissions: one whose ACK was dropped twice is due
            # again ~0.6 s after its first send (ACK_TIMEOUT 0.1, doubling)
            peer.gather(1.2)
            return got

        got = raw_session(hub, plug.port, script, timeout=40)
    assert got
    # the repeated steps saw at least one dropped request and one dropped response,
    # and each was made good by a retransmission
    assert tap.dropped(C2S) >= 1 and tap.dropped(S2C) >= 1, tap.snapshot()
    cases = check_recovery(tap.snapshot())
    assert sum(cases.values()) >= 2, cases


def test_TD_COAP_CORE_17(hub, plug):
    def script(peer: RawPeer):
        req = peer.request(Code.GET, "/separate", mtype=Type.NON, token=TOKEN)
        resp = peer.recv(SEPARATE_TIME + 2)
        # no empty ACK for a NON request: the first thing to come is the response
        assert not (resp.mtype == Type.ACK and resp.mid == req.mid), resp
        assert resp.mtype == Type.NON and resp.code == Code.CONTENT, resp
        assert resp.token == TOKEN and resp.content_format is not None and resp.payload

    raw_session(hub, plug.port, script)


def test_TD_COAP_CORE_18(hub, plug):
    def script(peer: RawPeer):
        req = peer.request(Code.POST, "/test", token=TOKEN, options=[(CF, b"")], payload=b"x")
        resp = peer.expect(mid=req.mid)
        piggybacked(req, resp, Code.CREATED)
        assert resp.opts(LOC_PATH) == [b"location1", b"location2", b"location3"]

    raw_session(hub, plug.port, script)


def test_TD_COAP_CORE_19(hub, plug):
    def script(peer: RawPeer):
        req = peer.request(Code.POST, "/location-query", token=TOKEN, options=[(CF, b"")])
        resp = peer.expect(mid=req.mid)
        piggybacked(req, resp, Code.CREATED)
        assert resp.opts(LOC_QUERY) == [b"first=1", b"second=2"]
        cf_if_payload(resp)

    raw_session(hub, plug.port, script)


def test_TD_COAP_CORE_20(hub, plug):
    def script(peer: RawPeer):
        req = peer.request(Code.GET, "/multi-format", token=b"a1", options=[(ACCEPT, b"")])
        resp = peer.expect(mid=req.mid)
        piggybacked(req, resp, Code.CONTENT)
        assert resp.content_format == 0 and resp.payload == b"multi-format"
        req2 = peer.request(Code.GET, "/multi-format", token=b"a2", options=[(ACCEPT, b"\x29")])
        assert req2.mid != req.mid
        resp2 = peer.expect(mid=req2.mid)
        piggybacked(req2, resp2, Code.CONTENT)
        assert resp2.content_format == 41 and resp2.payload.startswith(b"<")

    raw_session(hub, plug.port, script)


def test_TD_COAP_CORE_21(hub, plug):
    def script(peer: RawPeer):
        # Part A: no ETag in the request, the server chooses one
        req = peer.request(Code.GET, "/validate", token=b"e1")
        resp = peer.expect(mid=req.mid)
        piggybacked(req, resp, Code.CONTENT)
        etag1, pl3 = resp.etag, resp.payload
        assert etag1 and pl3
        # Part B: the cached ETag is still valid -> 2.03 with the ETag, no payload
        req2 = peer.request(Code.GET, "/validate", token=b"e2", options=[(ETAG, etag1)])
        resp2 = peer.expect(mid=req2.mid)
        piggybacked(req2, resp2, Code.VALID)
        assert resp2.etag == etag1 and resp2.payload == b""
        # Part C: another client updates the resource; the ETag is no longer valid
        other = RawPeer(plug.port)
        try:
            put = other.request(Code.PUT, "/validate", options=[(CF, b"")], payload=b"v2 now")
            assert other.expect(mid=put.mid).code == Code.CHANGED
        finally:
            other.close()
        req3 = peer.request(Code.GET, "/validate", token=b"e3", options=[(ETAG, etag1)])
        resp3 = peer.expect(mid=req3.mid)
        piggybacked(req3, resp3, Code.CONTENT)
        assert resp3.etag not in (None, etag1) and resp3.payload not in (b"", pl3)
        assert len({req.mid, req2.mid, req3.mid}) == 3

    raw_session(hub, plug.port, script)


def test_TD_COAP_CORE_22(hub, plug):
    def script(peer: RawPeer):
        req = peer.request(Code.GET, "/validate", token=b"i1")
        resp = peer.expect(mid=req.mid)
        piggybacked(req, resp, Code.CONTENT)
        etag1 = resp.etag
        assert etag1 and resp.payload
        # Part A: an atomic update with If-Match = ETAG1
        put = peer.request(
            Code.PUT,
            "/validate",
            token=b"i2",
            options=[(CF, b""), (IF_MATCH, etag1)],
            payload=b"step 5",
        )
        r = peer.expect(mid=put.mid)
        piggybacked(put, r, Code.CHANGED)
        cf_if_payload(r)
        # Part B: the new representation has another ETag
        get = peer.request(Code.GET, "/validate", token=b"i3")
        r = peer.expect(mid=get.mid)
        piggybacked(get, r, Code.CONTENT)
        etag2 = r.etag
        assert etag2 not in (None, etag1) and r.payload == b"step 5"
        other = RawPeer(plug.port)  # a concurrent update from another client
        try:
            p = other.request(Code.PUT, "/validate", options=[(CF, b"")], payload=b"step 13")
            assert other.expect(mid=p.mid).code == Code.CHANGED
        finally:
            other.close()
        put2 = peer.request(
            Code.PUT,
            "/validate",
            token=b"i5",
            options=[(CF, b""), (IF_MATCH, etag2)],
            payload=b"step 17",
        )
        r = peer.expect(mid=put2.mid)
        piggybacked(put2, r, Code.PRECONDITION_FAILED)

    raw_session(hub, plug.port, script)
    assert plug.state.validate == b"step 13"  # the server did not take step 17


def test_TD_COAP_CORE_23(hub, plug):
    def script(peer: RawPeer):
        opts = [(CF, b""), (IF_NONE_MATCH, b"")]
        put = peer.request(Code.PUT, "/create1", token=b"n1", options=opts, payload=b"first")
        r = peer.expect(mid=put.mid)
        piggybacked(put, r, Code.CREATED)
        cf_if_payload(r)
        put2 = peer.request(Code.PUT, "/create1", token=b"n2", options=opts, payload=b"second")
        r2 = peer.expect(mid=put2.mid)
        piggybacked(put2, r2, Code.PRECONDITION_FAILED)

    raw_session(hub, plug.port, script)
    assert plug.state.create1 == b"first"


def test_TD_COAP_CORE_31(hub, plug):
    def script(peer: RawPeer):
        ping = bytes([0x40, 0x00, 0x31, 0x31])  # four bytes: CON, code 0, MID, no token
        peer.send_bytes(ping)
        peer.sock.settimeout(2)
        data, _ = peer.sock.recvfrom(64)
        assert data == bytes([0x70, 0x00, 0x31, 0x31]), data.hex()  # four-byte RST, same MID

    raw_session(hub, plug.port, script)


# -- LINK -----------------------------------------------------------------------


def wkc(peer: RawPeer, query: str = "") -> Message:
    path = "/.well-known/core" + (f"?{query}" if query else "")
    req = peer.request(Code.GET, path, token=b"wk")
    resp = peer.expect(mid=req.mid)
    piggybacked(req, resp, Code.CONTENT)
    assert resp.content_format == 40, resp
    return resp


def test_TD_COAP_LINK_01(hub, plug):
    resp = raw_session(hub, plug.port, wkc)
    links = link_attrs(resp.payload)
    assert PLUGTEST_RESOURCES <= set(links), set(links) ^ PLUGTEST_RESOURCES
    assert "obs" in links["/obs"] and links["/multi-format"]["ct"] == "0 41"


@pytest.mark.parametrize("td", sorted(LINK_FILTERS))
def test_link_filter(hub, plug, td):
    query, expected = LINK_FILTERS[td]
    resp = raw_session(hub, plug.port, lambda peer: wkc(peer, query))
    assert link_targets(resp.payload) == expected, resp.payload


def test_TD_COAP_LINK_09(hub, plug):
    def script(peer: RawPeer):
        resp = wkc(peer, "ct=40")
        assert link_targets(resp.payload) == {"/path"}
        req = peer.request(Code.GET, "/path", token=b"p")
        r = peer.expect(mid=req.mid)
        piggybacked(req, r, Code.CONTENT)
        assert r.content_format == 40 and link_targets(r.payload) == PATH_SUBS
        sub = sorted(link_targets(r.payload))[0]
        req = peer.request(Code.GET, sub, token=b"s")
        r = peer.expect(mid=req.mid)
        piggybacked(req, r, Code.CONTENT)
        assert sub.encode() in r.payload

    raw_session(hub, plug.port, script)


# -- BLOCK ------------------------------------------------------------------------


def get_blocks(peer: RawPeer, path: str, first: int | None, szx: int | None = None) -> bytes:
    """GET ``path`` block by block.  ``first``: the first request's Block2 SZX
    (early negotiation) or None (late: no Block2, then ``szx`` from block 1)."""
    opts = [] if first is None else [(BLOCK2, block(0, False, first))]
    req = peer.request(Code.GET, path, token=b"b0", options=opts)
    r = peer.expect(mid=req.mid)
    piggybacked(req, r, Code.CONTENT)
    num, more, act = block_value(r.opt(BLOCK2))
    assert num == 0 and more, r
    if first is not None:
        assert act <= first  # ACT_SZX <= DES_SZX
    assert len(r.payload) == 1 << (act + 4)  # a full block
    etag, size2 = r.etag, r.size2
    body = bytearray(r.payload)
    if szx is None:
        szx = act
    assert szx <= act
    i = len(body) >> (szx + 4)  # late negotiation: k = 2**(DES_SZX - ACT_SZX)
    while True:
        req = peer.request(
            Code.GET, path, token=b"b%d" % i, options=[(BLOCK2, block(i, False, szx))]
        )
        r = peer.expect(mid=req.mid)
        piggybacked(req, r, Code.CONTENT)
        num, more, s = block_value(r.opt(BLOCK2))
        assert num == i and s == szx, (i, szx, r)
        assert r.etag == etag and r.size2 == size2
        if more:
            assert len(r.payload) == 1 << (szx + 4)
        else:
            assert 0 < len(r.payload) <= 1 << (szx + 4)  # the runt
        body += r.payload
        if not more:
            return bytes(body)
        i += 1


@pytest.mark.parametrize(
    "td, first, szx",
    [("TD_COAP_BLOCK_01", 2, None), ("TD_COAP_BLOCK_02", None, 4), ("TD_COAP_BLOCK_06", 0, None)],
)
def test_block2(hub, plug, td, first, szx):
    body = raw_session(hub, plug.port, lambda peer: get_blocks(peer, "/large", first, szx))
    assert body == LARGE_BODY  # no gaps, right order


def put_blocks(peer: RawPeer, code: int, path: str, body: bytes, szx: int) -> Message:
    """Send ``body`` in Block1 blocks; every 2.31 Continue carries Block1 NUM=i
    M=1 (atomic); returns the final response (Block1 NUM=n M=0)."""
    size = 1 << (szx + 4)
    n = (len(body) + size - 1) // size
    for i in range(n):
        more = i < n - 1
        chunk = body[i * size : (i + 1) * size]
        opts = [(CF, b""), (BLOCK1, block(i, more, szx))]
        req = peer.request(code, path, token=b"u%d" % i, options=opts, payload=chunk)
        r = peer.expect(mid=req.mid)
        assert r.mtype == Type.ACK and r.token == req.token
        got = block_value(r.opt(BLOCK1))
        if more:
            assert r.code == Code.CONTINUE, r
            assert got == (i, True, szx), got  # ACT_SZX = DES_SZX here (the server takes 256)
        else:
            assert got == (i, False, szx), got
            return r
    raise AssertionError("unreachable")


def test_TD_COAP_BLOCK_03(hub, plug):
    r = raw_session(
        hub, plug.port, lambda peer: put_blocks(peer, Code.PUT, "/large-update", UPLOAD, 4)
    )
    assert r.code == Code.CHANGED
    assert plug.state.large_update == UPLOAD  # the complete updated resource


def test_TD_COAP_BLOCK_04(hub, plug):
    def script(peer: RawPeer):
        r = put_blocks(peer, Code.POST, "/large-create", UPLOAD, 4)
        assert r.code == Code.CREATED
        loc = r.opts(LOC_PATH)
        assert len(loc) == 2 and loc[0] == b"large-create" and all(b"/" not in v for v in loc)
        # optional: GET the new resource at the Location-Path (Block2 if large)
        req = peer.request(Code.GET, "/" + "/".join(v.decode() for v in loc), token=b"g")
        got = peer.expect(mid=req.mid)
        piggybacked(req, got, Code.CONTENT)
        assert got.payload == UPLOAD and got.opt(BLOCK2) is None

    raw_session(hub, plug.port, script)


def test_TD_COAP_BLOCK_05(hub, plug):
    body = UPLOAD + UPLOAD  # 1,800 bytes: Block1 up, Block2 down

    def script(peer: RawPeer):
        r = put_blocks(peer, Code.POST, "/large-post", body, 5)  # 512-byte blocks up
        assert r.code == Code.CHANGED
        num, more, rdes = block_value(r.opt(BLOCK2))
        assert (num, more) == (0, True) and len(r.payload) == 1 << (rdes + 4)
        out = bytearray(r.payload)
        ract = 4  # the client asks for smaller blocks: k = 2**(rDES - rACT)
        i = len(out) >> (ract + 4)
        while True:
            req = peer.request(
                Code.POST,
                "/large-post",
                token=b"r%d" % i,
                options=[(BLOCK2, block(i, False, ract))],
            )
            r = peer.expect(mid=req.mid)
            assert r.code == Code.CHANGED, r
            num, more, s = block_value(r.opt(BLOCK2))
            assert (num, s) == (i, ract)
            assert len(r.payload) == 1 << (ract + 4) if more else len(r.payload) <= 1 << (ract + 4)
            out += r.payload
            if not more:
                return bytes(out)
            i += 1

    assert raw_session(hub, plug.port, script) == body.upper()


# -- OBS --------------------------------------------------------------------------


def register(peer: RawPeer, path: str, token: bytes, mtype: int = Type.CON) -> Message:
    req = peer.request(Code.GET, path, mtype=mtype, token=token, options=[(OBSERVE, b"")])
    if mtype == Type.CON:
        r = peer.expect(mid=req.mid)
        piggybacked(req, r, Code.CONTENT)
    else:
        r = peer.expect(token=token)
        assert r.mtype == Type.NON and r.code == Code.CONTENT, r
    assert r.observe is not None and r.content_format is not None, r
    return r


def notifications(peer: RawPeer, token: bytes, count: int, *, ack: bool = True) -> list[Message]:
    """The next ``count`` notifications for ``token`` (CONs ACKed)."""
    out = []
    deadline = time.monotonic() + 5
    while len(out) < count:
        msg = peer.recv(max(0.01, deadline - time.monotonic()))
        if ack and msg.mtype == Type.CON:
            peer.ack(msg)
        if msg.token == token and msg.mtype in (Type.CON, Type.NON):
            out.append(msg)
    return out


def increasing(msgs: list[Message]) -> None:
    seqs = [m.observe for m in msgs]
    assert all(s is not None for s in seqs), msgs
    assert all(newer(a, b) for a, b in zip(seqs, seqs[1:], strict=False)), seqs


def deregister(peer: RawPeer, path: str, token: bytes) -> Message:
    req = peer.request(Code.GET, path, token=token, options=[(OBSERVE, b"\x01")])
    r = peer.expect(mid=req.mid)
    piggybacked(req, r, Code.CONTENT)
    assert r.observe is None, r
    return r


def test_TD_COAP_OBS_01(hub, plug):
    def script(peer: RawPeer):
        first = register(peer, "/obs", b"o1")
        notes = notifications(peer, b"o1", 3)
        assert all(m.mtype == Type.CON and m.code == Code.CONTENT for m in notes), notes
        assert all(m.content_format == first.content_format for m in notes)
        increasing([first, *notes])
        deregister(peer, "/obs", b"o1")

    raw_session(hub, plug.port, script)


def test_TD_COAP_OBS_02(hub, plug):
    def script(peer: RawPeer):
        first = register(peer, "/obs-non", b"o2", Type.NON)
        notes = notifications(peer, b"o2", 4)
        assert all(m.code == Code.CONTENT and m.token == b"o2" for m in notes)
        assert all(m.content_format == first.content_format for m in notes)
        # NON notifications; the server may make one CON now and then (the note of step 4):
        # greencoap's first one after the registration and every 20th
        assert sum(m.mtype == Type.NON for m in notes) >= len(notes) - 1, notes
        increasing([first, *notes])
        deregister(peer, "/obs-non", b"o2")

    raw_session(hub, plug.port, script)


def test_TD_COAP_OBS_04(hub, plug_process):
    """The server reboots and loses its observers; after Max-Age the client
    registers again with the same token and the notifications come back."""
    plug_process.start()

    def script(peer: RawPeer):
        first = register(peer, "/obs", b"o4")
        notes = notifications(peer, b"o4", 2)
        assert all(m.max_age == MAX_AGE for m in [first, *notes])
        last = time.monotonic()
        plug_process.crash()
        assert not peer.gather(0.3), "notifications from a dead server"
        plug_process.start()
        assert not peer.gather(OBS_PERIOD * 4), "the rebooted server kept the observation"
        time.sleep(max(0.0, last + MAX_AGE - time.monotonic()))  # Max-Age passes
        # the client's re-registration (Max-Age passed without a notification)
        again = register(peer, "/obs", b"o4")
        assert again.token == b"o4"
        notes = notifications(peer, b"o4", 2)
        assert all(m.mtype == Type.CON for m in notes)
        increasing([again, *notes])
        deregister(peer, "/obs", b"o4")

    raw_session(hub, plug_process.port, script, timeout=30)


def test_TD_COAP_OBS_05(hub, make_plug):
    """Client OFF: the server's CON notifications are not ACKed; their
    retransmissions carry updated Observe values, then the server gives up."""
    plug = make_plug(max_retransmit=2, ack_timeout=0.05)

    def script(peer: RawPeer):
        register(peer, "/obs", b"o5")
        notifications(peer, b"o5", 2)
        off = []
        while batch := peer.gather(0.4, ack=False):  # switched off: nothing is ACKed
            off += batch
            assert len(off) < 50, off
        assert off and all(m.mtype == Type.CON and m.token == b"o5" for m in off), off
        seqs = [m.observe for m in off]  # a retransmission carries the newest state
        assert len(set(seqs)) >= 2 and seqs == sorted(seqs), seqs
        return off

    raw_session(hub, plug.port, script)
    assert plug.stats["observers"] == 0
    assert plug.stats.get("observers_dropped_timeout") == 1


def test_TD_COAP_OBS_06(hub, plug):
    """The client reboots (a new socket on the same port) and answers the
    next notification with RST; the server then stops notifying."""

    def script(peer: RawPeer):
        register(peer, "/obs", b"o6")
        notifications(peer, b"o6", 2)
        port = peer.port
        peer.sock.close()
        rebooted = RawPeer(plug.port, bind_port=port)
        try:
            note = rebooted.recv(2)
            assert note.token == b"o6" and note.mtype == Type.CON  # discarded, not displayed
            rebooted.rst(note)
            later = rebooted.gather(OBS_PERIOD * 3, ack=False)
            assert all(m.mid == note.mid for m in later), later  # no further notification
        finally:
            rebooted.close()

    raw_session(hub, plug.port, script)
    assert plug.stats.get("observers_dropped_rst") == 1 and plug.stats["observers"] == 0


def observe_then(peer: RawPeer, token: bytes, stimulus: tuple) -> tuple[Message, Message, list]:
    """Register on /obs, take a notification, apply ``stimulus`` (code,
    payload, Content-Format) from another client, return the registration's
    response, the first message for ``token`` after it, and what came after."""
    first = register(peer, "/obs", token)
    notifications(peer, token, 1)
    code, payload, ct = stimulus
    other = RawPeer(plug_port(peer))
    try:
        opts = [] if ct is None else [(CF, bytes([ct]) if ct else b"")]
        req = other.request(code, "/obs", options=opts, payload=payload)
        assert other.expect(mid=req.mid).code in (Code.CHANGED, Code.DELETED)
    finally:
        other.close()
    deadline = time.monotonic() + 3
    while True:  # skip a notification of the old state that was already on its way
        msg = peer.recv(max(0.01, deadline - time.monotonic()))
        if msg.mtype == Type.CON:
            peer.ack(msg)
        if msg.token != token:
            continue
        if code == Code.DELETE or ct not in (None, 0):
            if msg.code == Code.CONTENT and msg.content_format == first.content_format:
                continue
        elif msg.payload != payload:
            continue
        break
    return first, msg, peer.gather(OBS_PERIOD * 3)


def plug_port(peer: RawPeer) -> int:
    return peer.dest[1]


def test_TD_COAP_OBS_07(hub, plug):
    def script(peer: RawPeer):
        first, final, after = observe_then(peer, b"o7", (Code.DELETE, b"", None))
        assert final.mtype == Type.CON and final.code == Code.NOT_FOUND, final
        assert final.observe is None  # no Observe option any more
        assert not [m for m in after if m.token == b"o7"], after  # no further notification

    raw_session(hub, plug.port, script)
    assert plug.stats["observers"] == 0


def test_TD_COAP_OBS_08(hub, plug):
    def script(peer: RawPeer):
        first, final, after = observe_then(peer, b"o8", (Code.PUT, b"<v>new</v>", 41))
        # RFC 7641 §4.2: notifications keep the initial response's Content-Format;
        # a server that cannot sends 4.06 and removes the observer
        assert final.mtype == Type.CON and final.code == Code.NOT_ACCEPTABLE, final
        assert final.observe is None
        assert not [m for m in after if m.token == b"o8"], after

    raw_session(hub, plug.port, script)
    assert plug.stats["observers"] == 0


def test_TD_COAP_OBS_09(hub, plug):
    def script(peer: RawPeer):
        first, note, after = observe_then(peer, b"o9", (Code.PUT, b"a new value", 0))
        assert note.mtype == Type.CON and note.code == Code.CONTENT
        assert note.content_format == first.content_format and note.payload == b"a new value"
        increasing([first, note])
        deregister(peer, "/obs", b"o9")

    raw_session(hub, plug.port, script)


def test_TD_COAP_OBS_10(hub, plug):
    def script(peer: RawPeer):
        first = register(peer, "/obs", b"t1")
        notifications(peer, b"t1", 1)
        req = peer.request(Code.GET, "/obs", token=b"t2")  # an unrelated GET, no Observe
        r = peer.expect(mid=req.mid)
        piggybacked(req, r, Code.CONTENT)
        assert r.observe is None and r.content_format == first.content_format
        notes = notifications(peer, b"t1", 2)  # the notifications still arrive
        assert all(m.mtype == Type.CON and m.content_format == first.content_format for m in notes)
        deregister(peer, "/obs", b"t1")

    raw_session(hub, plug.port, script)


def test_TD_COAP_OBS_11(hub, make_plug):
    """Lossy: notifications are retransmitted, never two CONs active at once."""
    plug = make_plug(max_retransmit=4)
    with Tap(("127.0.0.1", plug.port), drop=LossyLink(seed=11, loss=0.25)) as tap:

        def script(peer: RawPeer):
            peer.dest = ("127.0.0.1", tap.port)
            resp = lossy_observe(peer, b"ob")
            got = [resp]
            deadline = time.monotonic() + 0.7
            while time.monotonic() < deadline:
                try:
                    m = peer.recv(0.2)
                except TimeoutError:
                    continue
                if m.mtype == Type.CON:
                    peer.ack(m)
                if m.token == b"ob" and (not got or newer(got[-1].observe, m.observe)):
                    got.append(m)  # a fresh one (a retransmission or older state is ignored)
            return got

        got = raw_session(hub, plug.port, script, timeout=30)
    assert len(got) >= 5, got
    assert tap.dropped(S2C) and tap.dropped(C2S)
    # never two notifications active at once: a CON notification goes out only
    # when the one before it was ACKed, or in its place (a retransmission with
    # the newer state), and then the one before is never sent again
    runs: list[int] = []
    acked: set[int] = set()
    retransmitted = 0
    for s in tap.snapshot():
        m = s.msg
        if s.direction == C2S and m.mtype == Type.ACK and not s.dropped:
            acked.add(m.mid)
        elif s.direction == S2C and m.mtype == Type.CON and m.token == b"ob":
            if runs and runs[-1] == m.mid:
                retransmitted += 1  # the same message again
                continue
            assert m.mid not in runs, f"MID {m.mid:#x} again after another notification"
            if runs and runs[-1] not in acked:
                retransmitted += 1  # in place of an unACKed one
            runs.append(m.mid)
    assert retransmitted, "no notification was retransmitted: the link was not lossy"


def lossy_observe(peer: RawPeer, token: bytes) -> Message:
    req = peer.request(Code.GET, "/obs", token=token, options=[(OBSERVE, b"")])
    timeout = 0.15
    for _ in range(8):
        try:
            r = peer.expect(mid=req.mid, timeout=timeout)
            piggybacked(req, r, Code.CONTENT)
            return r
        except TimeoutError:
            peer.send(req)
            timeout *= 2
    raise AssertionError("the registration got no answer")


def test_TD_COAP_OBS_12(hub, plug):
    def script(peer: RawPeer):
        first = register(peer, "/obs", b"oc")
        notifications(peer, b"oc", 2)
        r = deregister(peer, "/obs", b"oc")  # GET with Observe=1 and the same token
        assert r.token == b"oc" and r.content_format == first.content_format
        later = [m for m in peer.gather(OBS_PERIOD * 3) if m.token == b"oc"]
        assert len(later) <= 1, later  # one may have been on its way

    raw_session(hub, plug.port, script)
    assert wait_until(lambda: plug.stats["observers"] == 0)


def fetch_rest(peer: RawPeer, first: Message) -> bytes | None:
    """The rest of a block-wise notification (GETs without Observe); None
    when the representation changed under the transfer (another ETag)."""
    num, more, szx = block_value(first.opt(BLOCK2))
    assert num == 0 and more and len(first.payload) == 1 << (szx + 4)
    body = bytearray(first.payload)
    i = 1
    while more:
        req = peer.request(
            Code.GET, "/obs-large", token=b"fb", options=[(BLOCK2, block(i, False, szx))]
        )
        r = peer.expect(mid=req.mid)
        piggybacked(req, r, Code.CONTENT)
        assert r.observe is None, r  # the follow-up blocks are plain GET responses
        if r.etag != first.etag:
            return None
        num, more, _ = block_value(r.opt(BLOCK2))
        assert num == i
        body += r.payload
        i += 1
    assert len(body) == first.size2
    return bytes(body)


@pytest.mark.parametrize("td", ["TD_COAP_OBS_13", "TD_COAP_OBS_14"])
def test_observe_large(hub, plug, td):
    def script(peer: RawPeer):
        first = register(peer, "/obs-large", b"ol")
        assert first.opt(BLOCK2) is not None and first.etag is not None
        bodies = [fetch_rest(peer, first)]
        deadline = time.monotonic() + 5
        while len([b for b in bodies if b]) < 4 and time.monotonic() < deadline:
            note = notifications(peer, b"ol", 1)[0]
            assert note.mtype == Type.CON and note.observe is not None
            assert note.opt(BLOCK2) is not None, note  # block 0 of the new state
            bodies.append(fetch_rest(peer, note))
        deregister(peer, "/obs-large", b"ol")
        return [b for b in bodies if b is not None]

    bodies = raw_session(hub, plug.port, script)
    states = [obs_large_state(b) for b in bodies]
    assert len(bodies) >= 4 and None not in states, states  # each whole and untorn
    if td == "TD_COAP_OBS_14":
        assert len({len(b) for b in bodies}) >= 2, [len(b) for b in bodies]  # variable size
