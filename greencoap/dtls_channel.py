"""DTLS between an endpoint and its socket: a channel that encrypts (layer 3).

:class:`DtlsChannel` has the shape of a backend channel (``sendto``,
``stats``, ``close``, batches handed to ``on_batch``), so an
:class:`~greencoap.endpoint.Endpoint` runs CoAP over DTLS without knowing it:
records from the socket go through the sans-I/O DTLS engine
(:mod:`greencoap.protocol.dtls`) and only decrypted application data reaches
the message layer; what the message layer sends is protected first.

Client role: the first datagram for a peer starts a handshake and waits
(with the ones after it, a bounded number) until the session is
established; a failed handshake fails the endpoint's exchanges with that
peer at once through ``on_failure(addr, error)``.  Sessions are reused for
later requests and closed with close_notify by :meth:`DtlsChannel.close`.

Server role: a :class:`~greencoap.protocol.dtls.DtlsServer` answers
handshakes (stateless cookies first) and keeps one session per peer.  The
peers it hands up carry a :class:`SecurePeer` tag as their last element, so
nothing keyed by peer above (deduplication, block-wise caches, observers,
rate limits) is ever shared with plain CoAP from the same address, and a
handler can tell which PSK identity authenticated the request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from time import monotonic
from typing import TYPE_CHECKING, Any

from .errors import HandshakeError
from .hub import DeadlineTimer

if TYPE_CHECKING:
    from .protocol.dtls import DtlsSession


def _engine() -> Any:
    """The DTLS engine, imported on first use (plain CoAP never loads ``cryptography``)."""
    from .protocol import dtls

    return dtls


log = logging.getLogger("greencoap.dtls")

#: Datagrams held per peer while its handshake runs (older ones are dropped;
#: CoAP retransmits CON requests anyway).
PENDING_LIMIT = 64


class SecurePeer:
    """The tag ending a peer tuple from a DTLS server channel.

    ``identity`` is the PSK identity the session authenticated (text),
    ``addr`` the socket address to send to.  One tag per session: a new
    handshake from the same address makes a new peer.
    """

    __slots__ = ("session", "addr", "identity")

    def __init__(self, session: DtlsSession, addr: tuple) -> None:
        self.session = session
        self.addr = addr
        ident = session.identity or b""
        self.identity = ident.decode("utf-8", "replace")

    def alive(self) -> bool:
        """False once the session ended (close_notify, idle expiry, eviction, failure)."""
        return self.session.state is _engine().ESTABLISHED

    def __repr__(self) -> str:
        return f"<SecurePeer {self.identity!r}>"


def secure_identity(peer: tuple) -> str | None:
    """The PSK identity behind ``peer``, or None for plain CoAP."""
    tag = peer[-1] if peer else None
    return tag.identity if tag.__class__ is SecurePeer else None


def psk_lookup_from(psk: Any) -> Callable[[bytes], bytes | None]:
    """A server's ``psk=``: a dict identity → key or a callable, as the engine wants it."""
    if callable(psk):

        def lookup(identity: bytes) -> bytes | None:
            key = psk(identity.decode("utf-8", "replace"))
            return _key_bytes(key) if key is not None else None

        return lookup
    if isinstance(psk, dict):
        table = {_key_bytes(k): _key_bytes(v) for k, v in psk.items()}
        return table.get
    raise TypeError("psk must be a dict {identity: key} or a callable identity -> key")


def _key_bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


def client_credentials(value: Any) -> tuple[bytes, bytes]:
    """Normalise a client's ``(identity, key)`` pair to bytes."""
    try:
        identity, key = value
    except (TypeError, ValueError):
        raise TypeError("psk must be an (identity, key) pair") from None
    return _key_bytes(identity), _key_bytes(key)


class DtlsChannel:
    """A backend channel wrapped in DTLS (see the module docstring)."""

    def __init__(
        self,
        hub: Any,
        sock: Any,
        on_batch: Callable[[list], None],
        *,
        role: str,
        psk: Any = None,
        hint: bytes | str = b"",
        mtu: int = 1200,
        max_sessions: int = 10_000,
        idle_timeout: float = 300.0,
    ) -> None:
        if role not in ("client", "server"):
            raise ValueError("role must be 'client' or 'server'")
        dtls = _engine()
        self._session_class = dtls.DtlsSession
        self.ESTABLISHED, self.FAILED, self.CLOSED = dtls.ESTABLISHED, dtls.FAILED, dtls.CLOSED
        self.hub = hub
        self.role = role
        self.on_batch = on_batch
        #: client role: called as ``on_failure(addr, HandshakeError)`` when a
        #: session fails, so waiting exchanges end at once
        self.on_failure: Callable[[tuple, Exception], None] | None = None
        self._log_quiet_until = 0.0
        self._log_suppressed = 0
        self.mtu = mtu
        self.closed = False
        self._deadline = DeadlineTimer(hub, self._on_timer)
        self._stats = {
            "dtls_send_dropped": 0,
            "dtls_handshake_failures": 0,
            "dtls_unknown_peer": 0,
            "dtls_sessions_abandoned": 0,
            "internal_errors": 0,
        }
        if role == "server":
            self.server: Any = dtls.DtlsServer(
                psk_lookup_from(psk),
                hint=_key_bytes(hint),
                max_sessions=max_sessions,
                idle_timeout=idle_timeout,
                mtu=mtu,
            )
            self._bugs = self.server.bugs
            self.raw = hub.io.open_channel(sock, self._on_server_batch)
        else:
            self._bugs = dtls.BugLog()
            self.server = None
            #: addr -> (identity, key); a Client fills it per host before sending
            self.credentials: dict[tuple, tuple[bytes, bytes]] = {}
            self.default_psk = client_credentials(psk) if psk is not None else None
            self.sessions: dict[tuple, DtlsSession] = {}
            #: when the sessions need their timers (no walk over all of them)
            self._schedule = dtls.SessionSchedule(self.sessions)
            self._pending: dict[tuple, list[bytes]] = {}
            self.raw = hub.io.open_channel(sock, self._on_client_batch)

    @property
    def stats(self) -> dict[str, int]:
        """Socket counters, the DTLS engine's (``dtls_*``) and this channel's."""
        s = dict(self.raw.stats)
        s.update(self._stats)
        if self.server is not None:
            engine = self.server.stats
            s["dtls_sessions"] = len(self.server.sessions)
        else:
            engine = {}
            for sess in self.sessions.values():
                for k, v in sess.stats.items():
                    engine[k] = engine.get(k, 0) + v
            up = self.ESTABLISHED
            s["dtls_sessions"] = sum(1 for x in self.sessions.values() if x.state == up)
        for k, v in engine.items():
            s["dtls_" + k] = v
        return s

    def table_sizes(self) -> dict[str, int]:
        """Sessions (and, client role, datagrams waiting for a handshake)."""
        if self.server is not None:
            return {"dtls_" + k: v for k, v in self.server.table_sizes().items()}
        return {
            "dtls_sessions": len(self.sessions),
            "dtls_pending": sum(len(v) for v in self._pending.values()),
        }

    def limit_sources(self, *args: Any, **kwargs: Any) -> None:
        """Early shedding on the socket underneath (see the backends' channels)."""
        limit = getattr(self.raw, "limit_sources", None)
        if limit is not None:
            limit(*args, **kwargs)

    # -- server role -----------------------------------------------------
    def _on_server_batch(self, batch: list) -> None:
        server = self.server
        receive = server.receive
        plain = []
        now = monotonic()
        failed = self.FAILED
        for data, addr in batch:
            try:
                session, apps = receive(data, addr, now)
                if session is not None and session.state is failed:
                    self._log_failure(session, addr, now)
                if apps:
                    tagged = session.user_tag  # one tagged peer per session
                    if tagged is None:
                        tagged = session.user_tag = addr + (SecurePeer(session, addr),)
                    for app in apps:
                        plain.append((app, tagged))
            except Exception:  # noqa: BLE001 - one record's bug must not cost the rest
                self._internal_error(receive)
        self._after_engine()
        if plain and not self.closed:
            self.on_batch(plain)

    def _after_engine(self) -> None:
        """After the engine ran: send what it queued, re-arm its timer, report
        the bugs it caught (with their tracebacks, through the hub)."""
        try:
            if self.server is not None:
                self._flush_server()
            self._arm()
        except Exception:  # noqa: BLE001
            self._internal_error(self._after_engine)
        bugs = self._bugs
        if bugs.errors:
            for exc in bugs.take():
                self.hub.handle_error("the DTLS engine", exc)

    def _internal_error(self, where: Any) -> None:
        self._stats["internal_errors"] += 1
        self.hub.handle_error(where)

    def _log_failure(self, session: DtlsSession, addr: tuple, now: float) -> None:
        """One warning per second at most: a handshake or session from ``addr`` failed."""
        if now < self._log_quiet_until:
            self._log_suppressed += 1
            return
        self._log_quiet_until = now + 1.0
        more = f" ({self._log_suppressed} more suppressed)" if self._log_suppressed else ""
        self._log_suppressed = 0
        log.warning("DTLS with %s failed: %s%s", _show(addr), session.error, more)

    def _flush_server(self) -> None:
        out = self.server.outbox
        if out:
            self.server.outbox = []
            send = self.raw.sendto
            for data, addr in out:
                send(data, addr)

    # -- client role -------------------------------------------------------
    def _on_client_batch(self, batch: list) -> None:
        plain = []
        now = monotonic()
        for data, addr in batch:
            session = self.sessions.get(addr)
            if session is None:
                self._stats["dtls_unknown_peer"] += 1  # no session with that sender
                continue
            try:
                before = session.state
                apps = session.receive(data, now)
                self._flush_session(session, addr)
                if session.state != before:
                    self._state_changed(session, addr)
                self._schedule.update(session, addr)
                for app in apps:
                    plain.append((app, addr))
            except Exception:  # noqa: BLE001
                self._internal_error(session.receive)
        self._after_engine()
        if plain and not self.closed:
            self.on_batch(plain)

    def _flush_session(self, session: DtlsSession, addr: tuple) -> None:
        out = session.outbox
        if out:
            session.outbox = []
            send = self.raw.sendto
            for data in out:
                send(data, addr)

    def _state_changed(self, session: DtlsSession, addr: tuple) -> None:
        state = session.state
        if state == self.ESTABLISHED:
            waiting = self._pending.pop(addr, ())
            send = self.raw.sendto
            for data in waiting:
                send(session.send(data), addr)
        elif state in (self.FAILED, self.CLOSED):
            self._pending.pop(addr, None)
            if self.sessions.get(addr) is session:
                del self.sessions[addr]
            if state == self.FAILED:
                self._stats["dtls_handshake_failures"] += 1
                err = session.error
                error = HandshakeError(
                    f"DTLS with {_show(addr)} failed: {err if err is not None else 'unknown error'}"
                )
                if self.on_failure is not None:
                    self.on_failure(addr, error)

    def peer_timed_out(self, addr: tuple, since: float) -> None:
        """A request to ``addr`` got no answer: if nothing at all came from the
        peer since ``since``, its session is abandoned (the peer may have
        restarted and lost it), so the next request starts a new handshake."""
        if self.server is not None:
            return
        session = self.sessions.get(addr)
        if session is not None and session.state == self.ESTABLISHED:
            if session.last_active < since:
                del self.sessions[addr]
                self._stats["dtls_sessions_abandoned"] += 1

    def _credentials(self, addr: tuple) -> tuple[bytes, bytes]:
        creds = self.credentials.get(addr) or self.default_psk
        if creds is None:
            raise HandshakeError(f"no PSK configured for {_show(addr)} (Client(psk=...))")
        return creds

    # -- both roles ------------------------------------------------------------
    def sendto(self, data: bytes, peer: tuple) -> None:
        """Protect ``data`` for ``peer`` and queue it (client: after the handshake)."""
        if self.closed:
            return
        if self.server is not None:
            tag = peer[-1]
            session = tag.session
            if session.state == self.ESTABLISHED:
                self.raw.sendto(session.send(data), tag.addr)
            else:
                self._stats["dtls_send_dropped"] += 1
            return
        session = self.sessions.get(peer)
        if session is not None and session.state == self.ESTABLISHED:
            self.raw.sendto(session.send(data), peer)
            return
        if session is None:
            session = self._session_class(
                "client",
                psk=self._credentials(peer),
                mtu=self.mtu,
                now=monotonic(),
                bugs=self._bugs,
            )
            self.sessions[peer] = session
            session.start(monotonic())
            self._flush_session(session, peer)
            self._schedule.update(session, peer)
            self._arm()
        pending = self._pending.setdefault(peer, [])
        if len(pending) >= PENDING_LIMIT:
            del pending[0]
            self._stats["dtls_send_dropped"] += 1
        pending.append(data)

    def _arm(self) -> None:
        if self.server is not None:
            d = self.server.next_deadline()
        else:
            d = self._schedule.next_deadline()
        if d is not None:
            self._deadline.arm(d)

    def _on_timer(self) -> None:
        if self.closed:
            return
        now = monotonic()
        try:
            if self.server is not None:
                self.server.expire(now)
            else:
                for addr, s in list(self._schedule.due(now)):
                    before = s.state
                    s.expire(now)
                    self._flush_session(s, addr)
                    if s.state != before:
                        self._state_changed(s, addr)
                    self._schedule.update(s, addr)
        except Exception:  # noqa: BLE001 - the timer must outlive a bug
            self._internal_error(self._on_timer)
        self._after_engine()

    def close(self) -> None:
        """close_notify to every peer, then unregister from the backend."""
        if self.closed:
            return
        self.closed = True
        self._deadline.cancel()
        if self.server is not None:
            self.server.close()
            self._flush_server()
        else:
            for addr, s in self.sessions.items():
                if s.state == self.ESTABLISHED:
                    s.close()
                    self._flush_session(s, addr)
            self.sessions.clear()
            self._pending.clear()
        self.raw.close()


def _show(addr: tuple) -> str:
    host = addr[0]
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"


__all__ = ["DtlsChannel", "SecurePeer", "psk_lookup_from", "secure_identity"]
