"""Direction B, libcoap's server: greencoap's client runs each TD that
libcoap's ``coap-server-notls -d 50`` (4.3.x) can host, on its built-in
resources: ``/`` and ``/time`` (GET), ``/async?N`` (a separate response
after N s), ``.well-known/core`` with filters, and resources created by a PUT
(``-d``: GET, PUT, DELETE, observable, notified on every PUT, block-wise both
ways).  The observed resources change by PUTs from a second client every
:data:`~tests.plugtest.conftest.OBS_PERIOD` s (``/time`` changes once a
second only).  Where libcoap departs from a verify step (it sends no
Content-Format, no Block1 in the last answer of an upload, a NON 4.04 when
an observed resource is deleted) the test checks the rest; see
``tds.PEER_NOTES``."""

from __future__ import annotations

import itertools

import pytest

import greencoap
from greencoap import Client, Code, Type

from .checks import LARGE_BODY, UPLOAD, block_value, check_recovery, seq_newer
from .conftest import MAX_AGE, OBS_PERIOD, wait_until
from .wire import C2S, S2C, Tap

pytestmark = pytest.mark.timeout(60)

BLOCK1, BLOCK2 = 27, 23
_names = itertools.count()


def fresh(prefix: str) -> str:
    """A resource name not used before in this server process."""
    return f"/{prefix}-{next(_names)}"


@pytest.fixture
def lc(libcoap_server_process):
    return libcoap_server_process


@pytest.fixture
def tap(lc):
    with Tap(("127.0.0.1", lc.port)) as t:
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


def created(lc, payload: bytes = b"v0") -> str:
    """A new dynamic resource (PUT with -d) and its URI."""
    uri = lc.uri + fresh("r")
    with Client(timeout=5) as c:
        assert c.put(uri, payload, content_format=0).code == Code.CREATED
    return uri


# -- CORE -------------------------------------------------------------------------

CASES = {
    "TD_COAP_CORE_01": ("GET", True, None, (Code.CONTENT,)),
    "TD_COAP_CORE_02": ("DELETE", True, None, (Code.DELETED,)),
    "TD_COAP_CORE_03": ("PUT", True, b"plugtest PUT", (Code.CHANGED, Code.CREATED)),
    "TD_COAP_CORE_05": ("GET", False, None, (Code.CONTENT,)),
    "TD_COAP_CORE_06": ("DELETE", False, None, (Code.DELETED,)),
    "TD_COAP_CORE_07": ("PUT", False, b"plugtest PUT", (Code.CHANGED, Code.CREATED)),
}


@pytest.mark.parametrize("td", sorted(CASES))
def test_transaction(hub, lc, client, td):
    method, con, payload, codes = CASES[td]
    uri = created(lc, b"the resource")
    with Tap(("127.0.0.1", lc.port)) as tap:
        uri = uri.replace(lc.uri, tap.uri)
        cf = 0 if payload else None
        r = client.request(method, uri, payload, content_format=cf, confirmable=con)
    req = sole_request(tap)
    assert req.mtype == (Type.CON if con else Type.NON) and req.code == Code[method]
    assert 1 <= len(req.token) <= 8
    assert r.code in codes, r
    assert r.token == req.token
    if con:
        assert r.mtype == Type.ACK and r.message.mid == req.mid
    else:
        assert r.mtype == Type.NON
    if method == "GET":
        assert r.payload == b"the resource"  # libcoap sends no Content-Format


def check_separate(tap: Tap, r) -> None:
    req = sole_request(tap)
    assert req.mtype == Type.CON
    s2c = tap.messages(S2C)
    ack = next(m for m in s2c if m.mtype == Type.ACK and m.mid == req.mid)
    assert ack.code == Code.EMPTY and ack.payload == b""
    resp = next(m for m in s2c if m.code == Code.CONTENT)
    assert resp.mtype == Type.CON and resp.token == req.token and resp.payload
    assert r.code == Code.CONTENT and r.mtype == Type.CON and r.payload == b"done"
    assert wait_until(
        lambda: any(m.mtype == Type.ACK and m.mid == resp.mid for m in tap.messages(C2S))
    )


def test_TD_COAP_CORE_09(hub, tap, client):
    check_separate(tap, client.get(tap.uri + "/async?1"))


def test_TD_COAP_CORE_10(hub, tap):
    with Client(timeout=5, token_length=8) as c:
        r = c.get(tap.uri + "/")
    req = sole_request(tap)
    assert len(req.token) == 8 and r.token == req.token and r.code == Code.CONTENT and r.payload


def test_TD_COAP_CORE_11(hub, tap, client):
    r = client.get(tap.uri + "/async?1")
    assert 1 <= len(sole_request(tap).token) <= 8
    check_separate(tap, r)


def test_TD_COAP_CORE_12(hub, tap):
    with Client(timeout=5, token_length=0) as c:
        r = c.get(tap.uri + "/")
    assert sole_request(tap).token == b"" and r.token == b""
    assert r.code == Code.CONTENT and r.mtype == Type.ACK and r.payload


def test_TD_COAP_CORE_13(hub, lc, client):
    path = fresh("seg1") + "/seg2/seg3"
    with Client(timeout=5) as c:
        assert c.put(lc.uri + path, b"segments", content_format=0).code == Code.CREATED
    with Tap(("127.0.0.1", lc.port)) as tap:
        r = client.get(tap.uri + path)
    assert sole_request(tap).uri_path == path.strip("/").split("/")
    assert r.code == Code.CONTENT and r.payload == b"segments"


def test_TD_COAP_CORE_14(hub, tap, client):
    r = client.get(tap.uri + "/time?first=1&second=2&third=3")
    assert sole_request(tap).uri_query == ["first=1", "second=2", "third=3"]
    assert r.code == Code.CONTENT and r.payload


class FirstCopies:
    """Drops the first copy of each client CON request and of each ACK the
    server sends (the losses greencoap's client recovers from, by
    retransmitting), up to ``limit`` of each.  libcoap's own retransmissions
    (a separate response whose ACK was lost) start at 2 s, beyond the suite's
    time budget, so those are left alone."""

    def __init__(self, limit: int = 2) -> None:
        self.limit = limit
        self.seen: set = set()
        self.count = {C2S: 0, S2C: 0}

    def __call__(self, direction, msg) -> bool:
        ours = (direction == C2S and msg.mtype == Type.CON) or (
            direction == S2C and msg.mtype == Type.ACK
        )
        key = (direction, msg.mid)
        if ours and key not in self.seen and self.count[direction] < self.limit:
            self.seen.add(key)
            self.count[direction] += 1
            return True
        return False


@pytest.mark.parametrize("td", ["TD_COAP_CORE_15", "TD_COAP_CORE_16"])
def test_lossy(hub, lc, td):
    path = "/" if td == "TD_COAP_CORE_15" else "/async?1"
    with Tap(("127.0.0.1", lc.port), drop=FirstCopies()) as tap:
        with Client(timeout=15, ack_timeout=0.1, max_retransmit=6) as c:
            for _ in range(2 if td == "TD_COAP_CORE_15" else 1):
                r = c.get(tap.uri + path)
                assert r.code == Code.CONTENT and r.payload
            greencoap.sleep(0.1)
    cases = check_recovery(tap.snapshot())
    assert cases["request"] >= 1 and cases["request ACK"] >= 1, cases


def test_TD_COAP_CORE_17(hub, tap, client):
    r = client.get(tap.uri + "/async?1", confirmable=False)
    req = sole_request(tap)
    assert req.mtype == Type.NON
    assert not [m for m in tap.messages(S2C) if m.mtype == Type.ACK]
    assert r.mtype == Type.NON and r.code == Code.CONTENT and r.token == req.token
    assert r.payload == b"done"


def test_TD_COAP_CORE_31(hub, tap, client):
    assert 0 <= client.ping(tap.uri) < 2
    (ping,) = [s.data for s in tap.snapshot() if s.direction == C2S]
    assert len(ping) == 4 and ping[:2] == b"\x40\x00"
    (rst,) = [s.data for s in tap.snapshot() if s.direction == S2C]
    assert rst == b"\x70\x00" + ping[2:]


# -- LINK -------------------------------------------------------------------------

#: LINK TD -> (filter keyword, value, the targets libcoap's resources give)
LIBCOAP_FILTERS = {
    "TD_COAP_LINK_02": ("rt", "ticks", {"/time"}),
    "TD_COAP_LINK_03": ("rt", "*", {"/time"}),
    "TD_COAP_LINK_05": ("if_", "cl*", {"/time"}),
    "TD_COAP_LINK_07": ("href", "/time", {"/time"}),
    "TD_COAP_LINK_08": ("href", "/ti*", {"/time"}),
}


def test_TD_COAP_LINK_01(hub, tap, client):
    links = client.discover(tap.uri)
    found = {link.target.removeprefix(tap.uri) for link in links}
    assert {"/", "/time", "/async", "/example_data"} <= found
    (req,) = requests(tap)
    assert req.uri_path == [".well-known", "core"]
    assert response_of(tap, req).content_format == 40


@pytest.mark.parametrize("td", sorted(LIBCOAP_FILTERS))
def test_link_filter(hub, tap, client, td):
    key, value, expected = LIBCOAP_FILTERS[td]
    links = client.discover(tap.uri, **{key: value})
    assert {link.target.removeprefix(tap.uri) for link in links} == expected
    (req,) = requests(tap)
    assert req.uri_query == [f"{key.rstrip('_')}={value}"]
    assert response_of(tap, req).content_format == 40


# -- BLOCK ------------------------------------------------------------------------


@pytest.fixture
def large(lc):
    """A dynamic resource holding /large's body (uploaded block-wise)."""
    uri = lc.uri + fresh("large")
    with Client(timeout=10) as c:
        assert c.put(uri, LARGE_BODY, content_format=0).code == Code.CREATED
    return uri


@pytest.mark.parametrize(
    "td, size, szx",
    [("TD_COAP_BLOCK_01", 64, 2), ("TD_COAP_BLOCK_02", None, None), ("TD_COAP_BLOCK_06", 16, 0)],
)
def test_block2(hub, lc, large, td, size, szx):
    with Tap(("127.0.0.1", lc.port)) as tap, Client(timeout=10, block_size=size) as c:
        r = c.get(large.replace(lc.uri, tap.uri))
    assert r.code == Code.CONTENT and r.payload == LARGE_BODY
    gets = requests(tap)
    first = gets[0].opt(BLOCK2)
    assert first is None if szx is None else block_value(first) == (0, False, szx)
    act = block_value(response_of(tap, gets[0]).opt(BLOCK2))[2]
    for i, m in enumerate(gets[1:], 1):
        assert block_value(m.opt(BLOCK2)) == (i, False, act)
        assert block_value(response_of(tap, m).opt(BLOCK2))[0] == i
    assert not block_value(response_of(tap, gets[-1]).opt(BLOCK2))[1]


def test_TD_COAP_BLOCK_03(hub, lc):
    uri = created(lc, b"small")
    with Tap(("127.0.0.1", lc.port)) as tap, Client(timeout=10, block_size=256) as c:
        r = c.put(uri.replace(lc.uri, tap.uri), UPLOAD, content_format=0)
        assert r.code == Code.CHANGED
        ups = [m for m in requests(tap) if m.opt(BLOCK1) is not None]
        n = len(ups)
        assert n == 4 and [block_value(m.opt(BLOCK1)) for m in ups] == [
            (i, i < n - 1, 4) for i in range(n)
        ]
        for i, m in enumerate(ups[:-1]):
            a = response_of(tap, m)
            assert a.code == Code.CONTINUE and block_value(a.opt(BLOCK1))[:2] == (i, True)
        assert c.get(uri).payload == UPLOAD  # the complete updated resource


# -- OBS --------------------------------------------------------------------------


class Updater:
    """Another client that PUTs a new state every OBS_PERIOD s (in a greenlet)."""

    def __init__(self, uri: str, ct: int = 0) -> None:
        self.uri = uri
        self.n = 0
        self.client = Client(timeout=5)
        self.g = greencoap.spawn(self._run)

    def _run(self) -> None:
        while True:
            greencoap.sleep(OBS_PERIOD)
            self.n += 1
            self.client.put(self.uri, f"state {self.n}", content_format=0)

    def stop(self) -> None:
        if not self.g.dead:
            self.g.kill()
        self.client.close()


@pytest.fixture
def updated(lc):
    """A dynamic resource that changes every OBS_PERIOD s: its ``Updater``."""
    up = Updater(created(lc, b"state 0"))
    try:
        yield up
    finally:
        up.stop()


@pytest.fixture
def observed(updated):
    """The URI of a dynamic resource that changes every OBS_PERIOD s."""
    return updated.uri


def take(obs, n: int, timeout: float = 5.0) -> list:
    items = []
    for r in obs.iter(timeout=timeout):
        items.append(r)
        if len(items) == n:
            break
    return items


def check_stream(items) -> None:
    assert all(r.code == Code.CONTENT for r in items), items
    seqs = [r.observe for r in items]
    assert all(seq_newer(a, b) for a, b in zip(seqs, seqs[1:], strict=False)), seqs


def registration(tap: Tap):
    return next(m for m in requests(tap) if m.code == Code.GET and m.observe == 0)


def via(tap: Tap, uri: str, lc) -> str:
    return uri.replace(lc.uri, tap.uri)


def test_TD_COAP_OBS_01(hub, lc, observed, client):
    with Tap(("127.0.0.1", lc.port)) as tap:
        with client.observe(via(tap, observed, lc)) as obs:
            items = take(obs, 4)
        reg = registration(tap)
    check_stream(items)
    assert items[0].mtype == Type.ACK and all(r.mtype == Type.CON for r in items[1:])
    assert all(r.token == reg.token for r in items)
    acks = {m.mid for m in tap.messages(C2S) if m.mtype == Type.ACK}
    assert all(r.message.mid in acks for r in items[1:])


def test_TD_COAP_OBS_02(hub, libcoap_server_non, client):
    lc = libcoap_server_non
    uri = created(lc, b"state 0")
    up = Updater(uri)
    try:
        with Tap(("127.0.0.1", lc.port)) as tap:
            with client.observe(via(tap, uri, lc), confirmable=False) as obs:
                items = take(obs, 6)
    finally:
        up.stop()
    check_stream(items)
    assert registration(tap).mtype == Type.NON
    notes = items[1:]
    # NON notifications, every fifth one a CON (libcoap's -N), which the client ACKs
    assert sum(r.mtype == Type.NON for r in notes) >= len(notes) - 2
    acks = {m.mid for m in tap.messages(C2S) if m.mtype == Type.ACK}
    assert all(r.message.mid in acks for r in notes if r.mtype == Type.CON)


def test_TD_COAP_OBS_04(hub, libcoap_server_fresh, monkeypatch):
    """The server reboots and forgets the observation; after Max-Age without
    a notification the client registers again with the same token.  On
    ``/time`` (Max-Age 1, a new state every second: libcoap's dynamic
    resources carry no Max-Age, so 60 s).  The re-registration slack is
    shortened from 2 s for the test."""
    monkeypatch.setattr("greencoap.observation.REREGISTER_SLACK", 0.1)
    lc = libcoap_server_fresh.start()
    with Tap(("127.0.0.1", lc.port)) as tap, Client(timeout=5) as c:
        with c.observe(tap.uri + "/time") as obs:
            items = iter(obs.iter(timeout=MAX_AGE + 3))
            first = [next(items), next(items)]
            lc.crash()
            lc.start()
            again = next(items)  # the re-registration's response
            after = next(items)
        regs = [m for m in requests(tap) if m.code == Code.GET and m.observe == 0]
    assert all(r.max_age == 1 for r in first)
    assert len(regs) >= 2 and regs[0].token == regs[-1].token
    assert again.code == Code.CONTENT and again.observe is not None
    check_stream([again, after])


def test_TD_COAP_OBS_06(hub, lc, observed):
    with Tap(("127.0.0.1", lc.port)) as tap:
        c1 = Client(timeout=5)
        take(c1.observe(via(tap, observed, lc)), 2)
        port = c1.endpoint.address[1]
        c1.close()
        n = len(tap.snapshot())
        with Client(timeout=5, bind=(None, port)) as c2:
            assert c2.endpoint.address[1] == port  # the rebooted client's socket

            def rsts() -> list:
                return [
                    s.msg
                    for s in tap.snapshot()[n:]
                    if s.direction == C2S and s.msg.mtype == Type.RST
                ]

            assert wait_until(rsts, 3)
            note = next(m for m in tap.messages(S2C) if m.mid == rsts()[0].mid)
            assert note.token == registration(tap).token
            greencoap.sleep(OBS_PERIOD * 2)
            t = tap.snapshot()[-1].t
            greencoap.sleep(OBS_PERIOD * 4)
            later = [s for s in tap.snapshot() if s.t > t and s.direction == S2C]
            assert not later, later


def test_TD_COAP_OBS_07(hub, lc, updated, client):
    with Tap(("127.0.0.1", lc.port)) as tap:
        with client.observe(via(tap, updated.uri, lc)) as obs:
            items = obs.iter(timeout=5)
            [next(items), next(items)]
            updated.stop()  # a DELETE right after a PUT loses libcoap's 4.04
            greencoap.sleep(OBS_PERIOD * 2)
            with Client(timeout=5) as other:
                assert other.delete(updated.uri).code == Code.DELETED
            rest = list(items)
    final = rest[-1]
    assert final.code == Code.NOT_FOUND and final.observe is None  # libcoap: a NON
    assert final.token == registration(tap).token
    assert not obs.active


def test_TD_COAP_OBS_09(hub, lc, observed, client):
    with client.observe(observed) as obs:
        items = obs.iter(timeout=5)
        first = [next(items), next(items)]
        with Client(timeout=5) as other:
            assert other.put(observed, b"a new value", content_format=0).code == Code.CHANGED
        new = None
        for r in items:
            if r.payload == b"a new value":
                new = r
                break
    assert new is not None and new.code == Code.CONTENT and new.mtype == Type.CON
    check_stream([*first, new])


def test_TD_COAP_OBS_10(hub, lc, observed, client):
    with Tap(("127.0.0.1", lc.port)) as tap:
        uri = via(tap, observed, lc)
        with client.observe(uri) as obs:
            items = obs.iter(timeout=5)
            first = [next(items), next(items)]
            r = client.get(uri)
            assert r.code == Code.CONTENT and r.observe is None
            more = [next(items), next(items)]
        reg = registration(tap)
    check_stream(first + more)
    plain = next(m for m in requests(tap) if m.code == Code.GET and m.observe is None)
    assert plain.token != reg.token and all(x.token == reg.token for x in more)


def test_TD_COAP_OBS_12(hub, lc, observed, client):
    with Tap(("127.0.0.1", lc.port)) as tap:
        obs = client.observe(via(tap, observed, lc))
        take(obs, 2)
        r = obs.cancel()
        assert r is not None and r.code == Code.CONTENT and r.observe is None
        reg = registration(tap)
        (dereg,) = [m for m in requests(tap) if m.observe == 1]
        assert dereg.token == reg.token and dereg.mtype == Type.CON
        t = tap.snapshot()[-1].t
        greencoap.sleep(OBS_PERIOD * 4)
        later = [s.msg for s in tap.snapshot() if s.t > t and s.direction == S2C]
    assert not [m for m in later if m.token == reg.token], later


@pytest.mark.parametrize("td", ["TD_COAP_OBS_13", "TD_COAP_OBS_14"])
def test_observe_large(hub, lc, client, td):
    """Large states PUT block-wise by the other client; the notifications come
    as block 0 (Block2) and the client fetches the rest with plain GETs."""
    uri = created(lc, b"small")
    bodies = [
        b"%04d" % i * (300 + (i % 3) * 40 if td == "TD_COAP_OBS_14" else 300) for i in range(8)
    ]

    def update():
        with Client(timeout=5) as other:
            for body in bodies:
                greencoap.sleep(OBS_PERIOD)
                other.put(uri, body, content_format=0)

    with Tap(("127.0.0.1", lc.port)) as tap:
        with client.observe(via(tap, uri, lc)) as obs:
            g = greencoap.spawn(update)
            items = take(obs, 5)
            g.kill()
        reg = registration(tap)
    got = [r.payload for r in items[1:]]
    assert all(p in bodies for p in got), [len(p) for p in got]  # whole, untorn
    notes = [m for m in tap.messages(S2C) if m.token == reg.token and m.mtype == Type.CON]
    assert notes and all(block_value(m.opt(BLOCK2))[:2] == (0, True) for m in notes)
    follow = [m for m in requests(tap) if m.opt(BLOCK2) is not None]
    assert follow and all(m.observe is None for m in follow)
    if td == "TD_COAP_OBS_14":
        assert len({len(p) for p in got}) >= 2
