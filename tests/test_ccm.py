"""The C AES-128-CCM-8 (greencoap/_ccm.c) against cryptography's AESCCM, differentially.

Every key, nonce, plaintext and associated data must give the same bytes on
both; every record, intact or altered (a flipped bit anywhere, cut short, the
wrong nonce or associated data), must open to the same plaintext on both or
fail on both with ``InvalidTag``.  The same for the C ``RecordCipher`` (whole
DTLS records) against the record layer's pure-Python one over ``AESCCM``: the
same sealed records, the same plaintext or None from every intact or altered
fragment.  CI sets GREENCOAP_REQUIRE_SPEEDUPS=1 so that a missing build fails
instead of skipping.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESCCM
from hypothesis import given, settings
from hypothesis import strategies as st

from greencoap.protocol.dtls.record import (
    APPLICATION_DATA,
    DTLS_1_0,
    DTLS_1_2,
    HANDSHAKE,
    HEADER_LENGTH,
    RecordCipher,
    ReplayWindow,
    record_cipher,
)

from .conftest import require_or_skip

keys = st.binary(min_size=16, max_size=16)
nonces = st.binary(min_size=12, max_size=12)
texts = st.binary(max_size=1600)
aads = st.binary(max_size=40)


@pytest.fixture(scope="module")
def Ccm8():
    """The C class (skipped, or failed under GREENCOAP_REQUIRE_SPEEDUPS=1, when not built)."""
    try:
        from greencoap._ccm import Ccm8
    except ImportError:
        Ccm8 = None
    require_or_skip(
        Ccm8 is not None, "the C AES-CCM (greencoap._ccm)", "GREENCOAP_REQUIRE_SPEEDUPS"
    )
    return Ccm8


@pytest.fixture(scope="module")
def CRecords(Ccm8):
    """The C twin of the record layer's RecordCipher (built with Ccm8)."""
    from greencoap._ccm import RecordCipher as CRecords

    return CRecords


def opened(aead, nonce, data, aad):
    try:
        return ("ok", aead.decrypt(nonce, data, aad))
    except InvalidTag:
        return ("invalid",)


@settings(max_examples=300, deadline=None)
@given(keys, nonces, texts, aads)
def test_seals_as_aesccm_and_opens_what_it_sealed(Ccm8, key, nonce, text, aad):
    c, ref = Ccm8(key), AESCCM(key, tag_length=8)
    sealed = c.encrypt(nonce, text, aad)
    assert sealed == ref.encrypt(nonce, text, aad)
    assert c.decrypt(nonce, sealed, aad) == text
    # the context is reused: a second message under the same object is still right
    assert c.encrypt(nonce[::-1], text, aad) == ref.encrypt(nonce[::-1], text, aad)


@settings(max_examples=300, deadline=None)
@given(keys, nonces, texts, aads, st.data())
def test_altered_records_fail_as_aesccm_does(Ccm8, key, nonce, text, aad, data):
    c, ref = Ccm8(key), AESCCM(key, tag_length=8)
    sealed = ref.encrypt(nonce, text, aad)
    how = data.draw(st.sampled_from(["bit", "cut", "nonce", "aad", "junk"]))
    n, a, d = nonce, aad, sealed
    if how == "bit":
        i = data.draw(st.integers(0, len(sealed) - 1))
        d = sealed[:i] + bytes([sealed[i] ^ (1 << data.draw(st.integers(0, 7)))]) + sealed[i + 1 :]
    elif how == "cut":
        d = sealed[: data.draw(st.integers(0, len(sealed) - 1))]
    elif how == "nonce":
        n = bytes([nonce[0] ^ 1]) + nonce[1:]
    elif how == "aad":
        a = aad + b"\x00"
    else:
        d = data.draw(st.binary(max_size=40))
    got = opened(c, n, d, a)
    assert got == opened(ref, n, d, a)
    assert got[0] == "invalid" or how == "junk"
    assert c.decrypt(nonce, sealed, aad) == text  # a failure leaves the context usable


def test_bad_arguments_are_clear_errors(Ccm8):
    with pytest.raises(ValueError, match="16 bytes"):
        Ccm8(b"k" * 15)
    c = Ccm8(b"k" * 16)
    with pytest.raises(ValueError, match="nonce"):
        c.encrypt(b"n" * 11, b"x", b"")
    with pytest.raises(TypeError):
        c.decrypt(b"n" * 12, b"x" * 9)
    with pytest.raises(TypeError):
        c.encrypt(b"n" * 12, "text", b"")


def reference_records(key: bytes, iv: bytes) -> RecordCipher:
    """The pure-Python RecordCipher on cryptography's AESCCM (not on Ccm8)."""
    ref = RecordCipher(key, iv)
    ref.aead = AESCCM(key, tag_length=8)
    return ref


ivs = st.binary(min_size=4, max_size=4)
ctypes = st.sampled_from([APPLICATION_DATA, HANDSHAKE, 21, 20, 0, 255])
versions = st.sampled_from([DTLS_1_2, DTLS_1_0, 0, 0xFFFF])
ess = st.integers(0, (1 << 64) - 1)


@settings(max_examples=300, deadline=None)
@given(keys, ivs, ctypes, versions, ess, texts)
def test_c_records_seal_and_open_as_the_python_ones(CRecords, key, iv, ctype, version, es, text):
    c, ref = CRecords(key, iv), reference_records(key, iv)
    assert c.iv == iv
    record = c.seal(ctype, es, text, version)
    assert record == ref.seal(ctype, es, text, version)
    if version == DTLS_1_2:  # the default
        assert c.seal(ctype, es, text) == record
    fragment = record[HEADER_LENGTH:]
    assert c.open(ctype, version, es, fragment) == text == ref.open(ctype, version, es, fragment)


@settings(max_examples=300, deadline=None)
@given(keys, ivs, ctypes, versions, ess, texts, st.data())
def test_c_records_refuse_altered_records_as_the_python_ones(
    CRecords, key, iv, ctype, version, es, text, data
):
    c, ref = CRecords(key, iv), reference_records(key, iv)
    fragment = ref.seal(ctype, es, text, version)[HEADER_LENGTH:]
    how = data.draw(st.sampled_from(["bit", "cut", "es", "type", "version", "iv", "junk"]))
    t, v, e, f, other = ctype, version, es, fragment, c
    if how == "bit":
        i = data.draw(st.integers(0, len(fragment) - 1))
        f = fragment[:i] + bytes([fragment[i] ^ (1 << data.draw(st.integers(0, 7)))])
        f += fragment[i + 1 :]
    elif how == "cut":
        f = fragment[: data.draw(st.integers(0, len(fragment) - 1))]
    elif how == "es":
        e = es ^ (1 << data.draw(st.integers(0, 63)))
    elif how == "type":
        t = ctype ^ 1
    elif how == "version":
        v = version ^ 0x0100
    elif how == "iv":
        other = CRecords(key, bytes([iv[0] ^ 1]) + iv[1:])
    else:
        f = data.draw(st.binary(max_size=40))
    got = other.open(t, v, e, f)
    if how != "iv":
        assert got == ref.open(t, v, e, f)
    assert got is None or how == "junk"
    assert c.open(ctype, version, es, fragment) == text  # a failure leaves it usable


def window_of(top: int, bits: int) -> ReplayWindow:
    w = ReplayWindow()
    w.top, w.bits = top, bits if top >= 0 else 0
    return w


@settings(max_examples=400, deadline=None)
@given(
    keys,
    ivs,
    st.sampled_from([APPLICATION_DATA, APPLICATION_DATA, HANDSHAKE]),
    st.sampled_from([DTLS_1_2, DTLS_1_0, 0x0303]),
    st.integers(0, 2),
    st.integers(0, 300),
    st.integers(-1, 300),
    st.integers(0, (1 << 64) - 1),
    texts,
    st.sampled_from(["intact", "bit", "cut", "longer", "two records", "junk"]),
    st.data(),
)
def test_c_open_record_is_the_python_fast_path(
    CRecords, key, iv, ctype, version, epoch, seq, top, bits, text, how, data
):
    """Every datagram gives the same answer (plaintext, False or None) and
    leaves the same window on both, the window moving only for a plaintext."""
    c, ref = CRecords(key, iv), reference_records(key, iv)
    record = ref.seal(ctype, epoch << 48 | seq, text, version)
    d = record
    if how == "bit":
        i = data.draw(st.integers(0, len(record) - 1))
        d = record[:i] + bytes([record[i] ^ (1 << data.draw(st.integers(0, 7)))]) + record[i + 1 :]
    elif how == "cut":
        d = record[: data.draw(st.integers(0, len(record) - 1))]
    elif how == "longer":
        d = record + b"\x00"
    elif how == "two records":
        d = record + record
    elif how == "junk":
        d = data.draw(st.binary(max_size=60))
    wc, wp = window_of(top, bits), window_of(top, bits)
    got = c.open_record(d, 1, wc)
    assert got == ref.open_record(d, 1, wp)
    assert (wc.top, wc.bits) == (wp.top, wp.bits)
    if got is None or got is False:
        assert (wc.top, wc.bits) == (window_of(top, bits).top, window_of(top, bits).bits)
    else:
        assert wc.top == max(top, seq) and not wc.check(seq)  # a replay of it is refused
        assert c.open_record(d, 1, wc) is None
    fresh = how == "intact" and ctype == APPLICATION_DATA and epoch == 1 and version >> 8 == 0xFE
    if fresh and window_of(top, bits).check(seq):
        assert got == text


def test_c_records_bad_arguments_are_clear_errors(CRecords):
    with pytest.raises(ValueError, match="16 bytes"):
        CRecords(b"k" * 15, b"i" * 4)
    with pytest.raises(ValueError, match="4 bytes"):
        CRecords(b"k" * 16, b"i" * 12)
    c = CRecords(b"k" * 16, b"i" * 4)
    with pytest.raises(ValueError, match="one byte"):
        c.seal(256, 0, b"x")
    with pytest.raises(ValueError, match="one byte"):
        c.open(APPLICATION_DATA, 0x10000, 0, bytes(20))
    with pytest.raises(OverflowError):
        c.seal(APPLICATION_DATA, 1 << 64, b"x")
    with pytest.raises(OverflowError):
        c.seal(APPLICATION_DATA, -1, b"x")
    with pytest.raises(ValueError, match="one record"):
        c.seal(APPLICATION_DATA, 0, bytes(0x10000))
    with pytest.raises(TypeError):
        c.seal(APPLICATION_DATA, 0)
    with pytest.raises(TypeError):
        c.open(APPLICATION_DATA, DTLS_1_2, 0, "text")
    with pytest.raises(TypeError):
        c.open_record(bytes(40), 1)
    with pytest.raises(AttributeError):  # a window is a ReplayWindow
        c.open_record(c.seal(APPLICATION_DATA, 1 << 48, b"x"), 1, object())


def test_the_record_layer_uses_them_unless_extensions_are_off(Ccm8, CRecords):
    assert type(RecordCipher(b"k" * 16, b"i" * 4).aead) is Ccm8
    assert type(record_cipher(b"k" * 16, b"i" * 4)) is CRecords
    code = (
        "from greencoap.protocol.dtls.record import RecordCipher, record_cipher;"
        "print(type(RecordCipher(b'k' * 16, b'i' * 4).aead).__name__,"
        " type(record_cipher(b'k' * 16, b'i' * 4)).__module__)"
    )
    env = dict(os.environ, GREENCOAP_NO_EXTENSIONS="1")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.stdout.split() == ["AESCCM", "greencoap.protocol.dtls.record"], out.stderr
