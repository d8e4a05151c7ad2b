"""Key derivation for TLS_PSK_WITH_AES_128_CCM_8 (layer 2).

* the TLS 1.2 PRF with P_SHA256 (RFC 5246 §5);
* the PSK premaster secret (RFC 4279 §2);
* the master secret, classic (RFC 5246 §8.1) or extended (RFC 7627 §4);
* the key block, which for this AEAD suite has no MAC keys: client_write_key,
  server_write_key (16 bytes each), client_write_IV, server_write_IV (4 bytes
  each, the implicit part of the CCM nonce; RFC 6655 §3, RFC 5246 §6.3);
* Finished ``verify_data`` (RFC 5246 §7.4.9).
"""

from __future__ import annotations

import hmac
from typing import NamedTuple

MASTER_SECRET_LENGTH = 48
VERIFY_DATA_LENGTH = 12
KEY_LENGTH = 16
IV_LENGTH = 4


def p_sha256(secret: bytes, seed: bytes, length: int) -> bytes:
    """P_SHA256(secret, seed) expanded to ``length`` bytes (RFC 5246 §5)."""
    out = bytearray()
    a = seed
    while len(out) < length:
        a = hmac.digest(secret, a, "sha256")
        out += hmac.digest(secret, a + seed, "sha256")
    return bytes(out[:length])


def prf(secret: bytes, label: bytes, seed: bytes, length: int) -> bytes:
    """PRF(secret, label, seed) = P_SHA256(secret, label + seed) (RFC 5246 §5)."""
    return p_sha256(secret, label + seed, length)


def psk_premaster(psk: bytes) -> bytes:
    """uint16(N) ‖ N zero bytes ‖ uint16(N) ‖ psk, N = len(psk) (RFC 4279 §2)."""
    n = len(psk).to_bytes(2, "big")
    return n + bytes(len(psk)) + n + psk


def master_secret(premaster: bytes, client_random: bytes, server_random: bytes) -> bytes:
    """The classic master secret (RFC 5246 §8.1)."""
    return prf(premaster, b"master secret", client_random + server_random, MASTER_SECRET_LENGTH)


def extended_master_secret(premaster: bytes, session_hash: bytes) -> bytes:
    """The extended master secret bound to the handshake transcript (RFC 7627 §4)."""
    return prf(premaster, b"extended master secret", session_hash, MASTER_SECRET_LENGTH)


class KeyBlock(NamedTuple):
    """The traffic keys of an AES-CCM suite (no MAC keys)."""

    client_key: bytes
    server_key: bytes
    client_iv: bytes
    server_iv: bytes


def key_block(master: bytes, client_random: bytes, server_random: bytes) -> KeyBlock:
    """Split PRF(master, "key expansion", server_random + client_random) (RFC 5246 §6.3)."""
    n = 2 * KEY_LENGTH + 2 * IV_LENGTH
    block = prf(master, b"key expansion", server_random + client_random, n)
    k, i = KEY_LENGTH, IV_LENGTH
    return KeyBlock(block[:k], block[k : 2 * k], block[2 * k : 2 * k + i], block[2 * k + i :])


def verify_data(master: bytes, label: bytes, handshake_hash: bytes) -> bytes:
    """Finished verify_data: PRF(master, label, SHA256(messages))[:12] (RFC 5246 §7.4.9)."""
    return prf(master, label, handshake_hash, VERIFY_DATA_LENGTH)
