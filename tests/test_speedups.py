"""The C codec (greencoap/_speedups.c) against the pure Python one, differentially.

Every input, valid or mutated, must give the same message (every field, the
same enum members) or the same MessageFormatError text on both paths; every
message, well-formed or not, the same bytes or the same error.  The rest of
the suite runs on whichever codec is loaded (C after ``make install``);
``make test`` runs the codec and engine tests once more with
``GREENCOAP_NO_EXTENSIONS=1``.  CI sets GREENCOAP_REQUIRE_SPEEDUPS=1 so that
a missing build fails instead of skipping.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greencoap import message as m
from greencoap.codes import Code, Type
from greencoap.errors import MessageFormatError
from greencoap.message import Message
from greencoap.options import OptionNumber

from .conftest import require_or_skip

FIELDS = ("mtype", "code", "mid", "token", "options", "payload", "bad_options")


@pytest.fixture(scope="module")
def c():
    """The C module (skipped, or failed under GREENCOAP_REQUIRE_SPEEDUPS=1, when not built)."""
    try:
        from greencoap import _speedups
    except ImportError:
        _speedups = None
    require_or_skip(
        _speedups is not None, "the C codec (greencoap._speedups)", "GREENCOAP_REQUIRE_SPEEDUPS"
    )
    if m._speedups is None:  # configured even when the codec in use is the Python one
        m._load_speedups()
    return _speedups


def outcome(fn, *args):
    """What ``fn(*args)`` gives: ("ok", value) or ("error", class, text)."""
    try:
        return ("ok", fn(*args))
    except MessageFormatError as e:
        return ("error", type(e), str(e))
    except Exception as e:  # noqa: BLE001 - compared as such
        return ("error", type(e), str(e))


def fields(msg: Message) -> tuple:
    return tuple((getattr(msg, f), type(getattr(msg, f))) for f in FIELDS)


def same_decode(c, data) -> None:
    py = outcome(m.decode_py, data)
    cc = outcome(c.decode, data)
    if py[0] == "ok" and cc[0] == "ok":
        assert type(cc[1]) is type(py[1])
        assert fields(cc[1]) == fields(py[1]), data
        assert cc[1].mtype is py[1].mtype and cc[1].code is py[1].code
    else:
        assert cc == py, data


def same_encode(c, msg: Message) -> None:
    assert outcome(c.encode, msg) == outcome(m.encode_py, msg), msg


option = st.tuples(
    st.one_of(
        st.sampled_from([int(o) for o in OptionNumber]),
        st.integers(0, 65535),
        st.integers(0, 300),
    ),
    st.one_of(st.binary(max_size=20), st.binary(min_size=250, max_size=300)),
)
messages = st.builds(
    Message,
    st.sampled_from(list(Type)),
    st.one_of(st.sampled_from(list(Code)), st.integers(0, 255)),
    st.integers(0, 65535),
    st.binary(max_size=8),
    st.lists(option, max_size=8),
    st.binary(max_size=40),
)


@settings(max_examples=600, deadline=None)
@given(messages)
def test_valid_messages_round_trip_the_same(c, msg):
    """Well-formed messages (options in any order): same bytes, same decode."""
    same_encode(c, msg)
    try:
        data = m.encode_py(msg)
    except MessageFormatError:
        return
    same_decode(c, data)


@settings(max_examples=600, deadline=None)
@given(messages, st.data())
def test_mutated_datagrams_decode_the_same(c, msg, data):
    """A valid datagram with bytes flipped, cut or inserted: same message or error."""
    try:
        raw = bytearray(m.encode_py(msg))
    except MessageFormatError:
        return
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        i = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[i] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del raw[i:]
        else:
            raw[i:i] = bytes([data.draw(st.integers(0, 255))])
    same_decode(c, bytes(raw))
    same_decode(c, bytearray(raw))
    same_decode(c, memoryview(bytes(raw)))


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=80))
def test_random_bytes_decode_the_same(c, raw):
    same_decode(c, raw)


@settings(max_examples=400, deadline=None)
@given(
    st.integers(-2, 5),  # mtype
    st.integers(-1, 300),  # code
    st.integers(-1, 70000),  # mid
    st.binary(max_size=10),  # token
    st.lists(
        st.tuples(
            st.integers(-3, 70000),
            st.one_of(st.binary(max_size=5), st.just(bytearray(b"x")), st.just(b"y" * 65805)),
        ),
        max_size=4,
    ),
    st.one_of(st.binary(max_size=5), st.just(bytearray(b"p"))),
)
def test_malformed_messages_encode_the_same(c, mtype, code, mid, token, options, payload):
    """Out-of-range fields, long tokens, huge or negative option numbers,
    over-long values and non-bytes values: the same error (or bytes) on both."""
    msg = Message.__new__(Message)
    msg.mtype, msg.code, msg.mid, msg.token = mtype, code, mid, token
    msg.options, msg.payload, msg.bad_options = options, payload, ()
    same_encode(c, msg)


def test_the_known_error_messages_match(c):
    for raw in (
        b"",
        b"\x40\x01",
        b"\x80\x01\x00\x01",
        b"\x49\x01\x00\x01",
        b"\x44\x01\x00\x01ab",
        b"\x40\x00\x00\x01\xff",
        b"\x40\x01\x00\x01\xff",
        b"\x40\x01\x00\x01\xd0",
        b"\x40\x01\x00\x01\xe0\x01",
        b"\x40\x01\x00\x01\xf0",
        b"\x40\x01\x00\x01\x0d",
        b"\x40\x01\x00\x01\x0e\x00",
        b"\x40\x01\x00\x01\x0f",
        b"\x40\x01\x00\x01\x03ab",
        b"\x40\x01\x00\x01\xe0\xfe\xf4",
    ):
        py = outcome(m.decode_py, raw)
        assert py[0] == "error" and outcome(c.decode, raw) == py


def test_an_option_list_subclass_encodes_in_c(c):
    """Responses carry an OptionList (a list subclass): the C path takes it
    (the Python encoder, if called, would show in a profile; here: same bytes)."""
    from greencoap.options import OptionList

    msg = Message(Type.ACK, Code.CONTENT, 1, b"t", OptionList([(12, b"\x00")]), b"hi")
    calls = []
    c.configure(
        m.TYPES,
        m.CODES,
        dict(m.OPTION_BOUNDS),
        MessageFormatError,
        Message,
        lambda x: calls.append(x) or m.encode_py(x),
    )
    try:
        assert c.encode(msg) == m.encode_py(msg) and calls == []
        msg.options = [(12, b"\x00"), (11, b"a")]  # out of order: handed to Python
        assert c.encode(msg) == m.encode_py(msg) and len(calls) == 1
    finally:
        m._load_speedups()


def test_a_subclass_is_built(c):
    class Sub(Message):
        __slots__ = ()

    raw = Message(Type.CON, Code.GET, 7, b"t", [(11, b"a")], b"x").encode()
    assert type(c.decode(raw, Sub)) is Sub and c.decode(raw, Sub) == m.decode_py(raw, Sub)
    with pytest.raises(TypeError):
        c.decode(raw, dict)


def test_the_c_codec_is_the_one_in_use_unless_turned_off(c):
    """Installed, greencoap uses the C codec; GREENCOAP_NO_EXTENSIONS=1 turns it off."""
    code = "import greencoap.message as m; print(m.CODEC, m.decode is m.decode_py)"
    on = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    env = dict(os.environ, GREENCOAP_NO_EXTENSIONS="1")
    off = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert on.stdout.split() == ["c", "False"]
    assert off.stdout.split() == ["python", "True"]


def test_the_dedup_entry_twins_agree(c):
    """greencoap.protocol.dedup uses the C DedupEntry when built: the same
    fields and defaults as the Python class, and no cycle-collector tracking."""
    import gc

    from greencoap.protocol import dedup

    assert dedup.DedupEntry is c.DedupEntry
    for cls in (c.DedupEntry, dedup.DedupEntryPy):
        e = cls(12.5, b"tok")
        assert (e.expires, e.token, e.response, e.running, e.dups, e.separated) == (
            12.5,
            b"tok",
            None,
            False,
            0,
            False,
        )
        e.response, e.running, e.separated = b"\x60\x00\x00\x01", True, True
        e.dups += 1
        assert (e.response, e.running, e.dups, e.separated) == (b"\x60\x00\x00\x01", True, 1, True)
        assert cls(1.0).token == b""
    assert not gc.is_tracked(c.DedupEntry(1.0, b"t"))
    with pytest.raises(TypeError):
        c.DedupEntry(1.0, b"t").response = 5


# -- the io_uring hub's receive batch ------------------------------------------
ADDRS = [bytes([i]) * 28 for i in range(4)]  # address records (sockaddr_in6-sized)


def _records(recs):
    """An arena and the meta ints gc_poll would write for ``recs``: (slot, payload, address)."""
    import struct

    arena = bytearray(b"\xee" * 7)  # something before the first record
    meta = []
    for slot, payload, addr in recs:
        poff = len(arena)
        arena += payload
        noff = len(arena)
        arena += addr
        meta += [slot, poff, len(payload), noff, len(addr)]
    arena += bytes(64)  # the rest of the arena: unused
    return bytes(arena), struct.pack(f"={len(meta)}i", *meta)


record_st = st.tuples(
    st.sampled_from([0, 1, 5, 0x40000001]),
    st.binary(max_size=40),
    st.sampled_from(ADDRS + [b"\x09" * 16]),
)


@settings(max_examples=300, deadline=None)
@given(recs=st.lists(record_st, max_size=40), known=st.sets(st.integers(0, 4)))
def test_split_batch_is_the_same_in_c_and_python(c, recs, known):
    from greencoap import uring_hub

    cache = {a: ("peer", i) for i, a in enumerate(ADDRS + [b"\x09" * 16]) if i in known}
    arena, meta = _records(recs)
    got = outcome(c.split_batch, arena, meta, len(recs), cache)
    want = outcome(uring_hub.split_batch_py, arena, meta, len(recs), cache)
    assert got == want
    batches, misses = got[1]
    assert sum(map(len, batches.values())) == len(recs)
    assert misses == sum(1 for r in recs if r[2] not in cache)
    for slot, batch in batches.items():  # arrival order kept per socket
        assert batch == [(p, cache.get(a, a)) for s, p, a in recs if s == slot]


@pytest.mark.parametrize(
    "meta",
    [
        (0, 1000, 4, 0, 4),  # payload past the arena
        (0, 0, 4, -1, 4),  # a negative offset
        (0, 0, -4, 0, 4),  # a negative length
    ],
)
def test_split_batch_refuses_records_outside_the_arena(c, meta):
    import struct

    from greencoap import uring_hub

    packed = struct.pack("=5i", *meta)
    for fn in (c.split_batch, uring_hub.split_batch_py):
        assert outcome(fn, bytes(100), packed, 1, {})[:2] == ("error", ValueError)
        assert outcome(fn, bytes(100), packed, 2, {})[:2] == ("error", ValueError)  # meta short


# -- the deduplication core ------------------------------------------------------
def _pure_cache_class():
    """DedupCache with the Python core as its base (the C one is the base in
    this process): the same methods over the same kind of stores."""
    from greencoap.protocol import dedup

    body = {k: v for k, v in vars(dedup.DedupCache).items() if k not in ("__dict__", "__weakref__")}
    return type("DedupCachePy", (dedup._DedupCorePy,), body)


dedup_op = st.one_of(
    st.tuples(
        st.just("admit"),
        st.integers(0, 5),  # peer
        st.integers(0, 40),  # mid
        st.booleans(),  # con
        st.sampled_from([b"a", b"b"]),  # token (b: a reused MID)
        st.floats(0, 60),  # time step
    ),
    st.tuples(st.just("get"), st.integers(0, 5), st.integers(0, 40)),
    st.tuples(st.just("drop"), st.integers(0, 5), st.integers(0, 40)),
    st.tuples(st.just("expire"), st.floats(0, 300)),
)


@settings(max_examples=200, deadline=None)
@given(
    ops=st.lists(dedup_op, max_size=120),
    capacity=st.integers(1, 40),
    share=st.sampled_from([0.05, 0.25, 1.0]),
)
def test_dedup_core_is_the_same_in_c_and_python(c, ops, capacity, share):
    from greencoap.protocol import dedup

    assert dedup.DedupCache.__mro__[1] is c.DedupCore
    caches = [
        cls(40.0, 25.0, capacity=capacity, peer_share=share)
        for cls in (dedup.DedupCache, _pure_cache_class())
    ]
    now = 0.0

    def seen(entry):
        return None if entry is None else (entry.expires, entry.token)

    for op in ops:
        kind = op[0]
        if kind == "admit":
            _, p, mid, con, token, step = op
            now += step
            got = [seen(d.admit(("10.0.0.9", p), mid, con, now, token)) for d in caches]
        elif kind == "get":
            got = [seen(d.get(("10.0.0.9", op[1]), op[2])) for d in caches]
        elif kind == "drop":
            got = [d.drop(("10.0.0.9", op[1]), op[2]) for d in caches]
        else:
            now += op[1]
            got = [d.expire(now) for d in caches]
        assert got[0] == got[1], op
        assert caches[0].table_sizes() == caches[1].table_sizes()
        assert caches[0].stats == caches[1].stats
        assert caches[0].next_due == caches[1].next_due
    live = [sorted((k, seen(e)) for k, e in d.live(now)) for d in caches]
    assert live[0] == live[1]


@settings(max_examples=300, deadline=None)
@given(msg=messages)
def test_wire_size_is_the_same_in_c_and_python(c, msg):
    from greencoap.protocol import echo

    assert c.wire_size(msg) == echo.wire_size_py(msg)
    encoded = outcome(m.encode_py, msg)
    if encoded[0] == "ok":  # within a byte per long option of the real encoding
        assert abs(c.wire_size(msg) - len(encoded[1])) <= len(msg.options)
    msg.options = [(11, "text")]  # not bytes: handed to the Python twin
    assert outcome(c.wire_size, msg) == outcome(echo.wire_size_py, msg)


@settings(max_examples=300, deadline=None)
@given(
    con=st.booleans(),
    held=st.sampled_from(["none", "fresh", "dups", "separated", "answered"]),
    dups=st.integers(0, 2),
    token=st.binary(max_size=8),
    payload=st.binary(max_size=40),
    known_peer=st.booleans(),
)
def test_respond_is_the_same_in_c_and_python(c, con, held, dups, token, payload, known_peer):
    """MessageLayer.respond (its common case in C) and respond_py give the
    same bytes, outbox, dedup entry, response fields and next MIDs."""
    from random import Random

    from greencoap.protocol import messaging

    assert messaging._respond_c is c.respond
    peer = ("10.0.0.9", 5683)
    layers, responses, results = [], [], []
    for _ in range(2):
        layer = messaging.MessageLayer(rng=Random(7))
        if known_peer:
            layer.next_mid(peer)  # a counter for the peer already
        request = Message(Type.CON if con else Type.NON, Code.GET, 0x1234, token, [], b"")
        if held != "none":
            entry = layer.dedup.admit(peer, request.mid, con, 1.0, token)
            assert entry is None
            entry = layer.dedup.get(peer, request.mid)
            entry.dups = dups if held == "dups" else 0
            if held == "separated":
                layer.acknowledge(request, peer)  # an empty ACK went, the reply goes as a CON
            elif held == "answered":
                entry.response = b"old"
        response = Message(Type.ACK, Code.CONTENT, 0, b"", [(12, b"")], payload)
        layers.append((layer, request))
        responses.append(response)
    results.append(layers[0][0].respond(layers[0][1], peer, responses[0], 2.0))
    results.append(layers[1][0].respond_py(layers[1][1], peer, responses[1], 2.0))
    assert results[0] == results[1]
    a, b = (layer for layer, _ in layers)
    assert a.outbox == b.outbox and a.stats == b.stats
    for f in ("mtype", "code", "mid", "token", "options", "payload"):
        assert getattr(responses[0], f) == getattr(responses[1], f), f
    ea, eb = (layer.dedup.get(peer, 0x1234) for layer in (a, b))
    assert (ea is None) == (eb is None)
    if ea is not None:
        assert (ea.response, ea.dups, ea.separated) == (eb.response, eb.dups, eb.separated)
    assert a.next_mid(peer) == b.next_mid(peer)
    assert a.next_deadline() == b.next_deadline()


def _datagram(mtype: Type, code: int, mid: int, token: bytes, extra: bytes) -> bytes:
    """A GET's bytes with another code put in (an empty message with a token
    and options is malformed: the codec would not encode it), then ``extra``."""
    data = bytearray(Message(mtype, Code.GET, mid, token, [(11, b"p")], b"").encode())
    data[1] = int(code)
    return bytes(data) + extra


request_datagram = st.builds(
    _datagram,
    st.sampled_from([Type.CON, Type.NON, Type.ACK]),
    st.sampled_from([Code.GET, Code.POST, Code.CONTENT, Code.EMPTY]),
    st.integers(0, 3),
    st.sampled_from([b"", b"a", b"b"]),
    st.sampled_from([b"", b"\xff", b"\xffx", b"\x01"]),  # an empty payload marker: malformed
)


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            request_datagram,
            st.integers(0, 1),  # peer
            st.sampled_from(["none", "start", "answer"]),  # what the server does after
            st.floats(0, 100),  # time step
        ),
        max_size=25,
    )
)
def test_receive_is_the_same_in_c_and_python(c, steps):
    """MessageLayer.receive (a request's common case in C) and receive_py give
    the same events, outbox, counters and dedup state, for requests, their
    copies, reused MIDs, other messages and malformed datagrams."""
    from random import Random

    from greencoap.protocol import messaging

    assert messaging._receive_c is c.receive_request
    layers = [messaging.MessageLayer(rng=Random(3)) for _ in range(2)]
    receivers = [layers[0].receive, layers[1].receive_py]
    now = 0.0
    for data, p, then, step in steps:
        now += step
        peer = ("10.0.0.9", 5683 + p)
        got = [receive(data, peer, now) for receive in receivers]
        shapes = [
            None
            if ev is None
            else (type(ev).__name__, ev[1], [getattr(ev[0], f) for f in FIELDS])
            if isinstance(ev, messaging.RequestReceived)
            else type(ev).__name__
            for ev in got
        ]
        assert shapes[0] == shapes[1], data
        for layer, ev in zip(layers, got, strict=True):
            if isinstance(ev, messaging.RequestReceived) and then != "none":
                layer.started(ev.message, peer)
                if then == "answer":
                    reply = Message(Type.ACK, Code.CONTENT, 0, b"", [], b"ok")
                    layer.respond(ev.message, peer, reply, now)
        assert layers[0].outbox == layers[1].outbox
        assert layers[0].stats == layers[1].stats
        assert layers[0].new_due == layers[1].new_due
        assert layers[0].dedup.table_sizes() == layers[1].dedup.table_sizes()


option_lists = st.lists(
    st.tuples(st.sampled_from([3, 7, 11, 11, 12, 15, 15, 4, 17, 60, 65001]), st.binary(max_size=3)),
    max_size=6,
).map(lambda opts: sorted(opts, key=lambda o: o[0]))


@settings(max_examples=400, deadline=None)
@given(options=option_lists, bad=st.sampled_from([(), (7,), (12,)]))
def test_plain_path_is_the_same_in_c_and_python(c, options, bad):
    from greencoap.protocol import pipeline

    assert pipeline.plain_path is c.plain_path
    msg = Message(Type.CON, Code.GET, 1, b"t", options, b"")
    msg.bad_options = bad
    assert c.plain_path(msg) == pipeline.plain_path_py(msg)
    msg.options = [[11, b"list, not tuple"]]  # unusual: handed to the Python twin
    assert outcome(c.plain_path, msg) == outcome(pipeline.plain_path_py, msg)


@settings(max_examples=400, deadline=None)
@given(
    request=messages,
    payload=st.binary(max_size=300),
    options=option_lists,
    factor=st.sampled_from([1.0, 1.5, 3.0, 10.0]),
)
def test_amplifies_is_the_same_in_c_and_python(c, request, payload, options, factor):
    from greencoap.protocol import echo

    verifier = echo.EchoVerifier(factor)
    assert echo._amplifies_c is c.amplifies
    response = Message(Type.ACK, Code.CONTENT, 0, b"", options, payload)
    got = outcome(verifier.amplifies, request, response)
    assert got == outcome(verifier.amplifies_py, request, response)
