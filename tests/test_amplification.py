"""Bounded amplification and bad option values, on the wire.

* An address not yet verified never gets more than about 3× the bytes of
  its request: a larger response is held back behind 4.01 + Echo (RFC 9175
  §2.4); the repetition with the Echo value gets it (the handler ran once)
  and the address is verified from then on.  libcoap's client and
  greencoap's answer the challenge by themselves; aiocoap's (0.4.17) does
  not, and sees the 4.01.
* RSTs to one peer are rate-limited (no ping-pong with a reflector).
* Invalid values of critical options are refused before any handler work:
  Block1/Block2 with SZX 7 → 4.00, a repeated single critical option or a
  bad length → 4.02, Proxy-Uri → 5.05; never a traceback, never silence.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess

import pytest

from greencoap import Client, Code, Router, Server, Type
from greencoap.demo import build_router
from greencoap.message import Message
from greencoap.options import OptionNumber as O

from .conftest import which_or_skip

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def srv(hub):
    router = build_router()
    posts = []

    @router.post("/report")
    def report(request):
        posts.append(request.payload)
        return "r" * 600  # a large answer to a small, non-idempotent request

    s = Server(router, host="127.0.0.1", port=0).start()
    s.posts = posts
    s.addr = ("127.0.0.1", s.port)
    s.uri = f"coap://127.0.0.1:{s.port}"
    yield s
    s.stop()


class Raw:
    """A plain UDP socket on its own port (an address the server never saw),
    used from a worker thread while the hub serves."""

    def __init__(self, hub, addr):
        self.hub = hub
        self.addr = addr
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(3)
        self.sent = self.received = 0
        self.mid = 100

    def ask(self, msg: Message) -> Message:
        self.mid += 1
        msg.mid = self.mid
        data = msg.encode()

        def run():
            self.sock.sendto(data, self.addr)
            return self.sock.recvfrom(4096)[0]

        reply = self.hub.run_in_thread(run, timeout=10)
        self.sent += len(data)
        self.received += len(reply)
        return Message.decode(reply)

    def close(self):
        self.sock.close()


def get(path: str, query: str | None = None, *extra) -> Message:
    opts = [(O.URI_PATH, p.encode()) for p in path.strip("/").split("/")]
    if query:
        opts.append((O.URI_QUERY, query.encode()))
    return Message(Type.CON, Code.GET, 0, b"t1", opts + list(extra))


def test_unverified_address_gets_a_challenge_then_the_response(hub, srv):
    raw = Raw(hub, srv.addr)
    try:
        first = raw.ask(get("large", "size=3000"))
        assert first.code == Code.UNAUTHORIZED and first.max_age == 0
        echo = first.opt(O.ECHO)
        assert echo is not None and len(first.encode()) <= 3 * len(
            get("large", "size=3000").encode()
        )
        again = raw.ask(get("large", "size=3000", (O.ECHO, echo)))
        assert again.code == Code.CONTENT and len(again.payload) == 1024  # block 0
        # verified now: the next block comes at once, without a challenge
        nxt = raw.ask(get("large", "size=3000", (O.BLOCK2, b"\x16")))  # block 1, 1024
        assert nxt.code == Code.CONTENT and len(nxt.payload) == 1024
        assert srv.stats["echo_challenges"] == 1 and srv.stats["echo_verified"] == 1
    finally:
        raw.close()


def test_a_forged_or_stale_echo_value_does_not_verify(hub, srv):
    raw = Raw(hub, srv.addr)
    try:
        r = raw.ask(get("large", "size=3000", (O.ECHO, b"\x00" * 12)))
        assert r.code == Code.UNAUTHORIZED
        value = r.opt(O.ECHO)
        other = Raw(hub, srv.addr)  # another address cannot use this one's value
        try:
            assert other.ask(get("large", "size=3000", (O.ECHO, value))).code == Code.UNAUTHORIZED
        finally:
            other.close()
        assert srv.stats["echo_stale"] == 2
    finally:
        raw.close()


def test_amplification_stays_within_three_times(hub, srv):
    """A spoofer's view: many requests, never answering a challenge; the
    bytes that come back stay within 3× the bytes sent."""
    raw = Raw(hub, srv.addr)
    try:
        for req in [
            get("large", "size=100000"),
            get("large", "size=2000", (O.BLOCK2, b"\x06")),
            get(".well-known/core"),
            get("large", "size=1000", (O.BLOCK2, b"\x56")),  # block 5 of 1024
            get("hello"),
            get("counter", None, (O.OBSERVE, b"")),
        ]:
            raw.ask(req)
        assert raw.received <= 3 * raw.sent, (raw.received, raw.sent)
    finally:
        raw.close()


def test_a_non_idempotent_request_runs_once(hub, srv):
    raw = Raw(hub, srv.addr)
    try:
        post = Message(Type.CON, Code.POST, 0, b"p", [(O.URI_PATH, b"report")], b"x")
        first = raw.ask(post)
        assert first.code == Code.UNAUTHORIZED
        again = Message(
            Type.CON,
            Code.POST,
            0,
            b"p",
            [(O.URI_PATH, b"report"), (O.ECHO, first.opt(O.ECHO))],
            b"x",
        )
        reply = raw.ask(again)
        assert reply.code == Code.CHANGED and reply.payload == b"r" * 600
        assert srv.posts == [b"x"]  # the held-back response was sent; the handler ran once
    finally:
        raw.close()


def test_greencoap_client_answers_challenges_by_itself(hub, srv):
    with Client(timeout=5) as c:
        r = c.get(srv.uri + "/large?size=5000")
        assert r.code == Code.CONTENT and len(r.payload) == 5000
        r = c.post(srv.uri + "/report", b"y")
        assert r.payload == b"r" * 600
    assert srv.stats["echo_challenges"] >= 1 and srv.stats["echo_verified"] >= 1
    assert srv.posts == [b"y"]


def test_libcoap_client_answers_challenges(hub, srv):
    client = which_or_skip("coap-client-notls")

    def run():
        return subprocess.run(
            [client, "-m", "get", srv.uri + "/large?size=3000"], capture_output=True, timeout=30
        )

    out = hub.run_in_thread(run, timeout=40)
    assert out.stdout.rstrip(b"\n") == (b"0123456789abcdef" * 188)[:3000]
    assert srv.stats["echo_challenges"] >= 1 and srv.stats["echo_verified"] >= 1


def test_aiocoap_client_sees_the_challenge(hub, srv, aiocoap_mod):
    """aiocoap 0.4.17 does not repeat a request with the Echo value outside
    OSCORE: it gets the 4.01 (the README says to run such servers with
    ``echo_factor=None`` / ``--echo-factor 0``)."""
    aiocoap = aiocoap_mod

    async def run():
        ctx = await aiocoap.Context.create_client_context()
        try:
            msg = aiocoap.Message(code=aiocoap.GET, uri=srv.uri + "/large?size=3000")
            return await ctx.request(msg).response
        finally:
            await ctx.shutdown()

    r = hub.run_in_thread(lambda: asyncio.run(asyncio.wait_for(run(), 20)), timeout=30)
    assert r.code == aiocoap.UNAUTHORIZED and r.opt.echo is not None


def test_echo_off(hub):
    s = Server(build_router(), host="127.0.0.1", port=0, echo_factor=None).start()
    raw = Raw(hub, ("127.0.0.1", s.port))
    try:
        assert raw.ask(get("large", "size=3000")).code == Code.CONTENT
    finally:
        raw.close()
        s.stop()


# -- RST rate limit -----------------------------------------------------------------


def test_rsts_to_one_peer_are_rate_limited(hub):
    """1,000 pings (each answered RST) from one port: at most the burst plus
    the rate get an RST; the rest are counted, not sent.  (Early shedding is
    off here: it would drop most of such a burst before the message layer.)"""
    srv = Server(Router(), host="127.0.0.1", port=0, shed_trigger=None).start()
    srv.addr = ("127.0.0.1", srv.port)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.5)

    def run():
        for i in range(1000):
            sock.sendto(bytes((0x40, 0, i >> 8, i & 0xFF)), srv.addr)
        n = 0
        try:
            while True:
                sock.recvfrom(64)
                n += 1
        except TimeoutError:
            return n

    try:
        rsts = hub.run_in_thread(run, timeout=30)
    finally:
        sock.close()
        srv.stop()
    assert 150 <= rsts <= 300, rsts  # burst 200 + 100/s while the pings arrive
    assert srv.stats["rst_suppressed"] >= 700
    assert srv.stats["pings"] == 1000


# -- bad option values ----------------------------------------------------------------


@pytest.mark.parametrize(
    "options, code",
    [
        ([(O.URI_PATH, b"large"), (O.BLOCK2, b"\x07")], Code.BAD_REQUEST),  # SZX 7
        ([(O.URI_PATH, b"store"), (O.BLOCK1, b"\x0f")], Code.BAD_REQUEST),
        ([(O.URI_PATH, b"hello"), (O.BLOCK2, b"\x00\x00\x00\x06")], Code.BAD_OPTION),  # 4 bytes
        ([(O.URI_HOST, b"a"), (O.URI_HOST, b"b"), (O.URI_PATH, b"hello")], Code.BAD_OPTION),
        ([(O.URI_PATH, b"hello"), (O.URI_PORT, b"\x01\x02\x03")], Code.BAD_OPTION),
        ([(O.URI_PATH, b"hello"), (O.PROXY_URI, b"coap://x/")], Code.PROXYING_NOT_SUPPORTED),
        ([(O.URI_PATH, b"hello"), (2049, b"")], Code.BAD_OPTION),  # unknown critical
        ([(O.URI_PATH, b"hello"), (O.ACCEPT, b"\x00\x00\x32")], Code.BAD_OPTION),  # 3 bytes
    ],
)
def test_invalid_critical_options_are_refused(hub, srv, options, code):
    srv.echo = None
    raw = Raw(hub, srv.addr)
    try:
        reply = raw.ask(Message(Type.CON, Code.GET, 0, b"b", options))
        assert reply.code == code, reply
    finally:
        raw.close()
    assert srv.stats["handler_errors"] == 0


def test_bad_length_elective_options_are_ignored(hub, srv):
    """An elective option with an out-of-bounds length is treated as absent
    (RFC 7252 §5.4.3): Observe of 4 bytes is no registration, Size2 of 5
    bytes is ignored."""
    srv.echo = None
    raw = Raw(hub, srv.addr)
    try:
        r = raw.ask(get("counter", None, (O.OBSERVE, b"\x00\x00\x00\x00")))
        assert r.code == Code.CONTENT and r.observe is None
        r = raw.ask(get("hello", None, (O.SIZE2, b"\x00\x00\x00\x00\x32")))
        assert r.code == Code.CONTENT
    finally:
        raw.close()
    assert srv.stats["observers"] == 0


def test_a_message_with_reserved_szx_from_libcoap_style_block_size(hub):
    """The codec and the router agree: Block2 SZX 7 in a valid request to a
    handler that would fail on it never reaches the handler."""
    calls = []
    router = Router()

    @router.get("/x")
    def x(request):
        calls.append(request.message.block2)
        return "x"

    s = Server(router, host="127.0.0.1", port=0, echo_factor=None).start()
    raw = Raw(hub, ("127.0.0.1", s.port))
    try:
        r = raw.ask(Message(Type.CON, Code.GET, 0, b"q", [(O.URI_PATH, b"x"), (O.BLOCK2, b"\x17")]))
        assert r.code == Code.BAD_REQUEST and b"SZX 7" in r.payload
        assert calls == []
    finally:
        raw.close()
        s.stop()
