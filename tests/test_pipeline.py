"""Sans-I/O tests of the server's request pipeline (greencoap.protocol.pipeline).

The pipeline decides; nothing runs a handler here except the tests
themselves, which play the server's part between ``begin`` and ``finish``.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from greencoap.codes import Code, Type
from greencoap.message import Message
from greencoap.options import Block, encode_uint
from greencoap.options import OptionNumber as O
from greencoap.protocol.blockwise_server import Block1Assembler, Block2Cache
from greencoap.protocol.echo import EchoVerifier
from greencoap.protocol.limits import LoadLevels, TokenBuckets
from greencoap.protocol.pipeline import ANSWER, HANDLE, REGISTER, ServerPipeline, reply_message
from greencoap.router import Router

PEER = ("192.0.2.1", 5683)


def stats() -> dict[str, int]:
    keys = (
        "bad_option",
        "bad_request",
        "not_found",
        "not_acceptable",
        "block1_incomplete",
        "block1_too_large",
        "block1_busy",
        "block2_served",
        "load_level",
        "load_level_changes",
        "throttled",
        "shed",
    )
    return dict.fromkeys(keys, 0)


def pipeline(block_size: int = 64, echo: EchoVerifier | None = None, **kw) -> ServerPipeline:
    router = Router()
    router.add("GET", "/hello", lambda req: b"hi")
    router.add("GET", "/json", lambda req: {"a": 1}, ct=50)
    router.add("PUT", "/up", lambda req: b"")
    router.add("GET", "/big", lambda req: bytes(range(256)) * 2)

    def clock(req):
        yield b"1"

    router.add("GET", "/clock", clock)
    router.add("GET", "/things/:id", lambda req, id: id.encode())
    szx = block_size.bit_length() - 5
    return ServerPipeline(
        router.resolve_raw,
        block_size=block_size,
        block_szx=szx,
        block1=Block1Assembler(kw.pop("max_body", 4096), 1 << 20, 60.0),
        block2=Block2Cache(60.0, 1 << 20),
        echo=echo,
        stats=stats(),
        **kw,
    )


def request(path: str, code: int = Code.GET, options=(), payload: bytes = b"") -> Message:
    opts = [(O.URI_PATH, seg.encode()) for seg in path.strip("/").split("/")]
    opts += list(options)
    opts.sort(key=lambda o: o[0])
    return Message(Type.CON, code, 0x100, b"\x01", opts, payload)


def test_refusals_are_answers_counted_and_never_reach_a_handler():
    p = pipeline()
    job = p.begin(request("hello", options=[(65001, b"x")]), PEER, 0.0)  # unknown critical
    assert job.action is ANSWER and job.reply.code == Code.BAD_OPTION
    job = p.begin(request("nowhere"), PEER, 0.0)
    assert job.action is ANSWER and job.reply.code == Code.NOT_FOUND
    job = p.begin(request("hello", Code.DELETE), PEER, 0.0)
    assert job.action is ANSWER and job.reply.code == Code.METHOD_NOT_ALLOWED
    job = p.begin(request("json", options=[(O.ACCEPT, encode_uint(0))]), PEER, 0.0)
    assert job.action is ANSWER and job.reply.code == Code.NOT_ACCEPTABLE
    job = p.begin(Message(Type.CON, Code.GET, 1, b"", [(O.URI_PATH, b"\xff")]), PEER, 0.0)
    assert job.action is ANSWER and job.reply.code == Code.BAD_REQUEST
    assert p.stats["bad_option"] == 1 and p.stats["not_found"] == 2
    assert p.stats["not_acceptable"] == 1 and p.stats["bad_request"] == 1


def test_a_plain_request_is_handled_and_its_reply_passes_unchanged():
    p = pipeline()
    job = p.begin(request("things/7"), PEER, 0.0)
    assert job.action is HANDLE and job.params == {"id": "7"} and job.route.path == "/things/:id"
    reply = Message(Type.ACK, Code.CONTENT, 0, b"", [], b"7")
    assert p.finish(job, reply, 0.1) is reply


def test_observe_registration_and_deregistration_are_decided_here():
    p = pipeline()
    job = p.begin(request("clock", options=[(O.OBSERVE, b"")]), PEER, 0.0)
    assert job.action is REGISTER
    job = p.begin(request("clock", options=[(O.OBSERVE, b"\x01")]), PEER, 0.0)
    assert job.action is HANDLE and job.deregister
    job = p.begin(request("hello", options=[(O.OBSERVE, b"")]), PEER, 0.0)  # not observable
    assert job.action is HANDLE and not job.deregister


def test_finish_refuses_another_format_than_accept_and_validates_etags():
    p = pipeline()
    job = p.begin(request("hello", options=[(O.ACCEPT, encode_uint(50))]), PEER, 0.0)
    text = Message(Type.ACK, Code.CONTENT, 0, b"", [(O.CONTENT_FORMAT, b"")], b"hi")
    assert p.finish(job, text, 0.0).code == Code.NOT_ACCEPTABLE
    assert p.stats["not_acceptable"] == 1
    # the same reply from a registration is not the handler's: left alone
    assert p.finish(job, text, 0.0, handled=False) is text
    job = p.begin(request("hello", options=[(O.ETAG, b"v1")]), PEER, 0.0)
    tagged = Message(Type.ACK, Code.CONTENT, 0, b"", [(O.ETAG, b"v1"), (O.MAX_AGE, b"\x05")], b"x")
    valid = p.finish(job, tagged, 0.0)
    assert valid.code == Code.VALID and valid.payload == b""
    assert valid.options == [(O.ETAG, b"v1"), (O.MAX_AGE, b"\x05")]


def test_preconditions():
    p = pipeline()
    job = p.begin(request("up", Code.PUT, options=[(O.IF_MATCH, b"old")]), PEER, 0.0)
    assert p.preconditions(job, b"new").code == Code.PRECONDITION_FAILED
    assert p.preconditions(job, b"old") is None
    job = p.begin(request("up", Code.PUT, options=[(O.IF_NONE_MATCH, b"")]), PEER, 0.0)
    assert p.preconditions(job, b"any").code == Code.PRECONDITION_FAILED
    assert p.preconditions(job, None) is None
    job = p.begin(request("hello", options=[(O.ETAG, b"cur")]), PEER, 0.0)
    valid = p.preconditions(job, b"cur")
    assert valid.code == Code.VALID and valid.opt(O.ETAG) == b"cur"


def test_a_large_reply_goes_block_wise_and_its_follow_ups_come_from_the_cache():
    p = pipeline(block_size=64)
    body = bytes(range(256)) * 2
    job = p.begin(request("big"), PEER, 0.0)
    first = p.finish(job, Message(Type.ACK, Code.CONTENT, 0, b"", [], body), 0.0)
    assert first.block2 == Block(0, True, 2) and first.payload == body[:64]
    assert first.uint_opt(O.SIZE2) == len(body) and first.etag is not None
    got = first.payload
    for num in range(1, 8):
        follow = request("big", options=[(O.BLOCK2, encode_uint(Block(num, False, 2).encode()))])
        job = p.begin(follow, PEER, 1.0)
        assert job.action is ANSWER  # no handler runs for a follow-up
        assert job.reply.etag == first.etag
        got += job.reply.payload
    assert got == body and not job.reply.block2.more
    assert p.stats["block2_served"] == 8


def test_block1_uploads_are_assembled_before_the_handler_sees_them():
    p = pipeline(block_size=64)
    body = b"x" * 150
    for num in range(3):
        chunk = body[num * 64 : (num + 1) * 64]
        more = (num + 1) * 64 < len(body)
        opts = [(O.BLOCK1, encode_uint(Block(num, more, 2).encode()))]
        job = p.begin(request("up", Code.PUT, opts, chunk), PEER, float(num))
        if more:
            assert job.action is ANSWER and job.reply.code == Code.CONTINUE
    assert job.action is HANDLE and job.message.payload == body
    assert job.message.block1 is None
    done = p.finish(job, Message(Type.ACK, Code.CHANGED, 0, b"", [], b""), 3.0)
    assert done.block1 == Block(2, False, 2)
    # out of sequence: 4.08; too large: 4.13 with Size1
    stray = [(O.BLOCK1, encode_uint(Block(5, True, 2).encode()))]
    job = p.begin(request("up", Code.PUT, stray, b"y" * 64), PEER, 4.0)
    assert job.reply.code == Code.REQUEST_ENTITY_INCOMPLETE
    huge = [(O.BLOCK1, encode_uint(Block(0, True, 2).encode())), (O.SIZE1, encode_uint(10**6))]
    job = p.begin(request("up", Code.PUT, huge, b"y" * 64), PEER, 5.0)
    assert job.reply.code == Code.REQUEST_ENTITY_TOO_LARGE and job.reply.uint_opt(O.SIZE1) == 4096
    assert p.stats["block1_incomplete"] == 1 and p.stats["block1_too_large"] == 1


def test_first_block_of_a_large_notification():
    p = pipeline(block_size=64)
    req = request("big", options=[(O.OBSERVE, b"")])
    small = Message(Type.ACK, Code.CONTENT, 0, b"", [(O.OBSERVE, b"\x02")], b"s")
    assert p.first_block(PEER, req, small, 0.0) is small
    big = Message(Type.ACK, Code.CONTENT, 0, b"", [(O.OBSERVE, b"\x02")], b"b" * 200)
    first = p.first_block(PEER, req, big, 0.0)
    assert first.block2 == Block(0, True, 2) and first.observe == 2 and len(first.payload) == 64


def test_echo_challenges_an_amplifying_reply_to_an_unverified_address():
    p = pipeline(echo=EchoVerifier(3.0, randbytes=lambda n: b"k" * n))
    req = request("big")
    verified, held = p.vouch(req, PEER, 0.0)
    assert not verified and held is None
    big = Message(Type.ACK, Code.CONTENT, 0, b"", [], b"b" * 1000)
    challenge, undo = p.guard(req, PEER, big, 0.0)
    assert challenge.code == Code.UNAUTHORIZED and not undo
    echo = challenge.opt(O.ECHO)
    again = request("big", options=[(O.ECHO, echo)])
    verified, held = p.vouch(again, PEER, 0.5)
    assert verified and held is big  # the handler ran once; its reply waited
    # an Observe registration is undone instead of held
    note = Message(Type.ACK, Code.CONTENT, 0, b"", [(O.OBSERVE, b"\x01")], b"n" * 1000)
    other = ("192.0.2.9", 5683)
    challenge, undo = p.guard(request("clock"), other, note, 1.0)
    assert challenge.code == Code.UNAUTHORIZED and undo
    small = Message(Type.ACK, Code.CONTENT, 0, b"", [], b"ok")
    assert p.guard(request("hello"), other, small, 1.0) == (small, False)


def test_reply_message_marks_a_diagnostic_as_text():
    m = reply_message(Code.NOT_FOUND, "gone")
    assert m.payload == b"gone" and m.content_format == 0
    assert reply_message(Code.NOT_FOUND).options == []


@settings(max_examples=200, deadline=None)
@given(
    path=st.lists(st.binary(max_size=6), max_size=3),
    options=st.lists(st.tuples(st.integers(1, 2100), st.binary(max_size=9)), max_size=5),
    code=st.integers(1, 31),
)
def test_property_any_request_gets_an_action_and_never_raises(path, options, code):
    p = pipeline()
    opts = sorted([(O.URI_PATH, seg) for seg in path] + options, key=lambda o: o[0])
    msg = Message.decode(Message(Type.CON, code, 7, b"\x02", opts, b"").encode())
    job = p.begin(msg, PEER, 0.0)
    assert job.action in (ANSWER, HANDLE, REGISTER)
    if job.action is ANSWER:
        assert job.reply.code >= 64
    else:
        reply = p.finish(job, Message(Type.ACK, Code.CONTENT, 0, b"", [], b"r" * 100), 0.0)
        assert reply.code >= 64


def test_admission_throttles_then_sheds_and_recovers_with_hysteresis():
    p = pipeline(load=LoadLevels(10, 100), buckets=TokenBuckets(rate=1.0, burst=2.0))
    req = request("hello")
    assert p.admission(5) is None  # normal load: serve everything, no per-request check
    check = p.admission(10)
    assert p.stats["load_level"] == 1 and p.stats["load_level_changes"] == 1
    # throttled: each peer within its rate (a burst of 2) is served, then 4.29
    assert [check(req, PEER, 0.0) for _ in range(3)] == [None, None, Code.TOO_MANY_REQUESTS]
    assert check(req, ("192.0.2.7", 1), 0.0) is None  # another peer has its own bucket
    assert check(req, PEER, 1.0) is None  # a token came back
    assert p.stats["throttled"] == 1
    shed = p.admission(100)
    assert shed(req, ("192.0.2.8", 1), 0.0) == Code.SERVICE_UNAVAILABLE and p.stats["shed"] == 1
    assert p.admission(60) == shed  # above half the shedding level: still shedding
    assert p.admission(40) is not None and p.stats["load_level"] == 1  # throttled again
    assert p.admission(4) is None and p.stats["load_level"] == 0
    assert p.stats["load_level_changes"] == 4


# -- the plain path (ServerPipeline.plain / finish_plain) -------------------------

_PLAIN_PATHS = ["hello", "json", "up", "big", "clock", "things/7", "nowhere", "hello/x"]
_OPTION_POOL = [
    (O.URI_HOST, b"h"),
    (O.URI_PORT, b"\x16\x33"),
    (O.URI_QUERY, b"a=1"),
    (O.URI_QUERY, b"b"),
    (O.CONTENT_FORMAT, b""),
    (O.CONTENT_FORMAT, b"\x32"),
    (O.ACCEPT, b"\x32"),
    (O.ETAG, b"e1"),
    (O.OBSERVE, b""),
    (O.OBSERVE, b"\x01"),
    (O.BLOCK2, b"\x02"),
    (O.BLOCK1, b"\x0a"),
    (O.IF_NONE_MATCH, b""),
    (O.ECHO, b"x" * 12),
    (O.NO_RESPONSE, b"\x02"),
    (65001, b"x"),  # unknown critical
    (65000, b"x"),  # unknown elective
    (O.PROXY_URI, b"coap://x"),
]


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(_PLAIN_PATHS),
    st.sampled_from([Code.GET, Code.PUT, Code.POST, Code.FETCH]),
    st.lists(st.sampled_from(_OPTION_POOL), max_size=4),
    st.booleans(),
    st.integers(0, 600),
)
def test_a_plain_request_gets_what_begin_and_finish_would_give(path, code, extra, bad, size):
    """plain() takes a request only when begin() would hand it to its handler
    with nothing else decided, and finish_plain() shapes the handler's reply
    as finish() does (the server's fast path and its full path agree); every
    request with plain options only on a route without ETag hook is taken."""
    p, q = pipeline(), pipeline()
    msg = request(path, code, extra)
    if bad:
        msg.bad_options = [O.URI_PORT]
    plan = p.plain(msg)
    job = q.begin(msg, PEER, 0.0)
    only_plain = not bad and all(
        n in (O.URI_HOST, O.URI_PORT, O.URI_QUERY, O.CONTENT_FORMAT) for n, _ in extra
    )
    single_ok = all(sum(1 for n, _ in extra if n == s) <= 1 for s in (O.URI_HOST, O.URI_PORT))
    if plan is None:
        assert not (only_plain and single_ok and job.action is HANDLE), (msg, job)
        return
    route, params, raw = plan
    assert job.action is HANDLE and not job.deregister and not job.blockwise
    assert (job.route.method, job.route.path) == (route.method, route.path)
    assert (job.params, job.raw_key) == (params, raw)
    assert job.accept is None and job.message is msg and job.block1 is None
    reply = Message(Type.ACK, Code.CONTENT, 0, b"", [(O.CONTENT_FORMAT, b"")], bytes(size))
    copy = Message(Type.ACK, Code.CONTENT, 0, b"", [(O.CONTENT_FORMAT, b"")], bytes(size))
    fast = p.finish_plain(msg, PEER, raw, reply, 0.0)
    full = q.finish(job, copy, 0.0)
    assert fast.encode() == full.encode()
    assert p.stats == q.stats


def test_plain_leaves_a_route_with_an_etag_hook_to_the_full_path():
    router = Router()
    router.add("GET", "/v", lambda req: b"1", etag=lambda req: b"e")
    p = ServerPipeline(
        router.resolve_raw,
        block_size=64,
        block_szx=2,
        block1=Block1Assembler(4096, 1 << 20, 60.0),
        block2=Block2Cache(60.0, 1 << 20),
        echo=None,
        stats=stats(),
    )
    assert p.plain(request("v")) is None
    assert p.begin(request("v"), PEER, 0.0).action is HANDLE


def test_plain_is_off_when_a_plain_critical_option_is_not_understood():
    from greencoap.protocol.validation import UNDERSTOOD_OPTIONS

    p = pipeline(understood=UNDERSTOOD_OPTIONS - {O.URI_HOST})
    msg = request("hello", options=[(O.URI_HOST, b"h")])
    assert p.plain(msg) is None and p.plain(request("hello")) is None
    assert p.begin(msg, PEER, 0.0).reply.code == Code.BAD_OPTION
