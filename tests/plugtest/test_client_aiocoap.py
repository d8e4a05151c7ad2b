"""Direction B, aiocoap's server: greencoap's client runs each TD against the
aiocoap plugtest peer (``aiocoap_peer.py``, one process per module, reset
before each test).  What the client returns (code, options, payload,
Observation items) is checked, and what it sent and received on the wire is
read from a :class:`~tests.plugtest.wire.Tap` between the two."""

from __future__ import annotations

import pytest

import greencoap
from greencoap import Client, Code, Type
from greencoap.linkformat import parse_link_format

from .checks import LARGE_BODY, UPLOAD, block_value, check_recovery, obs_large_state, seq_newer
from .conftest import MAX_AGE, wait_until
from .tds import LINK_FILTERS, PATH_SUBS, PLUGTEST_RESOURCES
from .wire import C2S, S2C, Tap

pytestmark = pytest.mark.timeout(60)

BLOCK2, BLOCK1, OBSERVE, ETAG, IF_MATCH, IF_NONE_MATCH, ACCEPT = 23, 27, 6, 4, 1, 5, 17


@pytest.fixture
def tap(aiocoap_peer):
    """A recording relay in front of the aiocoap peer."""
    with Tap(("127.0.0.1", aiocoap_peer.port)) as t:
        yield t


@pytest.fixture
def client(hub):
    with Client(timeout=10) as c:
        yield c


def requests(tap: Tap) -> list:
    return [m for m in tap.messages(C2S) if m.code and m.code < 32]


def sole_request(tap: Tap):
    reqs = requests(tap)
    assert len(reqs) == 1, reqs
    return reqs[0]


def response_of(tap: Tap, req):
    for m in tap.messages(S2C):
        if m.code >= 64 and (
            (m.mtype == Type.ACK and m.mid == req.mid)
            or (m.mtype != Type.ACK and m.token == req.token)
        ):
            return m
    raise AssertionError(f"no response to {req}")


# -- CORE -------------------------------------------------------------------------

CASES = {
    "TD_COAP_CORE_01": ("GET", True, None, (Code.CONTENT,)),
    "TD_COAP_CORE_02": ("DELETE", True, None, (Code.DELETED,)),
    "TD_COAP_CORE_03": ("PUT", True, b"plugtest PUT", (Code.CHANGED, Code.CREATED)),
    "TD_COAP_CORE_04": ("POST", True, b"plugtest POST", (Code.CREATED, Code.CHANGED)),
    "TD_COAP_CORE_05": ("GET", False, None, (Code.CONTENT,)),
    "TD_COAP_CORE_06": ("DELETE", False, None, (Code.DELETED,)),
    "TD_COAP_CORE_07": ("PUT", False, b"plugtest PUT", (Code.CHANGED, Code.CREATED)),
    "TD_COAP_CORE_08": ("POST", False, b"plugtest POST", (Code.CREATED, Code.CHANGED)),
}


@pytest.mark.parametrize("td", sorted(CASES))
def test_transaction(hub, tap, client, td):
    method, con, payload, codes = CASES[td]
    cf = 0 if payload else None
    r = client.request(method, tap.uri + "/test", payload, content_format=cf, confirmable=con)
    req = sole_request(tap)
    assert req.mtype == (Type.CON if con else Type.NON) and req.code == Code[method]
    assert 1 <= len(req.token) <= 8 and req.uri_path == ["test"]
    if payload:
        assert req.content_format == 0 and req.payload == payload
    assert r.code in codes, r
    assert r.token == req.token
    if con:
        assert r.mtype == Type.ACK and r.message.mid == req.mid  # piggybacked
    else:
        assert r.mtype == Type.NON
    if r.payload or method == "GET":
        assert r.content_format is not None and r.payload


def check_separate(tap: Tap, r, token_len: range = range(0, 9)) -> None:
    req = sole_request(tap)  # not retransmitted after the empty ACK
    assert req.mtype == Type.CON and len(req.token) in token_len
    s2c = tap.messages(S2C)
    ack = next(m for m in s2c if m.mtype == Type.ACK and m.mid == req.mid)
    assert ack.code == Code.EMPTY and ack.payload == b""
    resp = next(m for m in s2c if m.code == Code.CONTENT)
    assert resp.mtype == Type.CON and resp.token == req.token and resp.payload
    assert r.code == Code.CONTENT and r.mtype == Type.CON and r.payload == resp.payload
    # the client ACKs the separate response: an empty ACK with its MID
    assert wait_until(
        lambda: any(m.mtype == Type.ACK and m.mid == resp.mid for m in tap.messages(C2S))
    )
    cack = next(m for m in tap.messages(C2S) if m.mtype == Type.ACK and m.mid == resp.mid)
    assert cack.code == Code.EMPTY and cack.payload == b"" and cack.token == b""


def test_TD_COAP_CORE_09(hub, tap, client):
    r = client.get(tap.uri + "/separate")
    check_separate(tap, r)
    assert r.content_format is not None


def test_TD_COAP_CORE_10(hub, tap):
    with Client(timeout=5, token_length=8) as c:
        r = c.get(tap.uri + "/test")
    req = sole_request(tap)
    assert len(req.token) == 8 and r.token == req.token
    assert r.code == Code.CONTENT and r.content_format is not None and r.payload


def test_TD_COAP_CORE_11(hub, tap, client):
    r = client.get(tap.uri + "/separate")
    check_separate(tap, r, range(1, 9))


def test_TD_COAP_CORE_12(hub, tap):
    with Client(timeout=5, token_length=0) as c:
        r = c.get(tap.uri + "/test")
    req = sole_request(tap)
    assert req.token == b"" and r.token == b""
    assert r.code == Code.CONTENT and r.mtype == Type.ACK and r.payload


def test_TD_COAP_CORE_13(hub, tap, client):
    r = client.get(tap.uri + "/seg1/seg2/seg3")
    assert sole_request(tap).uri_path == ["seg1", "seg2", "seg3"]
    assert r.code == Code.CONTENT and r.content_format is not None and r.payload


def test_TD_COAP_CORE_14(hub, tap, client):
    r = client.get(tap.uri + "/query?first=1&second=2&third=3")
    assert sole_request(tap).uri_query == ["first=1", "second=2", "third=3"]
    assert r.code == Code.CONTENT and r.content_format is not None
    assert r.payload == b"first=1&second=2&third=3"


class LossyLink:
    """Seeded loss both ways, at most two drops in a row per direction."""

    def __init__(self, seed: int, loss: float = 0.3) -> None:
        import random

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
def test_lossy(hub, aiocoap_peer, td):
    path = "/test" if td == "TD_COAP_CORE_15" else "/separate"
    with Tap(("127.0.0.1", aiocoap_peer.port), drop=LossyLink(seed=16)) as tap:
        with Client(timeout=15, ack_timeout=0.1, max_retransmit=6) as c:
            for _ in range(12):
                r = c.get(tap.uri + path)
                assert r.code == Code.CONTENT and r.payload and r.content_format is not None
                if tap.dropped(C2S) and tap.dropped(S2C):
                    break
            greencoap.sleep(0.3)  # the last ACKs
    assert tap.dropped(C2S) and tap.dropped(S2C)
    cases = check_recovery(tap.snapshot())
    assert sum(cases.values()) >= 2, cases


def test_TD_COAP_CORE_17(hub, tap, client):
    r = client.get(tap.uri + "/separate", confirmable=False)
    req = sole_request(tap)
    assert req.mtype == Type.NON
    assert not [m for m in tap.messages(S2C) if m.mtype == Type.ACK], "a NON request got an ACK"
    assert r.mtype == Type.NON and r.code == Code.CONTENT and r.content_format is not None
    assert r.token == req.token and r.payload
    assert not [m for m in tap.messages(C2S) if m.mtype == Type.ACK]  # nothing to ACK


def test_TD_COAP_CORE_18(hub, tap, client):
    r = client.post(tap.uri + "/test", b"x", content_format=0)
    req = sole_request(tap)
    assert req.mtype == Type.CON and req.payload == b"x" and req.content_format == 0
    assert r.code == Code.CREATED
    assert r.location_path == ["location1", "location2", "location3"]


def test_TD_COAP_CORE_19(hub, tap, client):
    r = client.post(tap.uri + "/location-query", b"", content_format=0)
    assert r.code == Code.CREATED and r.location_query == ["first=1", "second=2"]
    assert r.location == "/?first=1&second=2"


def test_TD_COAP_CORE_20(hub, tap, client):
    r = client.get(tap.uri + "/multi-format", accept=0)
    assert r.code == Code.CONTENT and r.content_format == 0 and r.payload == b"multi-format"
    r2 = client.get(tap.uri + "/multi-format", accept=41)
    assert r2.code == Code.CONTENT and r2.content_format == 41 and r2.payload.startswith(b"<")
    a, b = requests(tap)
    assert a.accept == 0 and b.accept == 41 and a.mid != b.mid


def test_TD_COAP_CORE_21(hub, tap, client):
    uri = tap.uri + "/validate"
    r1 = client.get(uri, validate=True)  # the cache is empty: no ETag asked
    assert r1.code == Code.CONTENT and r1.etag and r1.payload
    r2 = client.get(uri, validate=True)  # still valid: 2.03, the kept representation returned
    assert r2.validated and r2.payload == r1.payload and r2.message.code == Code.VALID
    with Client(timeout=5) as other:  # another client updates the resource
        assert other.put(uri, b"v2 now", content_format=0).code == Code.CHANGED
    r3 = client.get(uri, validate=True)
    assert r3.code == Code.CONTENT and not r3.validated
    assert r3.etag not in (None, r1.etag) and r3.payload not in (b"", r1.payload)
    gets = [m for m in requests(tap) if m.code == Code.GET]
    assert (
        gets[0].etag is None and gets[1].opts(ETAG) == [r1.etag] and gets[2].opts(ETAG) == [r1.etag]
    )
    assert len({m.mid for m in gets}) == 3
    valid = response_of(tap, gets[1])
    assert valid.code == Code.VALID and valid.etag == r1.etag and valid.payload == b""


def test_TD_COAP_CORE_22(hub, tap, client):
    uri = tap.uri + "/validate"
    r = client.get(uri)
    etag1 = r.etag
    assert r.code == Code.CONTENT and etag1 and r.payload
    r = client.put(uri, b"step 5", content_format=0, if_match=etag1)
    assert r.code == Code.CHANGED
    r = client.get(uri)
    etag2 = r.etag
    assert r.code == Code.CONTENT and etag2 not in (None, etag1) and r.payload == b"step 5"
    with Client(timeout=5) as other:
        assert other.put(uri, b"step 13", content_format=0).code == Code.CHANGED
    r = client.put(uri, b"step 17", content_format=0, if_match=etag2)
    assert r.code == Code.PRECONDITION_FAILED
    assert client.get(uri).payload == b"step 13"  # not updated
    puts = [m for m in requests(tap) if m.code == Code.PUT]
    assert puts[0].opts(IF_MATCH) == [etag1] and puts[-1].opts(IF_MATCH) == [etag2]


def test_TD_COAP_CORE_23(hub, tap, client):
    uri = tap.uri + "/create1"
    r = client.put(uri, b"first", content_format=0, if_none_match=True)
    assert r.code == Code.CREATED
    r = client.put(uri, b"second", content_format=0, if_none_match=True)
    assert r.code == Code.PRECONDITION_FAILED
    a, b = requests(tap)
    assert a.if_none_match and b.if_none_match and a.mid != b.mid


def test_TD_COAP_CORE_31(hub, tap, client):
    rtt = client.ping(tap.uri)
    assert 0 <= rtt < 2
    (ping,) = [s.data for s in tap.snapshot() if s.direction == C2S]
    assert len(ping) == 4 and ping[0] == 0x40 and ping[1] == 0  # CON, code 0, no token
    (rst,) = [s.data for s in tap.snapshot() if s.direction == S2C]
    assert len(rst) == 4 and rst[0] == 0x70 and rst[1] == 0 and rst[2:] == ping[2:]


# -- LINK -------------------------------------------------------------------------


def targets(links, base: str) -> set[str]:
    return {link.target.removeprefix(base) for link in links}


def test_TD_COAP_LINK_01(hub, tap, client):
    links = client.discover(tap.uri)
    found = targets(links, tap.uri)
    assert PLUGTEST_RESOURCES <= found, PLUGTEST_RESOURCES - found
    by = {link.target.removeprefix(tap.uri): link for link in links}
    assert by["/obs"].obs and by["/multi-format"].ct == [0, 41]
    (req,) = requests(tap)
    assert req.uri_path == [".well-known", "core"] and not req.uri_query
    assert response_of(tap, req).content_format == 40


FILTER_KW = {"rt": "rt", "if": "if_", "sz": "sz", "href": "href"}


@pytest.mark.parametrize("td", sorted(LINK_FILTERS))
def test_link_filter(hub, tap, client, td):
    query, expected = LINK_FILTERS[td]
    name, value = query.split("=")
    links = client.discover(tap.uri, **{FILTER_KW[name]: value})
    assert targets(links, tap.uri) == expected
    (req,) = requests(tap)
    assert req.uri_query == [query]  # the filter went to the server
    assert response_of(tap, req).content_format == 40


def test_TD_COAP_LINK_09(hub, tap, client):
    links = client.discover(tap.uri, ct=40)
    by = {link.target.removeprefix(tap.uri): link for link in links}
    assert "/path" in by and all(40 in link.ct for link in links), by
    r = client.get(by["/path"].target)
    assert r.code == Code.CONTENT and r.content_format == 40
    subs = {link.target for link in parse_link_format(r.payload)}
    assert subs == PATH_SUBS
    r = client.get(tap.uri + sorted(subs)[0])
    assert r.code == Code.CONTENT and b"/path/sub1" in r.payload


# -- BLOCK ------------------------------------------------------------------------


def block2_chain(tap: Tap, first_szx: int | None) -> None:
    """The requests carry Block2 NUM = 0, 1, 2, … (the first one as given)."""
    gets = [m for m in requests(tap) if m.code == Code.GET]
    first = gets[0].opt(BLOCK2)
    if first_szx is None:
        assert first is None  # late negotiation: the first GET has no Block2
    else:
        assert block_value(first) == (0, False, first_szx)
    resp0 = response_of(tap, gets[0])
    num, more, act = block_value(resp0.opt(BLOCK2))
    assert num == 0 and more and len(resp0.payload) == 1 << (act + 4)
    for i, m in enumerate(gets[1:], 1):
        num, more, szx = block_value(m.opt(BLOCK2))
        assert (num, more, szx) == (i, False, act), (i, m)
        r = response_of(tap, m)
        assert block_value(r.opt(BLOCK2))[0] == i
    assert not block_value(response_of(tap, gets[-1]).opt(BLOCK2))[1]  # M=0 on the last


@pytest.mark.parametrize(
    "td, size, szx",
    [("TD_COAP_BLOCK_01", 64, 2), ("TD_COAP_BLOCK_02", None, None), ("TD_COAP_BLOCK_06", 16, 0)],
)
def test_block2(hub, tap, td, size, szx):
    with Client(timeout=10, block_size=size) as c:
        r = c.get(tap.uri + "/large")
    assert r.code == Code.CONTENT and r.payload == LARGE_BODY
    block2_chain(tap, szx)


def block1_chain(tap: Tap, code: int, szx: int, body: bytes) -> list:
    reqs = [m for m in requests(tap) if m.code == code]
    size = 1 << (szx + 4)
    n = (len(body) + size - 1) // size
    ups = [m for m in reqs if m.opt(BLOCK1) is not None]
    assert len(ups) == n, ups
    for i, m in enumerate(ups):
        assert block_value(m.opt(BLOCK1)) == (i, i < n - 1, szx)
        assert m.payload == body[i * size : (i + 1) * size]
        r = response_of(tap, m)
        if i < n - 1:
            assert r.code == Code.CONTINUE and block_value(r.opt(BLOCK1))[:2] == (i, True)
        else:
            assert block_value(r.opt(BLOCK1))[:2] == (i, False)
    return reqs


def test_TD_COAP_BLOCK_03(hub, tap):
    with Client(timeout=10, block_size=256) as c:
        r = c.put(tap.uri + "/large-update", UPLOAD, content_format=0)
        assert r.code == Code.CHANGED
        block1_chain(tap, Code.PUT, 4, UPLOAD)
        assert c.get(tap.uri + "/large-update").payload == UPLOAD


def test_TD_COAP_BLOCK_04(hub, tap):
    with Client(timeout=10, block_size=256) as c:
        r = c.post(tap.uri + "/large-create", UPLOAD, content_format=0)
        assert r.code == Code.CREATED
        loc = r.location_path
        assert len(loc) == 2 and loc[0] == "large-create"
        block1_chain(tap, Code.POST, 4, UPLOAD)
        got = c.get(tap.uri + r.location)
        assert got.code == Code.CONTENT and got.payload == UPLOAD


def test_TD_COAP_BLOCK_05(hub, tap):
    body = UPLOAD + UPLOAD
    with Client(timeout=10, block_size=512) as c:
        r = c.post(tap.uri + "/large-post", body, content_format=0)
    assert r.code == Code.CHANGED and r.payload == body.upper()
    reqs = block1_chain(tap, Code.POST, 5, body)
    down = [m for m in reqs if m.opt(BLOCK1) is None]
    assert down and all(m.payload == b"" and m.opt(BLOCK2) is not None for m in down)
    assert [block_value(m.opt(BLOCK2))[0] for m in down] == list(range(1, len(down) + 1))


# -- OBS --------------------------------------------------------------------------


def take(obs, n: int, timeout: float = 5.0) -> list:
    items = []
    for r in obs.iter(timeout=timeout):
        items.append(r)
        if len(items) == n:
            break
    return items


def check_stream(items) -> None:
    assert all(r.code == Code.CONTENT for r in items), items
    assert len({r.content_format for r in items}) == 1
    seqs = [r.observe for r in items]
    assert all(seq_newer(a, b) for a, b in zip(seqs, seqs[1:], strict=False)), seqs


def registration(tap: Tap):
    return next(m for m in requests(tap) if m.code == Code.GET and m.observe == 0)


def acked_all_cons(tap: Tap, token: bytes) -> None:
    def acked() -> bool:
        cons = [
            m for m in tap.messages(S2C, delivered=True) if m.mtype == Type.CON and m.token == token
        ]
        acks = {m.mid for m in tap.messages(C2S) if m.mtype == Type.ACK}
        return bool(cons) and {m.mid for m in cons} <= acks

    assert wait_until(acked, 1), "a CON notification was not ACKed"


def test_TD_COAP_OBS_01(hub, tap, client):
    with client.observe(tap.uri + "/obs") as obs:
        items = take(obs, 4)
    check_stream(items)
    reg = registration(tap)
    assert reg.mtype == Type.CON and reg.token
    assert items[0].mtype == Type.ACK and all(r.mtype == Type.CON for r in items[1:])
    assert all(r.token == reg.token for r in items)
    acked_all_cons(tap, reg.token)


def test_TD_COAP_OBS_02(hub, tap, client):
    with client.observe(tap.uri + "/obs-non", confirmable=False) as obs:
        items = take(obs, 4)
    check_stream(items)
    reg = registration(tap)
    assert reg.mtype == Type.NON
    assert all(r.mtype == Type.NON for r in items) and all(r.token == reg.token for r in items)


def test_TD_COAP_OBS_04(hub, aiocoap_peer_fresh, monkeypatch):
    """The server reboots and forgets the observation; the client notices
    that Max-Age passed without a notification and registers again with the
    same token (RFC 7641 §3.3.1).  The re-registration slack is shortened
    from 2 s for the test."""
    monkeypatch.setattr("greencoap.observation.REREGISTER_SLACK", 0.1)
    peer = aiocoap_peer_fresh.start()
    with Tap(("127.0.0.1", peer.port)) as tap, Client(timeout=5) as c:
        with c.observe(tap.uri + "/obs") as obs:
            items = iter(obs.iter(timeout=MAX_AGE + 4))
            first = [next(items) for _ in range(3)]
            assert all(r.max_age == MAX_AGE for r in first)
            peer.crash()
            peer.start()
            again = next(items)  # the re-registration's response
            after = [next(items) for _ in range(2)]
        regs = [m for m in requests(tap) if m.code == Code.GET and m.observe == 0]
        assert len(regs) >= 2 and regs[0].token == regs[-1].token  # the same token t
        assert obs.reregistrations >= 1
    assert again.code == Code.CONTENT and again.observe is not None
    check_stream([again, *after])


def test_TD_COAP_OBS_05(hub, tap, client):
    """Client OFF: nothing reaches it any more (the tap drops everything);
    the server's unACKed CON notification is retransmitted.  (When aiocoap
    then gives up is its own business: the client's part is over.)"""
    obs = client.observe(tap.uri + "/obs")
    take(obs, 3)
    token = registration(tap).token
    acked_all_cons(tap, token)
    tap.blackhole = True  # switched off
    client.close()
    n = len(tap.snapshot())

    def retransmitted() -> bool:
        mids = [s.msg.mid for s in tap.snapshot()[n:] if s.direction == S2C]
        return len(mids) > len(set(mids))

    assert wait_until(retransmitted, 3), "no retransmission of an unACKed notification"
    assert all(s.dropped for s in tap.snapshot()[n:])


def test_TD_COAP_OBS_06(hub, tap):
    """The client reboots (a new client on the same port) and rejects the
    next notification with RST; the server stops notifying."""
    c1 = Client(timeout=5)
    obs = c1.observe(tap.uri + "/obs")
    take(obs, 2)
    port = c1.endpoint.address[1]
    c1.close()  # no deregistration: the client is simply gone
    n = len(tap.snapshot())
    with Client(timeout=5, bind=(None, port)) as c2:
        assert c2.endpoint.address[1] == port  # the socket is open again on the same port

        def rsts() -> list:
            return [
                s.msg for s in tap.snapshot()[n:] if s.direction == C2S and s.msg.mtype == Type.RST
            ]

        assert wait_until(rsts, 3)
        rst = rsts()[0]
        note = next(m for m in tap.messages(S2C) if m.mid == rst.mid and m.mtype == Type.CON)
        assert note.token == registration(tap).token
        greencoap.sleep(0.2)
        t = tap.snapshot()[-1].t
        greencoap.sleep(0.3)
        later = [s for s in tap.snapshot() if s.t > t and s.direction == S2C]
        assert not later, later  # no further notifications


def stimulus_then(tap: Tap, client, method: str, payload: bytes | None, ct: int | None):
    """Observe /obs, take a notification, then ``method`` /obs from another
    client; return the items that came after the stimulus."""
    with client.observe(tap.uri + "/obs") as obs:
        items = obs.iter(timeout=5)
        first = [next(items)]
        first.append(next(items, None))
        assert first[1] is not None, (first, tap.snapshot())  # the observation goes on
        with Client(timeout=5) as other:
            r = other.request(method, tap.uri + "/obs", payload, content_format=ct)
            assert r.code in (Code.CHANGED, Code.DELETED)
        rest = []
        for r in items:
            rest.append(r)
            if r.code != Code.CONTENT or r.payload == payload or len(rest) > 20:
                break
        return first, rest, obs


def test_TD_COAP_OBS_07(hub, tap, client):
    first, rest, obs = stimulus_then(tap, client, "DELETE", None, None)
    final = rest[-1]
    assert final.code == Code.NOT_FOUND and final.observe is None
    assert final.mtype == Type.CON
    assert not obs.active  # the iteration ended with the final response


def test_TD_COAP_OBS_08(hub, tap, client):
    first, rest, obs = stimulus_then(tap, client, "PUT", b"<v>new</v>", 41)
    final = rest[-1]
    assert final.code == Code.NOT_ACCEPTABLE and final.observe is None
    assert not obs.active


def test_TD_COAP_OBS_09(hub, tap, client):
    first, rest, obs = stimulus_then(tap, client, "PUT", b"a new value", 0)
    note = rest[-1]
    assert note.code == Code.CONTENT and note.payload == b"a new value"
    assert note.content_format == first[0].content_format
    check_stream([*first, note])


def test_TD_COAP_OBS_10(hub, tap, client):
    with client.observe(tap.uri + "/obs") as obs:
        items = obs.iter(timeout=5)
        first = [next(items), next(items)]
        r = client.get(tap.uri + "/obs")  # an unrelated GET
        assert r.code == Code.CONTENT and r.observe is None
        assert r.content_format == first[0].content_format
        more = [next(items), next(items)]  # the notifications still arrive
    check_stream(first + more)
    reg = registration(tap)
    plain = next(m for m in requests(tap) if m.code == Code.GET and m.observe is None)
    assert plain.token != reg.token and all(r.token == reg.token for r in more)


def test_TD_COAP_OBS_11(hub, aiocoap_peer):
    with Tap(("127.0.0.1", aiocoap_peer.port), drop=LossyLink(seed=11, loss=0.25)) as tap:
        with Client(timeout=10, ack_timeout=0.1, max_retransmit=6) as c:
            with c.observe(tap.uri + "/obs") as obs:
                items = take(obs, 6, timeout=5)
                token = registration(tap).token

                def all_acked() -> bool:  # every copy that arrived was ACKed
                    got = tap.messages(S2C, delivered=True)
                    cons = {m.mid for m in got if m.mtype == Type.CON and m.token == token}
                    return cons <= {m.mid for m in tap.messages(C2S) if m.mtype == Type.ACK}

                assert wait_until(all_acked, 1)
    check_stream(items)  # fresh ones only, in order
    assert tap.dropped(C2S) and tap.dropped(S2C)


def test_TD_COAP_OBS_12(hub, tap, client):
    obs = client.observe(tap.uri + "/obs")
    items = take(obs, 2)
    r = obs.cancel()
    assert r is not None and r.code == Code.CONTENT and r.observe is None
    assert r.content_format == items[0].content_format
    reg = registration(tap)
    (dereg,) = [m for m in requests(tap) if m.observe == 1]
    assert dereg.token == reg.token and dereg.mtype == Type.CON and dereg.code == Code.GET
    t = tap.snapshot()[-1].t
    greencoap.sleep(0.4)
    later = [s.msg for s in tap.snapshot() if s.t > t and s.direction == S2C]
    assert len([m for m in later if m.token == reg.token]) <= 1  # one may have been on its way


@pytest.mark.parametrize("td", ["TD_COAP_OBS_13", "TD_COAP_OBS_14"])
def test_observe_large(hub, tap, client, td):
    with client.observe(tap.uri + "/obs-large") as obs:
        items = take(obs, 4)
    states = [obs_large_state(r.payload) for r in items]
    assert None not in states, [len(r.payload) for r in items]  # whole, untorn
    assert all(r.code == Code.CONTENT for r in items)
    reg = registration(tap)
    note = next(m for m in tap.messages(S2C) if m.token == reg.token and m.mtype == Type.CON)
    assert block_value(note.opt(BLOCK2))[:2] == (0, True)  # block 0 of the new state
    follow = [m for m in requests(tap) if m.opt(BLOCK2) is not None]
    assert follow and all(m.observe is None for m in follow)  # plain GETs for the rest
    if td == "TD_COAP_OBS_14":
        assert len({len(r.payload) for r in items}) >= 2
