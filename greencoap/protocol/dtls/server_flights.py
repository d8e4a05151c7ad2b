"""The server's half of the DTLS 1.2 PSK handshake (layer 2; RFC 6347 §4.2,
RFC 5246 §7.4, RFC 4279 §2): answering ClientHello with flight 4 and the
client's flight 5 with flight 6.

A mixin of :class:`~greencoap.protocol.dtls.session.DtlsSession`; see that
module for the theory of operation.
"""

from __future__ import annotations

import hashlib
import hmac

from .alerts import (
    DECRYPT_ERROR,
    HANDSHAKE_FAILURE,
    INTERNAL_ERROR,
    PROTOCOL_VERSION,
    UNKNOWN_PSK_IDENTITY,
)
from .messages import (
    EMPTY_RENEGOTIATION_INFO,
    EXT_EXTENDED_MASTER_SECRET,
    EXT_RENEGOTIATION_INFO,
    FINISHED,
    NULL_COMPRESSION,
    SERVER_HELLO,
    SERVER_HELLO_DONE,
    SERVER_KEY_EXCHANGE,
    TLS_EMPTY_RENEGOTIATION_INFO_SCSV,
    ClientHello,
    ServerHello,
    decode_psk_identity,
    encode_message,
    encode_psk_identity,
)
from .prf import (
    verify_data,
)
from .reassembly import FlightItem
from .record import (
    CHANGE_CIPHER_SPEC,
    DTLS_1_2,
    HANDSHAKE,
)
from .states import (
    CCS_BODY,
    S_WAIT_CCS,
    S_WAIT_KEY_EXCHANGE,
    SUITE,
    show_identity,
)


class ServerFlights:
    """Server role: handling ClientHello, ClientKeyExchange and Finished."""

    def _on_client_hello(self, seq: int, body: bytes, raw: bytes, now: float) -> None:
        hello = ClientHello.decode(body)
        if hello.version >> 8 != 0xFE or hello.version > DTLS_1_2:
            self._fail(
                PROTOCOL_VERSION,
                f"handshake failed: the client offers version {hello.version:#06x}, "
                "DTLS 1.2 is required",
            )
            return
        suites = hello.suites()
        if SUITE not in suites or NULL_COMPRESSION not in hello.compression:
            self._fail(
                HANDSHAKE_FAILURE,
                "handshake failed: the client does not offer TLS_PSK_WITH_AES_128_CCM_8 "
                "with null compression",
            )
            return
        ext = hello.extensions
        if not self._renegotiation_info_ok(ext):
            return
        self._ems = EXT_EXTENDED_MASTER_SECRET in ext
        self.client_random = hello.random
        self.server_random = self._randbytes(32)
        self._transcript = hashlib.sha256(raw)
        self._peer_flight_start = seq
        self._msg_seq = seq  # number our messages from the ClientHello's, as OpenSSL does
        reply_ext = {}
        if EXT_RENEGOTIATION_INFO in ext or TLS_EMPTY_RENEGOTIATION_INFO_SCSV in suites:
            reply_ext[EXT_RENEGOTIATION_INFO] = EMPTY_RENEGOTIATION_INFO
        if self._ems:
            reply_ext[EXT_EXTENDED_MASTER_SECRET] = b""
        messages = [
            (
                SERVER_HELLO,
                ServerHello(DTLS_1_2, self.server_random, b"", SUITE, 0, reply_ext).encode(),
            )
        ]
        if self._hint:
            messages.append((SERVER_KEY_EXCHANGE, encode_psk_identity(self._hint)))
        messages.append((SERVER_HELLO_DONE, b""))
        items: list[FlightItem] = []
        for msg_type, msg_body in messages:
            s = self._next_msg_seq()
            self._transcript.update(encode_message(msg_type, s, msg_body))
            items.append((HANDSHAKE, 0, (msg_type, s, msg_body)))
        self._phase = S_WAIT_KEY_EXCHANGE
        self._new_flight(items, now)

    def _on_client_key_exchange(self, seq: int, body: bytes, raw: bytes, now: float) -> None:
        identity = decode_psk_identity(body)
        self._transcript.update(raw)
        self._peer_flight_start = seq
        assert self._psk_lookup is not None
        try:
            key = self._psk_lookup(identity)
        except Exception as e:
            self._fail(INTERNAL_ERROR, f"handshake failed: psk_lookup raised {e!r}")
            return
        if key is None:
            self._fail(UNKNOWN_PSK_IDENTITY, f"unknown PSK identity {show_identity(identity)}")
            return
        self._pending_identity = identity
        self._derive_keys(key)
        self._phase = S_WAIT_CCS

    def _on_client_finished(self, seq: int, body: bytes, raw: bytes, now: float) -> None:
        expected = verify_data(self._master, b"client finished", self._transcript.digest())
        if not hmac.compare_digest(body, expected):
            self._fail(
                DECRYPT_ERROR,
                "handshake failed: the client's Finished did not verify — wrong PSK for "
                f"identity {show_identity(self._pending_identity or b'')}?",
            )
            return
        self._transcript.update(raw)
        fin_seq = self._next_msg_seq()
        fin = verify_data(self._master, b"server finished", self._transcript.digest())
        self._write_epoch = 1
        self._new_flight(
            [(CHANGE_CIPHER_SPEC, 0, CCS_BODY), (HANDSHAKE, 1, (FINISHED, fin_seq, fin))],
            now,
            timer=False,
        )
        self._retain_until = now + self.FINAL_FLIGHT_RETENTION
        self._established(self._pending_identity)

    def _fail_wrong_key(self) -> None:
        """Server: the client's Finished did not decrypt (decrypt_error, RFC 4279 §2)."""
        message = (
            "handshake failed: the client's Finished did not decrypt — wrong PSK for "
            f"identity {show_identity(self._pending_identity or b'')}?"
        )
        self._fail(DECRYPT_ERROR, message)
