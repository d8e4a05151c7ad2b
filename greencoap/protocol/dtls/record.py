"""The DTLS 1.2 record layer (layer 2; RFC 6347 §4.1, AEAD per RFC 5246 §6.2.3.3
and RFC 6655 §3 for AES-128-CCM-8).

A record is ``type(1) version(2) epoch(2) sequence_number(6) length(2)``
followed by ``length`` bytes of fragment; a datagram carries one or more
records.  The epoch and the 48-bit sequence number are handled together as one
64-bit integer ``es = epoch << 48 | seq``: that is both the "seq_num" of the
AEAD additional data and the explicit nonce sent at the start of a protected
fragment.

* :func:`parse_records` splits a datagram and reports whether it was cut short;
* :class:`RecordCipher` seals and opens records of one direction of epoch ≥ 1
  (nonce = 4-byte implicit IV ‖ 8-byte explicit part, additional data =
  es(8) ‖ type(1) ‖ version(2) ‖ plaintext length(2), 8-byte tag), with the
  AEAD :func:`ccm8` gives: ``greencoap._ccm.Ccm8`` when built (OpenSSL
  contexts kept per direction), else cryptography's ``AESCCM`` — the same
  bytes and the same ``InvalidTag`` either way (tests/test_ccm.py);
  :func:`record_cipher` gives its C twin ``greencoap._ccm.RecordCipher``
  when built (the whole record in one call), else it;
* :class:`ReplayWindow` is the 64-record sliding window of §4.1.2.6.
"""

from __future__ import annotations

import struct
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from ..._ext import ccm as _ccm_module

CHANGE_CIPHER_SPEC = 20
ALERT = 21
HANDSHAKE = 22
APPLICATION_DATA = 23
CONTENT_TYPES = frozenset((CHANGE_CIPHER_SPEC, ALERT, HANDSHAKE, APPLICATION_DATA))

DTLS_1_0 = 0xFEFF
DTLS_1_2 = 0xFEFD

HEADER = struct.Struct(">BHQH")  # type, version, epoch<<48|seq, length
HEADER_LENGTH = HEADER.size  # 13
AAD = struct.Struct(">QBHH")  # epoch<<48|seq, type, version, plaintext length
EXPLICIT_NONCE_LENGTH = 8
TAG_LENGTH = 8
AEAD_OVERHEAD = EXPLICIT_NONCE_LENGTH + TAG_LENGTH  # 16
SEQ_MASK = (1 << 48) - 1
MAX_SEQ = SEQ_MASK
MAX_PLAINTEXT = 1 << 14  # RFC 5246 §6.2.1

Record = tuple[int, int, int, bytes]  # (type, version, es, fragment)

_unpack_header = HEADER.unpack_from
_pack_header = HEADER.pack
_pack_aad = AAD.pack


def parse_records(datagram: bytes) -> tuple[list[Record], bool]:
    """Split a datagram into records; the flag is False when parsing stopped early.

    A truncated header, a length running past the end, a version whose major
    byte is not 0xFE or an unknown content type ends parsing of the datagram
    (the records before it are still returned).
    """
    records: list[Record] = []
    pos = 0
    end = len(datagram)
    while pos < end:
        if end - pos < HEADER_LENGTH:
            return records, False
        ctype, version, es, length = _unpack_header(datagram, pos)
        pos += HEADER_LENGTH
        if ctype not in CONTENT_TYPES or version >> 8 != 0xFE or pos + length > end:
            return records, False
        records.append((ctype, version, es, datagram[pos : pos + length]))
        pos += length
    return records, True


def encode_plain(ctype: int, version: int, es: int, payload: bytes) -> bytes:
    """An unprotected (epoch 0) record."""
    return _pack_header(ctype, version, es, len(payload)) + payload


def ccm8(key: bytes) -> Any:
    """AES-128-CCM with an 8-byte tag under ``key``: an object with
    ``encrypt(nonce, plaintext, aad)`` and ``decrypt(nonce, data, aad)``
    (raising ``InvalidTag``), in C when ``greencoap._ccm`` is built."""
    c = _ccm_module()
    if c is not None and len(key) == 16:
        return c.Ccm8(key)
    return AESCCM(key, tag_length=TAG_LENGTH)


def record_cipher(key: bytes, iv: bytes) -> Any:
    """The protection of one direction's records under ``key`` and ``iv``:
    :class:`RecordCipher`, or its C twin when ``greencoap._ccm`` is built
    (same ``seal``/``open`` results, tests/test_ccm.py)."""
    c = _ccm_module()
    if c is not None and len(key) == 16 and len(iv) == 4:
        return c.RecordCipher(key, iv)
    return RecordCipher(key, iv)


class RecordCipher:
    """AES-128-CCM-8 protection of the records of one direction and one epoch
    (the pure-Python one; :func:`record_cipher` picks it or its C twin)."""

    __slots__ = ("aead", "iv")

    def __init__(self, key: bytes, iv: bytes) -> None:
        self.aead = ccm8(key)
        self.iv = iv

    def seal(self, ctype: int, es: int, plaintext: bytes, version: int = DTLS_1_2) -> bytes:
        """The protected record (header included) carrying ``plaintext``."""
        explicit = es.to_bytes(8, "big")
        n = len(plaintext)
        sealed = self.aead.encrypt(self.iv + explicit, plaintext, _pack_aad(es, ctype, version, n))
        return _pack_header(ctype, version, es, n + AEAD_OVERHEAD) + explicit + sealed

    def open(self, ctype: int, version: int, es: int, fragment: bytes) -> bytes | None:
        """The plaintext of a protected fragment, or None when it fails authentication."""
        n = len(fragment) - AEAD_OVERHEAD
        if n < 0:
            return None
        try:
            return self.aead.decrypt(
                self.iv + fragment[:EXPLICIT_NONCE_LENGTH],
                fragment[EXPLICIT_NONCE_LENGTH:],
                _pack_aad(es, ctype, version, n),
            )
        except InvalidTag:
            return None

    def open_record(self, datagram: bytes, epoch: int, window: ReplayWindow) -> bytes | bool | None:
        """The receive fast path: the plaintext of a datagram that is exactly
        one application_data record of ``epoch``, new to ``window`` (which is
        then updated); False when it fails authentication; None when it is
        anything else (a replay, another type or epoch, several records, a
        bad header: the general path decides and counts)."""
        if len(datagram) < HEADER_LENGTH + AEAD_OVERHEAD:
            return None
        ctype, version, es, length = _unpack_header(datagram, 0)
        if (
            ctype != APPLICATION_DATA
            or es >> 48 != epoch
            or HEADER_LENGTH + length != len(datagram)
            or version >> 8 != 0xFE
        ):
            return None
        seq = es & SEQ_MASK
        if not window.check(seq):
            return None
        plain = self.open(APPLICATION_DATA, version, es, datagram[HEADER_LENGTH:])
        if plain is None:
            return False
        window.update(seq)
        return plain


class ReplayWindow:
    """The RFC 6347 §4.1.2.6 anti-replay window: the highest sequence number
    seen and a 64-bit bitmap of it and the 63 numbers below it.

    :meth:`check` before authenticating a record, :meth:`update` only after
    it authenticated, so forged records cannot move the window.
    """

    __slots__ = ("top", "bits")
    SIZE = 64
    _MASK = (1 << 64) - 1

    def __init__(self) -> None:
        self.top = -1
        self.bits = 0

    def check(self, seq: int) -> bool:
        """True when ``seq`` is new: above the window or unseen inside it."""
        d = self.top - seq
        if d < 0:
            return True
        if d >= 64:
            return False
        return not (self.bits >> d) & 1

    def update(self, seq: int) -> None:
        """Mark ``seq`` as received, sliding the window when it is the new top."""
        d = seq - self.top
        if d > 0:
            self.bits = ((self.bits << d) | 1) & self._MASK if d < 64 else 1
            self.top = seq
        elif d > -64:
            self.bits |= 1 << -d
