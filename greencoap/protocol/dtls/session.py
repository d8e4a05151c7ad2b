"""One DTLS 1.2 PSK association, client or server role (layer 2; the handshake
of RFC 6347 §4.2 with RFC 5246 §7.4, RFC 4279 §2, RFC 7627 and RFC 5746;
retransmission per RFC 6347 §4.2.4; alerts per RFC 5246 §7.2).

Theory of operation
-------------------
The session is a sans-I/O state machine.  The caller feeds it datagrams
(:meth:`DtlsSession.receive`) and timer expiries (:meth:`DtlsSession.expire`)
with the current time, sends whatever it leaves in ``outbox`` and calls
``expire`` again at :meth:`DtlsSession.next_deadline`.  Application data is
returned by ``receive`` and protected by ``send``.  Nothing peer-controlled
raises: malformed, forged, replayed or misplaced records are dropped and
counted in ``stats``; a malformed or out-of-place handshake message is a
fatal alert to the peer and the session goes FAILED with ``error`` set.

The handshake, flight by flight (``*`` = only with an identity hint)::

    client                                   server
    ClientHello                 -->                         flight 1
                                <--   HelloVerifyRequest    flight 2 (DtlsServer, stateless)
    ClientHello + cookie        -->                         flight 3
                                      ServerHello
                                      ServerKeyExchange*
                                <--   ServerHelloDone       flight 4
    ClientKeyExchange
    ChangeCipherSpec
    Finished                    -->                         flight 5
                                      ChangeCipherSpec
                                <--   Finished              flight 6

The side that sent the last flight of an exchange step waits for the next
one under a timer that starts at 1 s and doubles up to 60 s; after
``MAX_RETRANSMITS`` retransmissions the handshake fails ("handshake timed
out").  Receiving again the last message of the peer's previous flight
(a message_seq already processed) means our flight was lost: we send it
again, once per repeated flight.  A server that cannot decrypt the client's
Finished (wrong PSK) and drops it silently — OpenSSL and GnuTLS do — shows
only by repeating its hello flight: after ``WRONG_KEY_REPEATS`` such repeats
the client gives up with a "wrong PSK?" error instead of waiting a minute.
The server keeps flight 6 after it is established, until application data
arrives from the client or ``FINAL_FLIGHT_RETENTION`` passes, so that a
repeated flight 5 can still be answered.

Handshake messages are taken strictly in message_seq order (see
:mod:`.reassembly`); the server numbers its messages from the message_seq of
the ClientHello it answers (as OpenSSL does), so a client expects the
ServerHello at the HelloVerifyRequest's message_seq + 1 (0 without one).
The transcript hash covers every message from the ClientHello that got the
ServerHello, with unfragmented DTLS headers.

Epoch 1 records that arrive before the peer's ChangeCipherSpec are kept (a
few) and processed once it arrives.  On the server, a handshake record at
epoch 1 that fails authentication while the client's Finished is due is
taken as the sign of a wrong PSK and ends the handshake with decrypt_error;
every other record that fails authentication is silently dropped and counted
(RFC 6347 §4.1.2.7), so a stray record never ends a client's handshake.
Established sessions take single-record application data on a fast path
(one header unpack, the replay check, one AES-CCM decryption).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Any

from .alerts import (
    CLOSE_NOTIFY,
    DECODE_ERROR,
    FATAL,
    HANDSHAKE_FAILURE,
    NO_RENEGOTIATION,
    UNEXPECTED_MESSAGE,
    WARNING,
    DtlsError,
    describe_received,
)
from .client_flights import ClientFlights
from .messages import (
    CLIENT_HELLO,
    CLIENT_KEY_EXCHANGE,
    EMPTY_RENEGOTIATION_INFO,
    EXT_RENEGOTIATION_INFO,
    FINISHED,
    HELLO_REQUEST,
    HELLO_VERIFY_REQUEST,
    SERVER_HELLO,
    SERVER_HELLO_DONE,
    SERVER_KEY_EXCHANGE,
    DecodeError,
    encode_message,
    parse_fragments,
)
from .prf import (
    extended_master_secret,
    key_block,
    master_secret,
    psk_premaster,
)
from .reassembly import ACCEPTED, OLD, FlightItem, HandshakeBuffer, PlainRecord, layout_flight
from .record import (
    ALERT,
    APPLICATION_DATA,
    CHANGE_CIPHER_SPEC,
    DTLS_1_2,
    HANDSHAKE,
    HEADER,
    MAX_PLAINTEXT,
    MAX_SEQ,
    SEQ_MASK,
    Record,
    RecordCipher,
    ReplayWindow,
    encode_plain,
    parse_records,
    record_cipher,
)
from .server_flights import ServerFlights
from .states import (
    C_IDLE,
    C_WAIT_CCS,
    C_WAIT_FINISHED,
    C_WAIT_HELLO_DONE,
    C_WAIT_SERVER_HELLO,
    CCS_BODY,
    CLOSED,
    DONE,
    EPOCH_1,
    ESTABLISHED,
    FAILED,
    FLIGHT_ENDS,
    HANDSHAKING,
    S_WAIT_CCS,
    S_WAIT_CLIENT_HELLO,
    S_WAIT_FINISHED,
    S_WAIT_KEY_EXCHANGE,
    STAT_NAMES,
    BugLog,
    State,
)

_unpack_header = HEADER.unpack_from


class DtlsSession(ClientFlights, ServerFlights):
    """One DTLS association with one peer, either role."""

    RTO_INITIAL = 1.0  # RFC 6347 §4.2.4.1
    RTO_MAX = 60.0
    MAX_RETRANSMITS = 5  # 1+2+4+8+16+32 s: the handshake fails 63 s after the flight
    FINAL_FLIGHT_RETENTION = 64.0  # server: how long flight 6 is kept for retransmission
    MAX_EARLY_RECORDS = 8  # epoch-1 records kept while the peer's CCS is missing
    WRONG_KEY_REPEATS = 3  # client: server hello flight repeats before "wrong PSK?"

    def __init__(
        self,
        role: str,
        *,
        psk: tuple[bytes, bytes] | None = None,
        psk_lookup: Callable[[bytes], bytes | None] | None = None,
        hint: bytes = b"",
        mtu: int = 1200,
        randbytes: Callable[[int], bytes] = os.urandom,
        now: float = 0.0,
        idle_timeout: float | None = None,
        extended_master_secret: bool = True,
        bugs: BugLog | None = None,
    ) -> None:
        """``idle_timeout`` (added): close the session after that long without a
        valid record from the peer (None: never).  ``extended_master_secret``
        (added): whether a client offers RFC 7627 (tests turn it off).
        ``bugs`` collects the exceptions caught at the public boundary (a
        server shares one among its sessions)."""
        if role not in ("client", "server"):
            raise ValueError(f"role must be 'client' or 'server', not {role!r}")
        if role == "client" and psk is None:
            raise ValueError("a client session needs psk=(identity, key)")
        if psk is not None and not (
            len(psk) == 2 and all(isinstance(x, (bytes, bytearray)) for x in psk)
        ):
            raise TypeError("psk must be (identity, key) as bytes")
        if role == "server" and psk_lookup is None:
            raise ValueError("a server session needs psk_lookup")
        self.role = role
        self.is_client = role == "client"
        #: exceptions caught at the public boundary, for the I/O layer to report
        self.bugs = bugs if bugs is not None else BugLog()
        self.state: State = HANDSHAKING
        self.identity: bytes | None = None
        self.error: DtlsError | None = None
        self.outbox: list[bytes] = []
        self.last_active = now
        self.stats: dict[str, int] = dict.fromkeys(STAT_NAMES, 0)
        self.peer_hint: bytes | None = None  # client: the server's identity hint, if sent
        self.uses_extended_master_secret = False
        self.client_random = b""
        self.server_random = b""
        #: free for the caller: e.g. the peer handle the I/O layer hands upward
        self.user_tag: Any = None

        self._psk = psk
        self._psk_lookup = psk_lookup
        self._hint = hint
        self._mtu = mtu
        self._randbytes = randbytes
        self._idle_timeout = idle_timeout
        self._offer_ems = extended_master_secret

        self._phase = C_IDLE if self.is_client else S_WAIT_CLIENT_HELLO
        self._hs = HandshakeBuffer(0 if self.is_client else None)
        self._transcript = hashlib.sha256()
        self._msg_seq = 0  # next outgoing message_seq
        self._peer_flight_start: int | None = None  # first message_seq of the peer's last flight
        self._ch_message = b""  # client: the current ClientHello, as hashed
        self._cookie = b""
        self._pending_identity: bytes | None = None
        self._master = b""
        self._ems = False

        self._seq0 = 0  # next record sequence number, epoch 0
        self._seq1 = 0  # ... epoch 1
        self._write_epoch = 0
        self._read_epoch = 0
        self._window0 = ReplayWindow()
        self._window1 = ReplayWindow()
        self._write_cipher: RecordCipher | None = None
        self._read_cipher: RecordCipher | None = None  # epoch 1, once the peer's CCS arrived
        self._pending_read: RecordCipher | None = None  # epoch 1 keys waiting for that CCS
        self._early: list[Record] = []

        self._flight: list[list[PlainRecord]] | None = None  # our last flight, laid out
        self._timer_at: float | None = None
        self._rto = self.RTO_INITIAL
        self._tries = 0
        self._retain_until: float | None = None
        self._stale = False  # a peer retransmission seen in this receive() call
        self._reneg_refused: int | None = None
        self._server_repeats = 0  # client: hello flight repeats seen after our Finished
        self._sched: float | None = None  # owned by a SessionSchedule: the deadline it holds

    def __repr__(self) -> str:
        return f"<DtlsSession {self.role} {self.state.name}>"

    # ------------------------------------------------------------------ public API

    def start(self, now: float) -> None:
        """Client: queue the ClientHello in ``outbox`` and arm the timer."""
        if not self.is_client:
            raise DtlsError("only a client session starts a handshake")
        if self._phase != C_IDLE:
            return
        self.last_active = now
        self.client_random = self._randbytes(32)
        self._phase = C_WAIT_SERVER_HELLO
        self._send_client_hello(now)

    def receive(self, datagram: bytes, now: float) -> list[bytes]:
        """Process one datagram from the peer; return the application data
        records it carried (decrypted).  Anything to send goes to ``outbox``."""
        if self.state is ESTABLISHED and datagram[:1] == b"\x17":
            fast = self._receive_application_data(datagram, now)
            if fast is not None:
                return fast
        try:
            return self._receive(datagram, now)
        except Exception as e:  # a bug: peer input must never escape the engine
            self._internal_error(e)
            return []

    def send(self, data: bytes) -> bytes:
        """Protect ``data`` as one application_data record; return the datagram."""
        if self.state is not ESTABLISHED:
            raise DtlsError(f"cannot send: the DTLS session is {self.state.name.lower()}")
        seq = self._seq1
        n = len(data)
        if seq >= MAX_SEQ or n > MAX_PLAINTEXT:
            raise DtlsError(
                "record sequence numbers exhausted"
                if seq >= MAX_SEQ
                else f"{n} bytes do not fit in one record"
            )
        self._seq1 = seq + 1
        stats = self.stats
        stats["records_out"] += 1
        stats["app_records_out"] += 1
        return self._write_cipher.seal(APPLICATION_DATA, EPOCH_1 | seq, data)  # type: ignore[union-attr]

    def close(self) -> None:
        """Queue a close_notify (when the handshake has begun) and go CLOSED."""
        if self.state is HANDSHAKING and self._phase != C_IDLE or self.state is ESTABLISHED:
            try:
                self._send_alert(WARNING, CLOSE_NOTIFY)
            except Exception as e:
                self._internal_error(e)
        if self.state is not FAILED:
            self.state = CLOSED
        self._stop()

    def next_deadline(self) -> float | None:
        """When :meth:`expire` must run next (retransmission, flight retention,
        idle expiry), or None."""
        if self.state is CLOSED or self.state is FAILED:
            return None
        d = self._timer_at
        r = self._retain_until
        if r is not None and (d is None or r < d):
            d = r
        if self._idle_timeout is not None:
            i = self.last_active + self._idle_timeout
            if d is None or i < d:
                d = i
        return d

    def expire(self, now: float) -> None:
        """Retransmit a due flight, give up on the handshake, drop the retained
        final flight or close an idle session, as their times have come."""
        try:
            self._expire(now)
        except Exception as e:
            self._internal_error(e)

    def _internal_error(self, exc: BaseException) -> None:
        """A bug caught at the boundary: counted, and kept for reporting."""
        self.stats["internal_errors"] += 1
        self.bugs.add(exc)

    # ------------------------------------------------------------------ records

    def _receive(self, datagram: bytes, now: float) -> list[bytes]:
        if self.state is CLOSED or self.state is FAILED:
            return []
        if self._phase == C_IDLE:  # a client that has not started expects nothing
            self.stats["unexpected_records"] += 1
            return []
        records, ok = parse_records(datagram)
        if not ok or not records:
            self.stats["bad_records"] += 1
        out: list[bytes] = []
        self._stale = False
        for rec in records:
            self._on_record(rec, now, out)
            if self.state is CLOSED or self.state is FAILED:
                break
        if self._stale:
            self._stale = False
            self._on_peer_repeated_flight()
        return out

    def _receive_application_data(self, datagram: bytes, now: float) -> list[bytes] | None:
        """The hot path: a datagram that is exactly one new epoch-1
        application_data record (:meth:`RecordCipher.open_record`); None sends
        anything else down the general path (which counts replays)."""
        if self._retain_until is not None:
            return None
        plain = self._read_cipher.open_record(datagram, 1, self._window1)  # type: ignore[union-attr]
        if plain is None:
            return None
        stats = self.stats
        stats["records_in"] += 1
        if plain is False:
            stats["auth_failures"] += 1
            return []
        self.last_active = now
        stats["app_records_in"] += 1
        return [plain]

    def _on_peer_repeated_flight(self) -> None:
        """The peer sent its previous flight again: ours did not get through."""
        if self._flight is None or self.state is FAILED:
            return
        if self._phase == C_WAIT_CCS:
            # A server that cannot decrypt our Finished (OpenSSL, GnuTLS) drops it
            # silently and keeps repeating its hello flight.  After a few rounds
            # that is far likelier a wrong key than loss.
            self._server_repeats += 1
            if self._server_repeats >= self.WRONG_KEY_REPEATS:
                self._set_failed(
                    DtlsError(
                        "handshake failed: the server repeated its hello flight "
                        f"{self._server_repeats} times and never accepted our Finished "
                        "— wrong PSK?"
                    )
                )
                return
        self.stats["retransmits"] += 1
        self._transmit()

    def _on_record(self, rec: Record, now: float, out: list[bytes]) -> None:
        ctype, version, es, fragment = rec
        stats = self.stats
        stats["records_in"] += 1
        epoch = es >> 48
        seq = es & SEQ_MASK
        if epoch == 1 and self._read_cipher is not None:
            window = self._window1
            if not window.check(seq):
                stats["replays"] += 1
                return
            plain = self._read_cipher.open(ctype, version, es, fragment)
            if plain is None:
                stats["auth_failures"] += 1
                # dropped silently (RFC 6347 §4.1.2.7), except the one record that
                # tells a wrong key: a handshake record (the client's Finished)
                # while the server waits for it; a stray record (an old
                # association's, a forger's) never ends a client's handshake
                if self._phase == S_WAIT_FINISHED and ctype == HANDSHAKE:
                    self._fail_wrong_key()
                return
            window.update(seq)
        elif epoch == 0:
            if self._read_epoch and ctype != HANDSHAKE and ctype != CHANGE_CIPHER_SPEC:
                stats["wrong_epoch"] += 1  # only handshake retransmissions linger in epoch 0
                return
            if not self._window0.check(seq):
                stats["replays"] += 1
                return
            self._window0.update(seq)
            plain = fragment
        elif epoch == 1 and self.state is HANDSHAKING and len(self._early) < self.MAX_EARLY_RECORDS:
            stats["records_in"] -= 1  # counted when processed
            stats["early_records"] += 1
            self._early.append(rec)
            return
        else:
            stats["wrong_epoch"] += 1
            return
        if epoch or self.state is HANDSHAKING:  # unauthenticated records keep nothing alive
            self.last_active = now
        if ctype == APPLICATION_DATA:
            if epoch == 1 and self.state is ESTABLISHED:
                out.append(plain)
                stats["app_records_in"] += 1
                if self._retain_until is not None:  # the client is surely established
                    self._retain_until = None
                    self._flight = None
            else:
                stats["unexpected_records"] += 1
        elif ctype == HANDSHAKE:
            self._on_handshake(plain, epoch, now)
        elif ctype == CHANGE_CIPHER_SPEC:
            self._on_change_cipher_spec(plain, epoch, now, out)
        else:
            self._on_alert(plain)

    def _seal(self, ctype: int, epoch: int, payload: bytes) -> bytes:
        self.stats["records_out"] += 1
        if epoch == 0:
            seq = self._seq0
            self._seq0 = seq + 1
            return encode_plain(ctype, DTLS_1_2, seq, payload)
        seq = self._seq1
        self._seq1 = seq + 1
        assert self._write_cipher is not None
        return self._write_cipher.seal(ctype, EPOCH_1 | seq, payload)

    def _send_alert(self, level: int, description: int) -> None:
        self.stats["alerts_out"] += 1
        self.outbox.append(self._seal(ALERT, self._write_epoch, bytes((level, description))))

    def _on_alert(self, plain: bytes) -> None:
        if len(plain) != 2:
            self.stats["bad_records"] += 1
            return
        self.stats["alerts_in"] += 1
        level, description = plain[0], plain[1]
        if description == CLOSE_NOTIFY:
            if self.state is ESTABLISHED:
                self._send_alert(WARNING, CLOSE_NOTIFY)  # answer in kind (RFC 5246 §7.2.1)
                self.state = CLOSED
                self._stop()
            else:
                hint = " — wrong PSK?" if self._phase == C_WAIT_CCS else ""
                self._set_failed(
                    DtlsError(f"handshake failed: peer sent close_notify{hint}", CLOSE_NOTIFY)
                )
        elif level == FATAL:
            during = self.state is HANDSHAKING
            self._set_failed(DtlsError(describe_received(description, during), description))
        # warnings (no_renegotiation, user_canceled, ...) call for nothing

    def _on_change_cipher_spec(
        self, plain: bytes, epoch: int, now: float, out: list[bytes]
    ) -> None:
        if plain != CCS_BODY or epoch != 0:
            self.stats["bad_records"] += 1
            return
        if self._phase != C_WAIT_CCS and self._phase != S_WAIT_CCS:
            return  # a retransmitted or premature CCS: the flight will come again
        self._read_cipher = self._pending_read
        self._read_epoch = 1
        self._phase += 1  # -> C_WAIT_FINISHED / S_WAIT_FINISHED
        early, self._early = self._early, []
        for rec in early:
            self._on_record(rec, now, out)
            if self.state is not HANDSHAKING:
                break

    # ------------------------------------------------------------------ handshake

    def _on_handshake(self, plain: bytes, epoch: int, now: float) -> None:
        try:
            fragments = parse_fragments(plain)
        except DecodeError:
            self.stats["bad_records"] += 1
            return
        hs = self._hs
        for msg_type, length, seq, offset, data in fragments:
            if self.state is not HANDSHAKING:
                if self.state is ESTABLISHED:
                    self._on_handshake_established(msg_type, seq, offset, epoch)
                    continue
                return
            if (
                msg_type == HELLO_VERIFY_REQUEST
                and self._phase == C_WAIT_SERVER_HELLO
                and epoch == 0
                and offset == 0
                and len(data) == length
            ):
                self._on_hello_verify_request(seq, data, now)
                continue
            if hs.next_seq is None and msg_type != CLIENT_HELLO:
                self.stats["unexpected_records"] += 1
                continue
            status = hs.add(msg_type, length, seq, offset, data, epoch)
            if status == OLD:
                self._check_repeat(msg_type, seq, offset)
                continue
            if status != ACCEPTED:
                self.stats["unexpected_records"] += 1
                continue
            while self.state is HANDSHAKING:
                message = hs.pop()
                if message is None:
                    break
                self._on_message(*message, now)

    def _on_handshake_established(self, msg_type: int, seq: int, offset: int, epoch: int) -> None:
        next_seq = self._hs.next_seq or 0
        if seq < next_seq:
            self._check_repeat(msg_type, seq, offset)  # the client lost our flight 6?
            return
        renegotiation = HELLO_REQUEST if self.is_client else CLIENT_HELLO
        if epoch >= 1 and offset == 0 and msg_type == renegotiation:
            if self._reneg_refused != seq:  # once per attempt, not per fragment copy
                self._reneg_refused = seq
                self._send_alert(WARNING, NO_RENEGOTIATION)
            return
        self.stats["unexpected_records"] += 1

    def _check_repeat(self, msg_type: int, seq: int, offset: int) -> None:
        # A message already processed: if it ends the peer's previous flight, the
        # whole flight is being retransmitted (answer once per flight, not per
        # datagram or fragment, so a flight split in three does not get three).
        start = self._peer_flight_start
        if offset == 0 and msg_type in FLIGHT_ENDS and start is not None and seq >= start:
            self._stale = True

    def _on_message(self, msg_type: int, seq: int, body: bytes, epoch: int, now: float) -> None:
        if msg_type == HELLO_REQUEST:
            return  # ignored during a handshake (RFC 5246 §7.4.1.1)
        handler = _HANDLERS.get((self._phase, msg_type))
        if handler is None or epoch != (1 if msg_type == FINISHED else 0):
            self._fail(UNEXPECTED_MESSAGE, f"handshake failed: unexpected message type {msg_type}")
            return
        try:
            handler(self, seq, body, encode_message(msg_type, seq, body), now)
        except DecodeError as e:
            self._fail(DECODE_ERROR, f"handshake failed: malformed message type {msg_type}: {e}")

    def _next_msg_seq(self) -> int:
        seq = self._msg_seq
        self._msg_seq = seq + 1
        return seq

    def _derive_keys(self, psk: bytes) -> None:
        premaster = psk_premaster(psk)
        cr, sr = self.client_random, self.server_random
        if self._ems:
            self._master = extended_master_secret(premaster, self._transcript.digest())
        else:
            self._master = master_secret(premaster, cr, sr)
        kb = key_block(self._master, cr, sr)
        client = record_cipher(kb.client_key, kb.client_iv)
        server = record_cipher(kb.server_key, kb.server_iv)
        write, read = (client, server) if self.is_client else (server, client)
        self._write_cipher = write
        self._pending_read = read

    def _established(self, identity: bytes | None) -> None:
        self.identity = identity
        self.state = ESTABLISHED
        self._phase = DONE
        self._timer_at = None
        self._early = []
        self._hs.reset(self._hs.next_seq)
        self.uses_extended_master_secret = self._ems

    # client side

    # ------------------------------------------------------------------ flights, timers, failure

    def _new_flight(self, items: list[FlightItem], now: float, timer: bool = True) -> None:
        self._flight = layout_flight(items, self._mtu)
        self._rto = self.RTO_INITIAL
        self._tries = 0
        self._timer_at = now + self._rto if timer else None
        self._transmit()

    def _transmit(self) -> None:
        assert self._flight is not None
        seal = self._seal
        for datagram in self._flight:
            self.outbox.append(b"".join([seal(c, e, p) for c, e, p in datagram]))

    def _expire(self, now: float) -> None:
        if self.state is CLOSED or self.state is FAILED:
            return
        if self._timer_at is not None and now >= self._timer_at:
            if self._tries >= self.MAX_RETRANSMITS:
                self._set_failed(DtlsError(self._timeout_message()))
                return
            self._tries += 1
            self._rto = min(self._rto * 2, self.RTO_MAX)
            self._timer_at = now + self._rto
            self.stats["retransmits"] += 1
            self._transmit()
        if self._retain_until is not None and now >= self._retain_until:
            self._retain_until = None
            self._flight = None
        if self._idle_timeout is not None and now >= self.last_active + self._idle_timeout:
            if self.state is ESTABLISHED:
                self.close()
            else:
                self._set_failed(DtlsError("handshake abandoned: the peer went idle"))

    def _timeout_message(self) -> str:
        if self._phase == C_WAIT_SERVER_HELLO:
            return "handshake timed out: no answer from the server"
        if self._phase == C_WAIT_CCS and self.stats["records_in"]:
            # OpenSSL and GnuTLS servers drop a Finished they cannot decrypt.
            return "handshake timed out waiting for the server's Finished — wrong PSK?"
        return "handshake timed out"

    def _renegotiation_info_ok(self, ext: dict[int, bytes]) -> bool:
        """RFC 5746 on a first handshake: renegotiation_info, if present, is empty."""
        reneg = ext.get(EXT_RENEGOTIATION_INFO)
        if reneg is not None and reneg != EMPTY_RENEGOTIATION_INFO:
            self._fail(HANDSHAKE_FAILURE, "handshake failed: non-empty renegotiation_info")
            return False
        return True

    def _fail(self, alert: int | None, message: str) -> None:
        """A fatal condition on our side: tell the peer, then FAILED."""
        if alert is not None:
            self._send_alert(FATAL, alert)
        self._set_failed(DtlsError(message, alert))

    def _set_failed(self, error: DtlsError) -> None:
        self.state = FAILED
        self.error = error
        self._phase = DONE
        self._stop()

    def _stop(self) -> None:
        self._flight = None
        self._timer_at = None
        self._retain_until = None
        self._early = []


_HANDLERS: dict[tuple[int, int], Callable[[DtlsSession, int, bytes, bytes, float], None]] = {
    (C_WAIT_SERVER_HELLO, SERVER_HELLO): DtlsSession._on_server_hello,
    (C_WAIT_HELLO_DONE, SERVER_KEY_EXCHANGE): DtlsSession._on_server_key_exchange,
    (C_WAIT_HELLO_DONE, SERVER_HELLO_DONE): DtlsSession._on_server_hello_done,
    (C_WAIT_FINISHED, FINISHED): DtlsSession._on_server_finished,
    (S_WAIT_CLIENT_HELLO, CLIENT_HELLO): DtlsSession._on_client_hello,
    (S_WAIT_KEY_EXCHANGE, CLIENT_KEY_EXCHANGE): DtlsSession._on_client_key_exchange,
    (S_WAIT_FINISHED, FINISHED): DtlsSession._on_client_finished,
}
