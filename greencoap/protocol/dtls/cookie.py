"""Stateless HelloVerifyRequest cookies (layer 2; RFC 6347 §4.2.1).

The server answers a ClientHello without a valid cookie with a
HelloVerifyRequest and keeps no state: the cookie is an HMAC-SHA256, under a
server secret, of the peer address and the ClientHello fields the client must
repeat unchanged (random, session_id, cipher_suites, compression_methods).  A
returning ClientHello proves the peer can receive at that address.

The secret rotates — on demand with :meth:`CookieJar.rotate` and every
``lifetime`` seconds of the ``now`` fed in — and cookies made under the
current or the previous secret are accepted, so a cookie lives between one
and two lifetimes.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from typing import Any

from .messages import ClientHello, vec

COOKIE_LENGTH = 16
SECRET_LENGTH = 32


def peer_bytes(peer: Any) -> bytes:
    """A stable byte string for an opaque, hashable peer key."""
    if isinstance(peer, bytes):
        return peer
    return repr(peer).encode("utf-8", "backslashreplace")


class CookieJar:
    """Makes and checks cookies under a rotating secret."""

    def __init__(
        self, randbytes: Callable[[int], bytes] = os.urandom, lifetime: float = 60.0
    ) -> None:
        self._randbytes = randbytes
        self.lifetime = lifetime
        self._current = randbytes(SECRET_LENGTH)
        self._previous: bytes | None = None
        self._rotated_at: float | None = None

    def rotate(self) -> None:
        """Start a new secret; cookies under the one before it stay valid."""
        self._previous = self._current
        self._current = self._randbytes(SECRET_LENGTH)

    def tick(self, now: float) -> None:
        """Rotate when ``lifetime`` seconds have passed since the last rotation."""
        if self._rotated_at is None:
            self._rotated_at = now
        elif now - self._rotated_at >= self.lifetime:
            self.rotate()
            self._rotated_at = now

    @staticmethod
    def _input(peer: Any, hello: ClientHello) -> bytes:
        return (
            vec(peer_bytes(peer), 2)
            + hello.random
            + vec(hello.session_id, 1)
            + vec(hello.cipher_suites, 2)
            + vec(hello.compression, 1)
        )

    def make(self, peer: Any, hello: ClientHello) -> bytes:
        """The cookie for this peer and ClientHello under the current secret."""
        return hmac.digest(self._current, self._input(peer, hello), "sha256")[:COOKIE_LENGTH]

    def check(self, peer: Any, hello: ClientHello) -> bool:
        """Whether the ClientHello carries a cookie made by the current or previous secret."""
        cookie = hello.cookie
        if len(cookie) != COOKIE_LENGTH:
            return False
        data = self._input(peer, hello)
        for secret in (self._current, self._previous):
            if secret is not None and hmac.compare_digest(
                cookie, hmac.digest(secret, data, "sha256")[:COOKIE_LENGTH]
            ):
                return True
        return False
