"""Amplification mitigation with the Echo option, server side (layer 2;
RFC 7252 §11.3, RFC 9175 §2.4).

Over UDP the source address of a request is not proven: a 10-byte GET with
a spoofed address could make a server send a 1 KB block to a victim.  So
before a response more than ``factor`` times the size of its request goes
to an address the server has not verified, the server answers 4.01
Unauthorized with an Echo option instead (a few bytes).  A client that
really is at that address repeats the request with the Echo value (libcoap's
and greencoap's clients do it by themselves), which proves the address: the
held-back response goes out then (the handler does not run twice), and the
address is remembered as verified for ``lifetime`` seconds.

:class:`EchoVerifier` keeps no state per challenge: an Echo value is a
timestamp and a MAC of (peer, timestamp) under a secret of its own, fresh
for ``freshness`` seconds.  Verified peers are remembered in two generations
of at most ``capacity`` entries each (the older generation is dropped when
the newer fills); held-back responses are bounded in number and time.

Peers are the opaque keys the endpoint uses (address and port).  The
verifier never reads a clock: every call takes ``now``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from .._ext import speedups
from ..message import Message

__all__ = ["DEFAULT_FACTOR", "EchoVerifier", "wire_size"]

#: Responses up to this many times their request's size need no verification.
DEFAULT_FACTOR = 3.0

_ECHO = 252


def wire_size_py(msg: Message) -> int:
    """The encoded size of ``msg`` (to within a byte per long option), without
    encoding it: header, token, one byte per option header plus its extended
    delta/length bytes, values, payload marker and payload.  (:data:`wire_size`
    is this, or its C twin ``_speedups.wire_size`` when built.)"""
    n = 4 + len(msg.token)
    prev = 0
    for number, value in msg.options:
        length = len(value)
        delta = number - prev
        prev = number
        n += 1 + length + (delta >= 13) + (delta >= 269) + (length >= 13) + (length >= 269)
    payload = msg.payload
    if payload:
        n += 1 + len(payload)
    return n


_c = speedups()
#: the size function in use (C when built; the same result)
wire_size: Callable[[Message], int] = wire_size_py if _c is None else _c.wire_size
_amplifies_c = None if _c is None else _c.amplifies
del _c


class EchoVerifier:
    """Which peers are verified, and the Echo challenges that verify them."""

    def __init__(
        self,
        factor: float = DEFAULT_FACTOR,
        *,
        lifetime: float = 600.0,
        freshness: float = 60.0,
        capacity: int = 65536,
        randbytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if factor < 1:
            raise ValueError("the amplification factor must be at least 1")
        self.factor = factor
        self.lifetime = lifetime
        self.freshness = freshness
        self.capacity = capacity
        self._key = randbytes(16)
        self._verified: dict[Any, float] = {}  # peer -> verified until
        self._old: dict[Any, float] = {}
        #: responses held back by a challenge, for the request's repetition
        self._held: OrderedDict[Any, tuple[float, Any]] = OrderedDict()
        self.held_capacity = 1024
        self.stats = {"echo_challenges": 0, "echo_verified": 0, "echo_stale": 0}

    def verified(self, peer: Any, now: float) -> bool:
        """True when ``peer`` proved its address within ``lifetime``."""
        until = self._verified.get(peer)
        if until is None:
            until = self._old.get(peer)
        return until is not None and until > now

    def amplifies(self, request: Message, response: Message) -> bool:
        """Is ``response`` more than ``factor`` times the size of ``request``?
        (See :meth:`amplifies_py`; in C when built.)"""
        if _amplifies_c is not None:
            return _amplifies_c(request, response, self.factor)
        return self.amplifies_py(request, response)

    def amplifies_py(self, request: Message, response: Message) -> bool:
        """:meth:`amplifies` in Python.  (Cheap for the common small response:
        the request's size is bounded from below first, without a pass over
        its options.)"""
        size = wire_size(response)
        floor = 4 + len(request.token) + len(request.payload) + len(request.options)
        if size <= self.factor * floor:
            return False
        return size > self.factor * wire_size(request)

    def check(self, request: Message, peer: Any, now: float) -> bool:
        """Is ``peer`` verified, or does ``request`` carry an Echo value this
        verifier issued to it recently (which verifies it, and is remembered)?"""
        until = self._verified.get(peer)  # verified(), inline: once per request
        if until is None:
            until = self._old.get(peer)
        if until is not None and until > now:
            return True
        echo = request.opt(_ECHO)
        if echo is not None:
            if self._valid(echo, peer, now):
                self.verify(peer, now)
                self.stats["echo_verified"] += 1
                return True
            self.stats["echo_stale"] += 1
        return False

    def challenge(self, peer: Any, now: float) -> bytes:
        """A fresh Echo value for ``peer`` (12 bytes: time, then a MAC)."""
        self.stats["echo_challenges"] += 1
        stamp = int(now).to_bytes(4, "big", signed=False) if now >= 0 else bytes(4)
        return stamp + self._mac(peer, stamp)

    def _mac(self, peer: Any, stamp: bytes) -> bytes:
        return hmac.new(self._key, repr(peer).encode() + stamp, hashlib.sha256).digest()[:8]

    def _valid(self, echo: bytes, peer: Any, now: float) -> bool:
        if len(echo) != 12:
            return False
        stamp = echo[:4]
        age = now - int.from_bytes(stamp, "big")
        if not -1 <= age <= self.freshness:
            return False
        return hmac.compare_digest(echo[4:], self._mac(peer, stamp))

    def verify(self, peer: Any, now: float) -> None:
        """Remember ``peer`` as verified (it answered an Echo challenge, or
        acknowledged a confirmable message of ours) for ``lifetime``."""
        table = self._verified
        if len(table) >= self.capacity:
            self._old = table
            table = self._verified = {}
        table.pop(peer, None)  # kept in expiry order
        table[peer] = now + self.lifetime

    def expire(self, now: float) -> None:
        """Forget verifications past their lifetime and held responses past
        their freshness (both tables are in expiry order)."""
        for table in (self._old, self._verified):
            while table:
                peer, until = next(iter(table.items()))
                if until > now:
                    break
                del table[peer]
        held = self._held
        while held and next(iter(held.values()))[0] <= now:
            held.popitem(last=False)

    def hold(self, key: Any, response: Any, now: float) -> None:
        """Keep the ``response`` a challenge held back, for the request's
        repetition with the Echo value (within ``freshness``; at most
        ``held_capacity``, the oldest going first)."""
        held = self._held
        held.pop(key, None)
        while held and (len(held) >= self.held_capacity or next(iter(held.values()))[0] <= now):
            held.popitem(last=False)
        held[key] = (now + self.freshness, response)

    def release(self, key: Any, now: float) -> Any:
        """The response held for ``key`` (and forget it), or None."""
        entry = self._held.pop(key, None)
        if entry is None or entry[0] <= now:
            return None
        return entry[1]

    def table_sizes(self) -> dict[str, int]:
        """Verified peers (both generations) and held-back responses."""
        return {
            "echo_verified_peers": len(self._verified) + len(self._old),
            "echo_held": len(self._held),
        }
