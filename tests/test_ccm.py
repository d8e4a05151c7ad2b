"""The C AES-128-CCM-8 (greencoap/_ccm.c) against cryptography's AESCCM, differentially.

Every key, nonce, plaintext and associated data must give the same bytes on
both; every record, intact or altered (a flipped bit anywhere, cut short, the
wrong nonce or associated data), must open to the same plaintext on both or
fail on both with ``InvalidTag``. CI sets GREENCOAP_REQUIRE_SPEEDUPS=1 so
that a missing build fails instead of skipping.
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

from greencoap.protocol.dtls.record import RecordCipher

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


def test_the_record_layer_uses_it_unless_extensions_are_off(Ccm8):
    assert type(RecordCipher(b"k" * 16, b"i" * 4).aead) is Ccm8
    code = (
        "from greencoap.protocol.dtls.record import RecordCipher;"
        "print(type(RecordCipher(b'k' * 16, b'i' * 4).aead).__name__)"
    )
    env = dict(os.environ, GREENCOAP_NO_EXTENSIONS="1")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.stdout.strip() == "AESCCM", out.stderr
