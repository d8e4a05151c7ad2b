"""The server side of DTLS 1.2 PSK: stateless cookie exchange and the table of
sessions keyed by peer (layer 2; RFC 6347 §4.2.1 denial-of-service
countermeasures, §4.2.8 establishing a new association with an existing peer).

Theory of operation
-------------------
:meth:`DtlsServer.receive` is fed ``(datagram, peer, now)``:

* A datagram whose first record is an epoch-0 ClientHello from a peer that
  has no session — or whose session was made from a different ClientHello
  (another client_random: the peer rebooted or restarted its handshake) — is
  checked for a cookie.  Without a valid one the server answers a
  HelloVerifyRequest computed from the datagram alone and keeps **no** state
  (an existing session stays).  With a valid one a new server-role
  :class:`DtlsSession` is created — replacing the old session of that peer —
  and handles the ClientHello.
* Anything else goes to the peer's session, or is dropped and counted when
  the peer has none.

Sessions live in an LRU ``OrderedDict`` capped at ``max_sessions`` (the least
recently used is evicted to admit a new one, silently) and are closed after
``idle_timeout`` seconds without a valid record.  Failed and closed sessions
are removed at once.  Deadlines (retransmissions, idle expiry, retained
flights) are kept by a :class:`~.schedule.SessionSchedule`: a heap with lazy
invalidation, so the application-data hot path costs no heap operation.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from .cookie import CookieJar
from .messages import (
    CLIENT_HELLO,
    HANDSHAKE_HEADER_LENGTH,
    HELLO_VERIFY_REQUEST,
    ClientHello,
    DecodeError,
    HelloVerifyRequest,
    encode_message,
)
from .record import DTLS_1_0, HANDSHAKE, HEADER, HEADER_LENGTH, SEQ_MASK, encode_plain
from .schedule import SessionSchedule
from .session import DtlsSession
from .states import CLOSED, ESTABLISHED, FAILED, STAT_NAMES, BugLog

SERVER_STAT_NAMES = (
    "hello_verify_sent",  # stateless HelloVerifyRequests sent
    "bad_cookies",  # ClientHellos with a cookie that did not verify (answered with a new one)
    "sessions_created",
    "sessions_replaced",  # a peer started a new handshake over its old session (§4.2.8)
    "sessions_evicted",  # dropped for max_sessions (least recently used)
    "sessions_expired",  # idle timeout
    "sessions_closed",  # close_notify either way
    "sessions_failed",  # established sessions ended by a fatal alert
    "handshakes_failed",  # alerts, wrong keys, unknown identities, timeouts
    "no_session",  # datagrams from peers without a session that were no ClientHello
    "bad_records",  # undecodable ClientHellos
    "internal_errors",
)


class DtlsServer:
    """Server side: stateless cookie exchange + sessions keyed by peer."""

    def __init__(
        self,
        psk_lookup: Callable[[bytes], bytes | None],
        *,
        hint: bytes = b"",
        max_sessions: int = 10_000,
        idle_timeout: float = 300.0,
        mtu: int = 1200,
        randbytes: Callable[[int], bytes] = os.urandom,
        cookie_lifetime: float = 60.0,
    ) -> None:
        self.psk_lookup = psk_lookup
        self.hint = hint
        self.max_sessions = max_sessions
        self.idle_timeout = idle_timeout
        self.mtu = mtu
        self.sessions: OrderedDict[Any, DtlsSession] = OrderedDict()
        self.outbox: list[tuple[bytes, Any]] = []
        self._randbytes = randbytes
        self._cookies = CookieJar(randbytes, cookie_lifetime)
        self._counters = dict.fromkeys(SERVER_STAT_NAMES, 0)
        self._retired = dict.fromkeys(STAT_NAMES, 0)  # counters of removed sessions
        self._schedule = SessionSchedule(self.sessions)
        #: exceptions caught at the boundary (the server's and its sessions')
        self.bugs = BugLog()

    @property
    def stats(self) -> dict[str, int]:
        """Server counters plus the sum of all sessions' counters (live and
        removed); ``sessions`` is the current session count.  O(sessions)."""
        out = dict(self._retired)
        for session in self.sessions.values():
            for k, v in session.stats.items():
                out[k] += v
        for k, v in self._counters.items():
            out[k] = out.get(k, 0) + v
        out["sessions"] = len(self.sessions)
        return out

    def table_sizes(self) -> dict[str, int]:
        """Sessions and scheduled timer entries (superseded ones included)."""
        return {"sessions": len(self.sessions), "timers": len(self._schedule)}

    # ------------------------------------------------------------------ public API

    def receive(
        self, datagram: bytes, peer: Any, now: float
    ) -> tuple[DtlsSession | None, list[bytes]]:
        """Process one datagram from ``peer``: the peer's session (or None) and
        the application data it carried.  Replies go to ``outbox``."""
        try:
            return self._receive(datagram, peer, now)
        except Exception as e:  # a bug: peer input must never escape the engine
            self._counters["internal_errors"] += 1
            self.bugs.add(e)
            return self.sessions.get(peer), []

    def expire(self, now: float) -> None:
        """Run the due retransmissions, give up stalled handshakes, drop idle
        sessions."""
        for peer, session in self._schedule.due(now):
            session.expire(now)
            self._after(session, peer, expiring=True)

    def next_deadline(self) -> float | None:
        """When :meth:`expire` must run next, or None.  It may be early (a
        session's deadline moved later since it was scheduled): calling
        ``expire`` then costs one heap operation and reschedules it.  It is
        never late."""
        return self._schedule.next_deadline()

    def close(self, peer: Any = None) -> None:
        """Send close_notify to one peer (or every peer) and forget the session(s)."""
        peers = list(self.sessions) if peer is None else [peer]
        for p in peers:
            session = self.sessions.get(p)
            if session is None:
                continue
            session.close()
            self._flush(session, p)
            self._remove(p, "sessions_closed")

    def rotate_cookie_secret(self) -> None:
        """Start a new cookie secret; cookies under the previous one stay valid
        until the next rotation."""
        self._cookies.rotate()

    # ------------------------------------------------------------------ internals

    def _receive(
        self, datagram: bytes, peer: Any, now: float
    ) -> tuple[DtlsSession | None, list[bytes]]:
        session = self.sessions.get(peer)
        if session is not None and datagram[:1] == b"\x17":  # application data: the hot path
            self.sessions.move_to_end(peer)
            data = session.receive(datagram, now)
            if session.outbox or session.state is not ESTABLISHED:
                self._after(session, peer)
            # else nothing to send and no deadline earlier (only the idle one moved later)
            return session, data
        # An epoch-0 handshake record first: perhaps a ClientHello for a new association.
        if datagram[:1] == b"\x16" and datagram[3:5] == b"\x00\x00":
            found = self._parse_client_hello(datagram)
            if found is not None and (session is None or found[0].random != session.client_random):
                return self._on_client_hello(datagram, peer, now, session, *found)
        if session is None:
            self._counters["no_session"] += 1
            return None, []
        self.sessions.move_to_end(peer)
        data = session.receive(datagram, now)
        self._after(session, peer)
        return session, data

    def _parse_client_hello(self, datagram: bytes) -> tuple[ClientHello, int, int] | None:
        """(hello, record seq, message_seq) when the first record holds a whole ClientHello."""
        if len(datagram) < HEADER_LENGTH + HANDSHAKE_HEADER_LENGTH:
            return None
        _, version, es, length = HEADER.unpack_from(datagram)
        h = HEADER_LENGTH
        if version >> 8 != 0xFE or h + length > len(datagram) or datagram[h] != CLIENT_HELLO:
            return None
        msg_length = int.from_bytes(datagram[h + 1 : h + 4], "big")
        msg_seq = int.from_bytes(datagram[h + 4 : h + 6], "big")
        offset = int.from_bytes(datagram[h + 6 : h + 9], "big")
        frag_length = int.from_bytes(datagram[h + 9 : h + 12], "big")
        start = h + HANDSHAKE_HEADER_LENGTH
        if offset != 0 or frag_length != msg_length or start + msg_length > h + length:
            self._counters["bad_records"] += (
                1  # fragmented ClientHellos cannot be checked statelessly
            )
            return None
        try:
            hello = ClientHello.decode(datagram[start : start + msg_length])
        except DecodeError:
            self._counters["bad_records"] += 1
            return None
        return hello, es & SEQ_MASK, msg_seq

    def _on_client_hello(
        self,
        datagram: bytes,
        peer: Any,
        now: float,
        old: DtlsSession | None,
        hello: ClientHello,
        record_seq: int,
        msg_seq: int,
    ) -> tuple[DtlsSession | None, list[bytes]]:
        cookies = self._cookies
        cookies.tick(now)
        if not cookies.check(peer, hello):
            if hello.cookie:
                self._counters["bad_cookies"] += 1
            body = HelloVerifyRequest(DTLS_1_0, cookies.make(peer, hello)).encode()
            message = encode_message(HELLO_VERIFY_REQUEST, msg_seq, body)
            # RFC 6347 §4.2.1: the record sequence number of the ClientHello is echoed.
            self.outbox.append((encode_plain(HANDSHAKE, DTLS_1_0, record_seq, message), peer))
            self._counters["hello_verify_sent"] += 1
            return old, []
        if old is not None:
            self._remove(peer, "sessions_replaced")
        while len(self.sessions) >= self.max_sessions > 0:
            victim, _ = next(iter(self.sessions.items()))
            self._remove(victim, "sessions_evicted")
        session = DtlsSession(
            "server",
            psk_lookup=self.psk_lookup,
            hint=self.hint,
            mtu=self.mtu,
            randbytes=self._randbytes,
            now=now,
            idle_timeout=self.idle_timeout,
            bugs=self.bugs,
        )
        if record_seq < 1 << 32:  # continue the ClientHello's numbering, as OpenSSL does
            session._seq0 = record_seq
        self.sessions[peer] = session
        self._counters["sessions_created"] += 1
        data = session.receive(datagram, now)
        self._after(session, peer)
        return session, data

    def _flush(self, session: DtlsSession, peer: Any) -> None:
        if session.outbox:
            self.outbox.extend([(d, peer) for d in session.outbox])
            session.outbox = []

    def _after(self, session: DtlsSession, peer: Any, expiring: bool = False) -> None:
        """Collect a session's output; remove it when it ended, else schedule it."""
        if session.outbox:
            self._flush(session, peer)
        state = session.state
        if state is FAILED:
            self._remove(
                peer, "sessions_failed" if session.identity is not None else "handshakes_failed"
            )
        elif state is CLOSED:
            self._remove(peer, "sessions_expired" if expiring else "sessions_closed")
        else:
            self._schedule.update(session, peer)

    def _remove(self, peer: Any, reason: str) -> None:
        session = self.sessions.pop(peer, None)
        if session is None:
            return
        self._counters[reason] += 1
        retired = self._retired
        for k, v in session.stats.items():
            retired[k] += v
