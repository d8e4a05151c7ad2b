"""Direction A, libcoap's client: each TD driven with ``coap-client-notls``
(libcoap 4.3.x) against greencoap's plugtest server on the test's hub.  The
verify steps are checked on what libcoap printed with ``-v 7`` (the messages
it sent and received, its own view of the wire); where a step is about what
the server did while the client could not see it (retransmissions to a
client switched off), a :class:`~tests.plugtest.wire.Tap` records it."""

from __future__ import annotations

import os
import tempfile

import pytest

import greencoap

from ..conftest import free_port
from .checks import LARGE_BODY, UPLOAD, check_recovery, link_targets, obs_large_state, seq_newer
from .conftest import OBS_PERIOD, wait_until
from .tds import LINK_FILTERS, PATH_SUBS, PLUGTEST_RESOURCES
from .wire import C2S, S2C, CoapClient, LcMsg, Tap, coap_client

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("coap_client_bin")]


def run(hub, uri: str, *args: str, timeout: float = 8.0) -> CoapClient:
    c = coap_client(hub, "-B", str(int(timeout)), *args, uri, timeout=timeout + 2)
    assert c.messages, c.output
    return c


def piggybacked(c: CoapClient, *codes: str) -> tuple[LcMsg, LcMsg]:
    req = c.first_request()
    resp = c.response_to(req)
    assert resp.type == "ACK" and resp.mid == req.mid and resp.token == req.token, resp
    assert resp.code in codes, (resp, c.output)
    return req, resp


def cf_if_payload(m: LcMsg) -> None:
    if m.payload:
        assert m.opt("Content-Format") is not None, m


# -- CORE -------------------------------------------------------------------------

CASES = {
    "TD_COAP_CORE_01": ("get", False, None, ("2.05",)),
    "TD_COAP_CORE_02": ("delete", False, None, ("2.02",)),
    "TD_COAP_CORE_03": ("put", False, "plugtest PUT", ("2.04", "2.01")),
    "TD_COAP_CORE_04": ("post", False, "plugtest POST", ("2.01", "2.04")),
    "TD_COAP_CORE_05": ("get", True, None, ("2.05",)),
    "TD_COAP_CORE_06": ("delete", True, None, ("2.02",)),
    "TD_COAP_CORE_07": ("put", True, "plugtest PUT", ("2.04", "2.01")),
    "TD_COAP_CORE_08": ("post", True, "plugtest POST", ("2.01", "2.04")),
}


@pytest.mark.parametrize("td", sorted(CASES))
def test_transaction(hub, plug, td):
    method, non, payload, codes = CASES[td]
    args = ["-m", method, "-T", "pt"] + (["-N"] if non else [])
    if payload:
        args += ["-e", payload, "-t", "0"]
    c = run(hub, plug.uri + "/test", *args)
    req = c.first_request()
    assert req.type == ("NON" if non else "CON") and req.code == method.upper()
    assert req.token and req.opts("Uri-Path") == ["test"]
    resp = c.response_to(req)
    if non:
        assert resp.type == "NON" and resp.token == req.token
    else:
        assert resp.type == "ACK" and resp.mid == req.mid and resp.token == req.token
    assert resp.code in codes, resp
    cf_if_payload(resp)
    if method == "get":
        assert resp.opt("Content-Format") is not None and resp.payload


def separate(hub, plug, *args: str) -> CoapClient:
    c = run(hub, plug.uri + "/separate", *args)
    req = c.first_request()
    got = c.received()
    ack = next(m for m in got if m.type == "ACK" and m.mid == req.mid)
    assert ack.code == "0.00" and ack.payload == b"" and ack.token == b""
    resp = next(m for m in got if m.code == "2.05")
    assert resp.type == "CON" and resp.token == req.token and resp.payload
    cack = next(m for m in c.sent() if m.type == "ACK" and m.mid == resp.mid)
    assert cack.code == "0.00" and cack.payload == b""
    assert [m for m in c.sent() if m.code == "GET"] == [req]  # never retransmitted
    return c


def test_TD_COAP_CORE_09(hub, plug):
    c = separate(hub, plug)
    assert next(m for m in c.received() if m.code == "2.05").opt("Content-Format")


def test_TD_COAP_CORE_10(hub, plug):
    c = run(hub, plug.uri + "/test", "-T", "12345678")
    req, resp = piggybacked(c, "2.05")
    assert len(req.token) == 8 and resp.payload and resp.opt("Content-Format")


def test_TD_COAP_CORE_11(hub, plug):
    c = separate(hub, plug, "-T", "tok11")
    assert 1 <= len(c.first_request().token) <= 8


def test_TD_COAP_CORE_13(hub, plug):
    c = run(hub, plug.uri + "/seg1/seg2/seg3")
    req, resp = piggybacked(c, "2.05")
    assert req.opts("Uri-Path") == ["seg1", "seg2", "seg3"]
    assert resp.payload and resp.opt("Content-Format")


def test_TD_COAP_CORE_14(hub, plug):
    c = run(hub, plug.uri + "/query?first=1&second=2&third=3")
    req, resp = piggybacked(c, "2.05")
    assert req.opts("Uri-Query") == ["first=1", "second=2", "third=3"]
    assert resp.payload == b"first=1&second=2&third=3" and resp.opt("Content-Format")


def test_TD_COAP_CORE_16(hub, make_plug):
    """Lossy, separate response: the server's CON response and the client's
    ACK of it are dropped now and then (libcoap's own timer is 2 s: its
    request and the empty ACK are left alone); the server retransmits."""
    plug = make_plug(max_retransmit=4)
    dropped = []

    def drop(direction, msg) -> bool:
        lossy = (direction == S2C and msg.mtype == 0) or (direction == C2S and msg.mtype == 2)
        if lossy and len(dropped) < 4 and (direction, msg.mid) not in dropped:
            dropped.append((direction, msg.mid))
            return True
        return False

    with Tap(("127.0.0.1", plug.port), drop=drop) as tap:
        for i in range(3):
            c = run(hub, tap.uri + "/separate", "-T", f"s{i}")
            req = c.first_request()
            resp = next(m for m in c.received() if m.code == "2.05")
            assert resp.type == "CON" and resp.token == req.token and resp.payload
            assert resp.opt("Content-Format") is not None
            assert any(m.type == "ACK" and m.mid == resp.mid for m in c.sent())
        greencoap.sleep(0.3)
    cases = check_recovery(tap.snapshot())
    assert cases["response"] >= 1 and cases["response ACK"] >= 1, cases


def test_TD_COAP_CORE_17(hub, plug):
    c = run(hub, plug.uri + "/separate", "-N", "-T", "n17")
    req = c.first_request()
    assert req.type == "NON"
    assert not [m for m in c.received() if m.type == "ACK"], c.output
    resp = c.response_to(req)
    assert resp.type == "NON" and resp.code == "2.05" and resp.payload
    assert resp.opt("Content-Format") is not None and resp.token == req.token


def test_TD_COAP_CORE_18(hub, plug):
    c = run(hub, plug.uri + "/test", "-m", "post", "-e", "x", "-t", "0")
    req, resp = piggybacked(c, "2.01")
    assert req.payload == b"x" and req.opt("Content-Format") == "text/plain"
    assert resp.opts("Location-Path") == ["location1", "location2", "location3"]


def test_TD_COAP_CORE_19(hub, plug):
    c = run(hub, plug.uri + "/location-query", "-m", "post", "-t", "0")
    req, resp = piggybacked(c, "2.01")
    assert resp.opts("Location-Query") == ["first=1", "second=2"]
    cf_if_payload(resp)


def test_TD_COAP_CORE_20(hub, plug):
    c = run(hub, plug.uri + "/multi-format", "-A", "0")
    req, resp = piggybacked(c, "2.05")
    assert req.opt("Accept") == "text/plain"
    assert resp.opt("Content-Format") == "text/plain" and c.body == b"multi-format"
    c2 = run(hub, plug.uri + "/multi-format", "-A", "41")
    req2, resp2 = piggybacked(c2, "2.05")
    assert req2.opt("Accept") == "application/xml"
    assert resp2.opt("Content-Format") == "application/xml" and c2.body.startswith(b"<")


def etag_arg(number: int, value: str) -> list[str]:
    """``-O N,0x…`` from libcoap's printed ETag (``0x7631``)."""
    return ["-O", f"{number},{value}"]


def test_TD_COAP_CORE_21(hub, plug):
    uri = plug.uri + "/validate"
    c1 = run(hub, uri)
    req, resp = piggybacked(c1, "2.05")
    assert req.opt("ETag") is None
    etag1 = resp.opt("ETag")
    assert etag1 and c1.body
    c2 = run(hub, uri, *etag_arg(4, etag1))
    req, resp = piggybacked(c2, "2.03")
    assert req.opt("ETag") == etag1 and resp.opt("ETag") == etag1 and resp.payload == b""
    run(hub, uri, "-m", "put", "-e", "v2 now", "-t", "0")  # another client updates it
    c4 = run(hub, uri, *etag_arg(4, etag1))
    req, resp = piggybacked(c4, "2.05")
    assert resp.opt("ETag") not in (None, etag1) and c4.body not in (b"", c1.body)


def test_TD_COAP_CORE_22(hub, plug):
    uri = plug.uri + "/validate"
    c = run(hub, uri)
    _, resp = piggybacked(c, "2.05")
    etag1 = resp.opt("ETag")
    c = run(hub, uri, "-m", "put", "-e", "step 5", "-t", "0", *etag_arg(1, etag1))
    req, resp = piggybacked(c, "2.04")
    assert req.opt("If-Match") == etag1
    c = run(hub, uri)
    _, resp = piggybacked(c, "2.05")
    etag2 = resp.opt("ETag")
    assert etag2 not in (None, etag1) and c.body == b"step 5"
    run(hub, uri, "-m", "put", "-e", "step 13", "-t", "0")  # a concurrent update
    c = run(hub, uri, "-m", "put", "-e", "step 17", "-t", "0", *etag_arg(1, etag2))
    piggybacked(c, "4.12")
    assert plug.state.validate == b"step 13"


def test_TD_COAP_CORE_23(hub, plug):
    uri = plug.uri + "/create1"
    c = run(hub, uri, "-m", "put", "-e", "first", "-t", "0", "-O", "5")
    req, _ = piggybacked(c, "2.01")
    assert req.opt("If-None-Match") == ""
    c = run(hub, uri, "-m", "put", "-e", "second", "-t", "0", "-O", "5")
    piggybacked(c, "4.12")
    assert plug.state.create1 == b"first"


# -- LINK -------------------------------------------------------------------------


def wkc(hub, plug, query: str = "") -> CoapClient:
    c = run(hub, plug.uri + "/.well-known/core" + (f"?{query}" if query else ""))
    _, resp = piggybacked(c, "2.05")
    assert resp.opt("Content-Format") == "application/link-format"
    return c


def test_TD_COAP_LINK_01(hub, plug):
    c = wkc(hub, plug)
    assert PLUGTEST_RESOURCES <= link_targets(c.body)


@pytest.mark.parametrize("td", sorted(LINK_FILTERS))
def test_link_filter(hub, plug, td):
    query, expected = LINK_FILTERS[td]
    c = wkc(hub, plug, query)
    assert c.first_request().opts("Uri-Query") == [query]
    assert link_targets(c.body) == expected


def test_TD_COAP_LINK_09(hub, plug):
    c = wkc(hub, plug, "ct=40")
    assert link_targets(c.body) == {"/path"}
    c = run(hub, plug.uri + "/path")
    _, resp = piggybacked(c, "2.05")
    assert resp.opt("Content-Format") == "application/link-format"
    assert link_targets(c.body) == PATH_SUBS
    c = run(hub, plug.uri + "/path/sub1")
    piggybacked(c, "2.05")
    assert b"/path/sub1" in c.body


# -- BLOCK ------------------------------------------------------------------------


def block2_chain(c: CoapClient, first: int | None) -> None:
    gets = [m for m in c.sent() if m.code == "GET"]
    b = gets[0].block
    assert b is None if first is None else b == (0, False, first), gets[0]
    resp0 = c.response_to(gets[0])
    num, more, act = resp0.block
    assert num == 0 and more and len(resp0.payload) == act
    for i, m in enumerate(gets[1:], 1):
        assert m.block == (i, False, act), m
        r = c.response_to(m)
        assert r.block[0] == i and r.opt("ETag") == resp0.opt("ETag")
        assert len(r.payload) == act if r.block[1] else 0 < len(r.payload) <= act
    assert not c.response_to(gets[-1]).block[1]


@pytest.mark.parametrize(
    "td, size", [("TD_COAP_BLOCK_01", 64), ("TD_COAP_BLOCK_02", None), ("TD_COAP_BLOCK_06", 16)]
)
def test_block2(hub, plug, td, size):
    c = run(hub, plug.uri + "/large", *([] if size is None else ["-b", str(size)]))
    assert c.body == LARGE_BODY
    block2_chain(c, size)


@pytest.fixture
def upload_file():
    files = []

    def make(body: bytes) -> str:
        fd, path = tempfile.mkstemp(prefix="plugtest-upload-")
        os.write(fd, body)
        os.close(fd)
        files.append(path)
        return path

    yield make
    for path in files:
        os.unlink(path)


def block1_chain(c: CoapClient, method: str, size: int, body: bytes) -> LcMsg:
    ups = [m for m in c.sent() if m.code == method and m.block_opt("Block1") is not None]
    n = (len(body) + size - 1) // size
    assert len(ups) == n, c.output
    last = None
    for i, m in enumerate(ups):
        assert m.block_opt("Block1") == (i, i < n - 1, size), m
        assert m.payload == body[i * size : (i + 1) * size]
        r = c.response_to(m)
        if i < n - 1:
            assert r.code == "2.31" and r.block_opt("Block1") == (i, True, size), r
        else:
            assert r.block_opt("Block1") == (i, False, size), r
            last = r
    return last


def test_TD_COAP_BLOCK_03(hub, plug, upload_file):
    path = upload_file(UPLOAD)
    c = run(hub, plug.uri + "/large-update", "-m", "put", "-f", path, "-b", "256", "-t", "0")
    r = block1_chain(c, "PUT", 256, UPLOAD)
    assert r.code == "2.04" and plug.state.large_update == UPLOAD


def test_TD_COAP_BLOCK_04(hub, plug, upload_file):
    path = upload_file(UPLOAD)
    c = run(hub, plug.uri + "/large-create", "-m", "post", "-f", path, "-b", "256", "-t", "0")
    r = block1_chain(c, "POST", 256, UPLOAD)
    assert r.code == "2.01"
    loc = r.opts("Location-Path")
    assert len(loc) == 2 and loc[0] == "large-create"
    got = run(hub, plug.uri + "/" + "/".join(loc))
    piggybacked(got, "2.05")
    assert got.body == UPLOAD


def test_TD_COAP_BLOCK_05(hub, plug, upload_file):
    body = UPLOAD + UPLOAD
    path = upload_file(body)
    c = run(hub, plug.uri + "/large-post", "-m", "post", "-f", path, "-b", "512", "-t", "0")
    r = block1_chain(c, "POST", 512, body)
    assert r.code == "2.04" and r.block is not None and r.block[:2] == (0, True)
    down = [m for m in c.sent() if m.code == "POST" and m.block_opt("Block1") is None]
    assert down and all(m.payload == b"" and m.block is not None for m in down)
    assert c.body == body.upper()


# -- OBS --------------------------------------------------------------------------


def notes_of(c: CoapClient, token: bytes) -> list[LcMsg]:
    return [m for m in c.received() if m.token == token and m.code != "0.00" and m.type != "ACK"]


def registration(c: CoapClient) -> LcMsg:
    return next(m for m in c.sent() if m.code == "GET" and m.opt("Observe") == "0")


def increasing(msgs: list[LcMsg]) -> None:
    seqs = [int(m.opt("Observe")) for m in msgs]
    assert all(seq_newer(a, b) for a, b in zip(seqs, seqs[1:], strict=False)), seqs


def check_observation(c: CoapClient, kind: str) -> list[LcMsg]:
    reg = registration(c)
    first = c.response_to(reg)
    assert first.code == "2.05" and first.opt("Observe") is not None and first.token == reg.token
    notes = [m for m in notes_of(c, reg.token) if m.opt("Observe") is not None and m is not first]
    assert len(notes) >= 3, c.output
    cf = first.opt("Content-Format")
    assert all(m.code == "2.05" and m.opt("Content-Format") == cf for m in notes)
    increasing([first, *notes])
    acks = {m.mid for m in c.sent() if m.type == "ACK"}
    # the client ACKs each (the last one perhaps after it was switched off)
    assert all(m.mid in acks for m in notes[:-1] if m.type == "CON")
    if kind == "CON":
        assert first.type == "ACK" and all(m.type == "CON" for m in notes)
    else:
        assert sum(m.type == "NON" for m in notes) >= len(notes) - 1
    return notes


def background(uri: str, *args: str) -> CoapClient:
    """An observing coap-client running in the background (stopped by PID)."""
    return CoapClient(["-B", "5", *args, uri]).start()


def wait_output(c: CoapClient, timeout: float = 3.0) -> CoapClient:
    return greencoap.get_hub().run_in_thread(c.wait, timeout, timeout=timeout + 5)


def observe_until(plug, uri: str, *args: str, count: int = 5) -> CoapClient:
    """coap-client observing ``uri`` until the server has sent ``count``
    notifications, then switched off (its output is what it printed)."""
    c = background(uri, "-s", "4", *args)
    try:
        assert wait_until(lambda: plug.stats.get("notifications_sent", 0) >= count, 4)
        greencoap.sleep(0.02)  # the last one is ACKed
    finally:
        c.kill()
        wait_output(c)
    return c


def test_TD_COAP_OBS_01(hub, plug):
    c = observe_until(plug, plug.uri + "/obs", "-T", "o1")
    check_observation(c, "CON")


def test_TD_COAP_OBS_02(hub, plug):
    c = observe_until(plug, plug.uri + "/obs-non", "-N", "-T", "o2")
    assert registration(c).type == "NON"
    check_observation(c, "NON")


def test_TD_COAP_OBS_05(hub, make_plug):
    """Client OFF (SIGKILL): the server's unACKed CON notifications are
    retransmitted with newer Observe values, then it gives up."""
    # 4 sends over >= 0.7 s (>= 14 ticks even on a loaded CI machine), given up by 2.25 s
    plug = make_plug(max_retransmit=3, ack_timeout=0.1)
    with Tap(("127.0.0.1", plug.port)) as tap:
        c = background(tap.uri + "/obs", "-s", "4", "-T", "o5")
        try:
            assert wait_until(lambda: len(tap.messages(S2C)) >= 3, 3)
        finally:
            c.kill()
            wait_output(c)
        n = len(tap.snapshot())
        assert wait_until(lambda: plug.stats["observers"] == 0, 4)
        off = [s.msg for s in tap.snapshot()[n:] if s.direction == S2C]
    notes = notes_of(c, registration(c).token)
    assert len(notes) >= 2
    assert off and all(m.mtype == 0 for m in off), off
    assert len({m.observe for m in off}) >= 2  # the retransmissions carry newer states
    assert plug.stats.get("observers_dropped_timeout") == 1


def test_TD_COAP_OBS_06(hub, plug):
    """The client reboots: a new coap-client on the same port answers the
    next notification (an unknown token to it) with RST."""
    port = free_port()
    uri = plug.uri + "/obs"
    c = background(uri, "-s", "4", "-T", "o6", "-p", str(port))
    try:
        assert wait_until(lambda: plug.stats["observers"] == 1, 3)
        greencoap.sleep(OBS_PERIOD * 2)
    finally:
        c.kill()
        wait_output(c)
    token = registration(c).token
    rebooted = run(hub, plug.uri + "/separate", "-T", "zz", "-p", str(port))
    rst = [m for m in rebooted.sent() if m.type == "RST"]
    assert rst, rebooted.output
    note = next(m for m in rebooted.received() if m.mid == rst[0].mid)
    assert note.token == token and note.type == "CON"
    assert wait_until(lambda: plug.stats.get("observers_dropped_rst") == 1)
    assert plug.stats["observers"] == 0


def observe_and(hub, plug, token: str, *stimulus: str) -> tuple[CoapClient, LcMsg]:
    """Observe /obs in the background, run ``stimulus`` from another
    coap-client, return the observer's run and its last message for the token."""
    c = background(plug.uri + "/obs", "-s", "3", "-T", token)
    try:
        assert wait_until(lambda: plug.stats["observers"] == 1, 3)
        greencoap.sleep(OBS_PERIOD * 2)
        s = run(hub, plug.uri + "/obs", *stimulus)
        assert s.response_to(s.first_request()).code in ("2.04", "2.02")
        greencoap.sleep(OBS_PERIOD * 3)
    finally:
        c.kill()
        wait_output(c)
    notes = notes_of(c, registration(c).token)
    return c, notes


def test_TD_COAP_OBS_07(hub, plug):
    c, notes = observe_and(hub, plug, "o7", "-m", "delete")
    final = next(m for m in notes if m.code != "2.05")
    assert final.code == "4.04" and final.type == "CON" and final.opt("Observe") is None
    assert notes[-1] is final  # nothing after it
    assert plug.stats["observers"] == 0


def test_TD_COAP_OBS_08(hub, plug):
    c, notes = observe_and(hub, plug, "o8", "-m", "put", "-t", "41", "-e", "<v>new</v>")
    first_cf = c.response_to(registration(c)).opt("Content-Format")
    changed = [m for m in notes if m.code != "2.05" or m.opt("Content-Format") != first_cf]
    assert changed, c.output
    final = changed[0]
    assert final.code == "4.06" and final.type == "CON" and final.opt("Observe") is None, final
    assert notes[-1] is final
    assert plug.stats["observers"] == 0


def test_TD_COAP_OBS_09(hub, plug):
    c, notes = observe_and(hub, plug, "o9", "-m", "put", "-t", "0", "-e", "a new value")
    new = [m for m in notes if m.payload == b"a new value"]
    assert new, c.output
    assert new[0].type == "CON" and new[0].code == "2.05"
    assert new[0].opt("Content-Format") == c.response_to(registration(c)).opt("Content-Format")
    increasing([m for m in notes if m.opt("Observe") is not None])


def test_TD_COAP_OBS_11(hub, make_plug):
    """Lossy: notifications and their ACKs are dropped now and then (the
    registration is left alone: libcoap retransmits it only after 2 s)."""
    plug = make_plug(max_retransmit=4)
    import random

    rng = random.Random(11)

    def drop(direction, msg) -> bool:
        if msg.code == 1 or (direction == S2C and msg.mtype == 2):
            return False  # the registration and its ACK
        return rng.random() < 0.25

    with Tap(("127.0.0.1", plug.port), drop=drop) as tap:
        c = observe_until(plug, tap.uri + "/obs", "-T", "ol", count=6)
    reg = registration(c)
    notes = [m for m in notes_of(c, reg.token) if m.opt("Observe") is not None]
    assert len(notes) >= 3
    fresh = []
    for m in notes:  # the client takes the fresh ones; copies of an old state are ignored
        if not fresh or seq_newer(int(fresh[-1].opt("Observe")), int(m.opt("Observe"))):
            fresh.append(m)
    assert len(fresh) >= 3
    assert tap.dropped(S2C) and tap.dropped(C2S)
    runs: list[int] = []
    for s in tap.snapshot():
        m = s.msg
        if s.direction == S2C and m.mtype == 0 and m.token == reg.token:
            if runs and runs[-1] == m.mid:
                continue
            assert m.mid not in runs, f"notification MID {m.mid:#x} again after another"
            runs.append(m.mid)


def test_TD_COAP_OBS_12(hub, plug):
    """libcoap deregisters at the end of ``-s``: GET with Observe=1, token t.
    It exits without waiting for the answer, which a Tap records."""
    with Tap(("127.0.0.1", plug.port)) as tap:
        c = run(hub, tap.uri + "/obs", "-s", "1", "-T", "oc", timeout=4)
        reg = registration(c)
        dereg = [m for m in c.sent() if m.code == "GET" and m.opt("Observe") == "1"]
        assert dereg and dereg[0].token == reg.token and dereg[0].type == "CON", c.output
        assert wait_until(lambda: plug.stats["observers"] == 0, 1)
        greencoap.sleep(OBS_PERIOD * 3)
    seen = tap.snapshot()
    i = next(k for k, x in enumerate(seen) if x.direction == C2S and x.msg.mid == dereg[0].mid)
    r = next(x.msg for x in seen[i:] if x.direction == S2C and x.msg.mid == dereg[0].mid)
    assert r.mtype == 2 and r.code == 69 and r.observe is None and r.token == reg.token
    assert str(r.content_format) and r.content_format == 0
    later = [x.msg for x in seen[i:] if x.direction == S2C and x.msg.token == reg.token]
    # the answer, and one notification on its way at most (counted by message ID:
    # libcoap has exited, so a CON notification is retransmitted unacknowledged)
    assert len({m.mid for m in later}) <= 2, later


@pytest.mark.parametrize("td", ["TD_COAP_OBS_13", "TD_COAP_OBS_14"])
def test_observe_large(hub, plug, td):
    c = observe_until(plug, plug.uri + "/obs-large", "-T", "lg", count=5)
    reg = registration(c)
    notes = [m for m in notes_of(c, reg.token) if m.opt("Observe") is not None]
    assert len(notes) >= 3
    assert all(m.block is not None and m.block[:2] == (0, True) for m in notes)
    follow = [m for m in c.sent() if m.code == "GET" and m.block is not None]
    assert follow and all(m.opt("Observe") is None for m in follow)
    bodies = []  # each notification reassembled from its blocks (same ETag)
    for n in [c.response_to(reg), *notes]:
        body = n.payload
        for m in follow:
            r = c.response_to(m)
            if r.opt("ETag") == n.opt("ETag") and r.block[0] > 0:
                body += r.payload
        bodies.append(body)
    states = [obs_large_state(b) for b in bodies]
    assert states.count(None) <= 1, [len(b) for b in bodies]  # the last may be cut off by -s
    if td == "TD_COAP_OBS_14":
        assert len({len(b) for b, s in zip(bodies, states, strict=True) if s is not None}) >= 2
