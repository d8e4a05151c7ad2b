"""Unit tests of the DTLS engine's building blocks (greencoap.protocol.dtls):
PRF and key derivation, AES-CCM-8 record protection, the record parser, the
replay window, handshake message codecs, reassembly, flight layout, cookies.
"""

from __future__ import annotations

import random

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from greencoap.protocol.dtls import messages as m
from greencoap.protocol.dtls.cookie import CookieJar
from greencoap.protocol.dtls.prf import (
    extended_master_secret,
    key_block,
    master_secret,
    prf,
    psk_premaster,
    verify_data,
)
from greencoap.protocol.dtls.reassembly import (
    ACCEPTED,
    CONFLICT,
    OLD,
    TOO_FAR,
    HandshakeBuffer,
    layout_flight,
)
from greencoap.protocol.dtls.record import (
    ALERT,
    APPLICATION_DATA,
    CHANGE_CIPHER_SPEC,
    DTLS_1_2,
    HANDSHAKE,
    RecordCipher,
    ReplayWindow,
    encode_plain,
    parse_records,
)

# The widely published TLS 1.2 PRF (P_SHA256) test vector.
PRF_SECRET = bytes.fromhex("9bbe436ba940f017b17652849a71db35")
PRF_SEED = bytes.fromhex("a0ba9f936cda311827a6f796ffd5198c")
PRF_OUTPUT = bytes.fromhex(
    "e3f229ba727be17b8d122620557cd453c2aab21d07c3d495329b52d4e61edb5a"
    "6b301791e90d35c9c9a46b4e14baf9af0fa022f7077def17abfd3797c0564bab"
    "4fbc91666e9def9b97fce34f796789baa48082d122ee42c5a72e5a5110fff701"
    "87347b66"
)


# ---------------------------------------------------------------- PRF, keys


def test_prf_known_answer():
    assert prf(PRF_SECRET, b"test label", PRF_SEED, 100) == PRF_OUTPUT


def test_prf_prefix_property():
    assert prf(PRF_SECRET, b"test label", PRF_SEED, 7) == PRF_OUTPUT[:7]
    assert prf(PRF_SECRET, b"test label", PRF_SEED, 0) == b""


def test_psk_premaster_layout():
    assert psk_premaster(b"secret") == b"\x00\x06" + bytes(6) + b"\x00\x06secret"


def test_master_secrets_and_key_block():
    pms = psk_premaster(b"secret")
    cr, sr = bytes(range(32)), bytes(range(32, 64))
    ms = master_secret(pms, cr, sr)
    assert ms == prf(pms, b"master secret", cr + sr, 48)
    ems = extended_master_secret(pms, b"h" * 32)
    assert ems == prf(pms, b"extended master secret", b"h" * 32, 48)
    assert len(ms) == len(ems) == 48 and ms != ems
    kb = key_block(ms, cr, sr)
    block = prf(ms, b"key expansion", sr + cr, 40)
    assert kb == (block[:16], block[16:32], block[32:36], block[36:40])
    assert len(verify_data(ms, b"client finished", b"x" * 32)) == 12


# ---------------------------------------------------------------- AES-CCM-8 records


def test_aesccm8_round_trip_and_tamper():
    key = bytes(range(16))
    aead = AESCCM(key, tag_length=8)
    nonce, aad = bytes(12), b"aad"
    sealed = aead.encrypt(nonce, b"hello", aad)
    assert len(sealed) == 5 + 8
    assert aead.decrypt(nonce, sealed, aad) == b"hello"
    sender = RecordCipher(key, b"\x01\x02\x03\x04")
    record = sender.seal(APPLICATION_DATA, 1 << 48 | 5, b"hello")
    (ctype, version, es, frag), ok = parse_records(record)[0][0], parse_records(record)[1]
    assert ok and (ctype, version, es) == (APPLICATION_DATA, DTLS_1_2, 1 << 48 | 5)
    assert frag[:8] == (1 << 48 | 5).to_bytes(8, "big")  # explicit nonce = epoch ‖ seq
    assert len(frag) == 8 + 5 + 8
    receiver = RecordCipher(key, b"\x01\x02\x03\x04")
    assert receiver.open(ctype, version, es, frag) == b"hello"
    for i in range(len(frag)):  # any flipped bit fails authentication
        bad = bytearray(frag)
        bad[i] ^= 0x01
        assert receiver.open(ctype, version, es, bytes(bad)) is None
    assert receiver.open(HANDSHAKE, version, es, frag) is None  # type is authenticated
    assert receiver.open(ctype, version, es + 1, frag) is None  # so is the sequence number
    assert receiver.open(ctype, version, es, frag[:15]) is None  # too short for nonce + tag
    assert RecordCipher(bytes(16), b"\x01\x02\x03\x04").open(ctype, version, es, frag) is None


def test_record_nonce_and_aad_layout():
    key, iv = bytes(range(16)), b"\xaa\xbb\xcc\xdd"
    es = 1 << 48 | 0x0102030405
    record = RecordCipher(key, iv).seal(APPLICATION_DATA, es, b"data")
    explicit = es.to_bytes(8, "big")
    aad = explicit + bytes((APPLICATION_DATA,)) + b"\xfe\xfd" + (4).to_bytes(2, "big")
    expected = AESCCM(key, tag_length=8).encrypt(iv + explicit, b"data", aad)
    assert (
        record == b"\x17\xfe\xfd" + explicit + (8 + 4 + 8).to_bytes(2, "big") + explicit + expected
    )


# ---------------------------------------------------------------- record parsing


def test_parse_several_records_and_stop_at_garbage():
    a = encode_plain(HANDSHAKE, DTLS_1_2, 0, b"abc")
    b = encode_plain(CHANGE_CIPHER_SPEC, DTLS_1_2, 1, b"\x01")
    records, ok = parse_records(a + b)
    assert ok and [r[3] for r in records] == [b"abc", b"\x01"]
    records, ok = parse_records(a + b[:-1])  # length overrun
    assert not ok and len(records) == 1
    records, ok = parse_records(a + b"\x16\xfe")  # truncated header
    assert not ok and len(records) == 1
    records, ok = parse_records(a + b"\x63" + b[1:])  # unknown content type
    assert not ok and len(records) == 1
    records, ok = parse_records(b"\x16\x03\x03" + b[3:])  # not DTLS
    assert not ok and records == []
    assert parse_records(b"") == ([], True)
    assert parse_records(encode_plain(ALERT, 0xFEFF, 7, b""))[0][0][:3] == (ALERT, 0xFEFF, 7)


# ---------------------------------------------------------------- replay window


def test_replay_window_duplicates_in_window():
    w = ReplayWindow()
    for seq in (0, 1, 2, 5):
        assert w.check(seq)
        w.update(seq)
    assert not w.check(5) and not w.check(2) and not w.check(0)
    assert w.check(3) and w.check(4)  # gaps inside the window are still acceptable
    w.update(3)
    assert not w.check(3)


def test_replay_window_too_old_and_edges():
    w = ReplayWindow()
    w.update(100)
    assert w.check(37)  # 100 - 37 = 63: the oldest slot
    assert not w.check(36)  # 64 behind: outside the window
    w.update(37)
    assert not w.check(37)


def test_replay_window_advance_and_large_jump():
    w = ReplayWindow()
    w.update(10)
    w.update(11)
    w.update(1000)  # jump beyond the window: the old bitmap is gone
    assert not w.check(1000)
    assert not w.check(11)  # now too old
    assert w.check(999) and w.check(937)
    assert not w.check(936)
    w.update(1064)
    assert not w.check(1000)  # 64 behind the new top
    assert w.check(1001)
    w.update((1 << 48) - 1)
    assert not w.check((1 << 48) - 1)


def test_replay_window_matches_a_model():
    rng = random.Random(7)
    w = ReplayWindow()
    seen: set[int] = set()
    top = -1
    for _ in range(3000):
        seq = max(0, top + rng.randint(-80, 20))
        expected = seq not in seen and seq > top - 64
        assert w.check(seq) == expected, seq
        if expected:
            w.update(seq)
            seen.add(seq)
            top = max(top, seq)


# ---------------------------------------------------------------- messages


def test_client_hello_round_trip_and_strictness():
    hello = m.ClientHello(
        version=0xFEFD,
        random=bytes(range(32)),
        session_id=b"s",
        cookie=b"c" * 16,
        cipher_suites=b"\xc0\xa8\x00\xff",
        compression=b"\x00",
        extensions={23: b"", 0xFF01: b"\x00"},
    )
    body = hello.encode()
    again = m.ClientHello.decode(body)
    assert again == hello and again.suites() == [0xC0A8, 0x00FF]
    no_ext = m.ClientHello(0xFEFD, bytes(32), cipher_suites=b"\xc0\xa8")
    assert m.ClientHello.decode(no_ext.encode()).extensions == {}
    for cut in range(len(body)):
        if cut in (len(body) - len(m.encode_extensions(hello.extensions)),):
            continue  # cutting exactly before the extensions is a valid hello
        with pytest.raises(m.DecodeError):
            m.ClientHello.decode(body[:cut])
    with pytest.raises(m.DecodeError):
        m.ClientHello.decode(body + b"x")
    dup = body[: -len(m.encode_extensions(hello.extensions))] + m.vec(
        b"\x00\x17\x00\x00\x00\x17\x00\x00", 2
    )
    with pytest.raises(m.DecodeError, match="duplicate"):
        m.ClientHello.decode(dup)


def test_server_hello_hvr_identity_round_trip():
    sh = m.ServerHello(0xFEFD, bytes(32), b"", 0xC0A8, 0, {0xFF01: b"\x00"})
    assert m.ServerHello.decode(sh.encode()) == sh
    hvr = m.HelloVerifyRequest(0xFEFF, b"cookie")
    assert m.HelloVerifyRequest.decode(hvr.encode()) == hvr
    assert m.decode_psk_identity(m.encode_psk_identity(b"id")) == b"id"
    with pytest.raises(m.DecodeError):
        m.decode_psk_identity(b"\x00\x05ab")


def test_handshake_fragments():
    msg = m.encode_message(m.FINISHED, 3, b"x" * 12)
    assert msg[:12] == bytes.fromhex("14 00000c 0003 000000 00000c")
    frag = m.encode_header(m.FINISHED, 12, 3, 4, 5) + b"y" * 5
    assert m.parse_fragments(msg + frag) == [
        (m.FINISHED, 12, 3, 0, b"x" * 12),
        (m.FINISHED, 12, 3, 4, b"y" * 5),
    ]
    with pytest.raises(m.DecodeError):
        m.parse_fragments(msg[:-1])
    with pytest.raises(m.DecodeError):
        m.parse_fragments(m.encode_header(m.FINISHED, 12, 3, 10, 5) + b"y" * 5)  # past end
    with pytest.raises(m.DecodeError):
        m.parse_fragments(msg[:5])


# ---------------------------------------------------------------- reassembly, flights


def test_reassembly_any_order_with_overlaps():
    body = bytes(range(200))
    buf = HandshakeBuffer(0)
    pieces = [(150, 50), (0, 60), (40, 80), (100, 60), (0, 10)]
    for i, (off, n) in enumerate(pieces):
        assert buf.add(m.CLIENT_HELLO, 200, 0, off, body[off : off + n], 0) == ACCEPTED
        if i < 3:
            assert buf.pop() is None
    assert buf.pop() == (m.CLIENT_HELLO, 0, body, 0)
    assert buf.next_seq == 1
    assert buf.add(m.CLIENT_HELLO, 200, 0, 0, body, 0) == OLD


def test_reassembly_order_window_and_conflicts():
    buf = HandshakeBuffer(0)
    assert buf.add(m.SERVER_HELLO_DONE, 0, 1, 0, b"", 0) == ACCEPTED  # future: buffered
    assert buf.pop() is None
    assert buf.add(m.SERVER_HELLO, 4, 0, 0, b"abcd", 0) == ACCEPTED
    assert buf.pop() == (m.SERVER_HELLO, 0, b"abcd", 0)
    assert buf.pop() == (m.SERVER_HELLO_DONE, 1, b"", 0)
    assert buf.add(m.FINISHED, 12, 2 + HandshakeBuffer.WINDOW, 0, b"x" * 12, 1) == TOO_FAR
    assert buf.add(m.FINISHED, 12, 2, 0, b"x" * 6, 1) == ACCEPTED
    assert buf.add(m.FINISHED, 13, 2, 6, b"x" * 6, 1) == CONFLICT
    assert buf.add(m.FINISHED, 12, 2, 6, b"x" * 6, 0) == CONFLICT  # epoch differs
    first = HandshakeBuffer(None)
    assert first.add(m.CLIENT_HELLO, 1, 5, 0, b"z", 0) == ACCEPTED
    assert first.pop() == (m.CLIENT_HELLO, 5, b"z", 0)


@pytest.mark.parametrize("mtu", [60, 100, 200, 1200])
def test_layout_flight_respects_mtu_and_reassembles(mtu):
    bodies = [bytes([i]) * n for i, n in enumerate((300, 0, 45))]
    items = [
        (HANDSHAKE, 0, (m.SERVER_HELLO, 1, bodies[0])),
        (HANDSHAKE, 0, (m.SERVER_HELLO_DONE, 2, bodies[1])),
        (CHANGE_CIPHER_SPEC, 0, b"\x01"),
        (HANDSHAKE, 1, (m.FINISHED, 3, bodies[2])),
    ]
    datagrams = layout_flight(items, mtu)
    buf = HandshakeBuffer(1)
    for records in datagrams:
        size = sum(13 + (16 if epoch else 0) + len(p) for _, epoch, p in records)
        assert size <= mtu
        for ctype, epoch, payload in records:
            if ctype == HANDSHAKE:
                for frag in m.parse_fragments(payload):
                    assert buf.add(*frag, epoch) == ACCEPTED
    got = []
    while (msg := buf.pop()) is not None:
        got.append(msg)
    assert [g[2] for g in got] == bodies
    assert [g[3] for g in got] == [0, 0, 1]
    if mtu == 1200:
        assert len(datagrams) == 1


# ---------------------------------------------------------------- cookies


def _hello(random_byte: int = 1, cookie: bytes = b"") -> m.ClientHello:
    return m.ClientHello(
        0xFEFD, bytes([random_byte]) * 32, cookie=cookie, cipher_suites=b"\xc0\xa8"
    )


def test_cookie_binds_peer_and_hello_and_rotates():
    jar = CookieJar(random.Random(1).randbytes, lifetime=60.0)
    peer = ("10.0.0.1", 5684)
    cookie = jar.make(peer, _hello())
    assert jar.check(peer, _hello(cookie=cookie))
    assert not jar.check(("10.0.0.2", 5684), _hello(cookie=cookie))
    assert not jar.check(peer, _hello(2, cookie=cookie))
    assert not jar.check(peer, _hello(cookie=b""))
    jar.rotate()
    assert jar.check(peer, _hello(cookie=cookie))  # previous secret still accepted
    jar.rotate()
    assert not jar.check(peer, _hello(cookie=cookie))  # two rotations: gone


def test_cookie_rotation_by_time():
    jar = CookieJar(random.Random(2).randbytes, lifetime=10.0)
    peer = "p"
    jar.tick(0.0)
    cookie = jar.make(peer, _hello())
    jar.tick(9.9)
    assert jar.check(peer, _hello(cookie=cookie))
    jar.tick(10.0)
    assert jar.check(peer, _hello(cookie=cookie))
    jar.tick(20.0)
    assert not jar.check(peer, _hello(cookie=cookie))
