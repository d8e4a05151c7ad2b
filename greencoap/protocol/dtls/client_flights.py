"""The client's half of the DTLS 1.2 PSK handshake (layer 2; RFC 6347 §4.2,
RFC 5246 §7.4, RFC 4279 §2): flights 1, 3 and 5 and what answers them.

A mixin of :class:`~greencoap.protocol.dtls.session.DtlsSession`; see that
module for the theory of operation.
"""

from __future__ import annotations

import hashlib
import hmac

from .alerts import (
    DECRYPT_ERROR,
    ILLEGAL_PARAMETER,
    PROTOCOL_VERSION,
    UNEXPECTED_MESSAGE,
    UNSUPPORTED_EXTENSION,
)
from .messages import (
    CLIENT_HELLO,
    CLIENT_KEY_EXCHANGE,
    EMPTY_RENEGOTIATION_INFO,
    EXT_EXTENDED_MASTER_SECRET,
    EXT_RENEGOTIATION_INFO,
    FINISHED,
    NULL_COMPRESSION,
    ClientHello,
    DecodeError,
    HelloVerifyRequest,
    ServerHello,
    decode_psk_identity,
    encode_message,
    encode_psk_identity,
)
from .prf import (
    verify_data,
)
from .record import (
    CHANGE_CIPHER_SPEC,
    DTLS_1_2,
    HANDSHAKE,
    ReplayWindow,
)
from .states import (
    C_WAIT_CCS,
    C_WAIT_HELLO_DONE,
    CCS_BODY,
    SUITE,
)


class ClientFlights:
    """Client role: sending ClientHello / flight 5, handling flights 2, 4 and 6."""

    def _send_client_hello(self, now: float) -> None:
        extensions = {}
        if self._offer_ems:
            extensions[EXT_EXTENDED_MASTER_SECRET] = b""
        extensions[EXT_RENEGOTIATION_INFO] = EMPTY_RENEGOTIATION_INFO
        body = ClientHello(
            version=DTLS_1_2,
            random=self.client_random,
            cookie=self._cookie,
            cipher_suites=SUITE.to_bytes(2, "big"),
            compression=bytes((NULL_COMPRESSION,)),
            extensions=extensions,
        ).encode()
        seq = self._next_msg_seq()
        self._ch_message = encode_message(CLIENT_HELLO, seq, body)
        self._new_flight([(HANDSHAKE, 0, (CLIENT_HELLO, seq, body))], now)

    def _on_hello_verify_request(self, seq: int, body: bytes, now: float) -> None:
        try:
            hvr = HelloVerifyRequest.decode(body)
        except DecodeError:
            self.stats["bad_records"] += 1
            return
        if not hvr.cookie or hvr.cookie == self._cookie:
            return  # a duplicate: our ClientHello with this cookie is on its way
        self._cookie = hvr.cookie
        self._hs.reset(seq + 1)
        # The HelloVerifyRequest came from a stateless server echoing our record
        # sequence number; the session that answers next numbers its records anew.
        self._window0 = ReplayWindow()
        self._send_client_hello(now)

    def _on_server_hello(self, seq: int, body: bytes, raw: bytes, now: float) -> None:
        hello = ServerHello.decode(body)
        if hello.version != DTLS_1_2:
            self._fail(
                PROTOCOL_VERSION,
                f"handshake failed: the server chose version {hello.version:#06x}, not DTLS 1.2",
            )
            return
        if hello.cipher_suite != SUITE or hello.compression != NULL_COMPRESSION:
            self._fail(
                ILLEGAL_PARAMETER,
                f"handshake failed: the server chose cipher suite {hello.cipher_suite:#06x} "
                f"compression {hello.compression}, not TLS_PSK_WITH_AES_128_CCM_8/null",
            )
            return
        ext = hello.extensions
        if not self._renegotiation_info_ok(ext):
            return
        if EXT_EXTENDED_MASTER_SECRET in ext and not self._offer_ems:
            self._fail(
                UNSUPPORTED_EXTENSION, "handshake failed: unsolicited extended_master_secret"
            )
            return
        self._ems = EXT_EXTENDED_MASTER_SECRET in ext
        self.server_random = hello.random
        self._transcript = hashlib.sha256(self._ch_message)
        self._transcript.update(raw)
        self._peer_flight_start = seq
        self._phase = C_WAIT_HELLO_DONE

    def _on_server_key_exchange(self, seq: int, body: bytes, raw: bytes, now: float) -> None:
        if self.peer_hint is not None:
            self._fail(UNEXPECTED_MESSAGE, "handshake failed: second ServerKeyExchange")
            return
        self.peer_hint = decode_psk_identity(body)
        self._transcript.update(raw)

    def _on_server_hello_done(self, seq: int, body: bytes, raw: bytes, now: float) -> None:
        if body:
            raise DecodeError("ServerHelloDone is not empty")
        self._transcript.update(raw)
        assert self._psk is not None
        identity, key = self._psk
        cke = encode_psk_identity(identity)
        cke_seq = self._next_msg_seq()
        self._transcript.update(encode_message(CLIENT_KEY_EXCHANGE, cke_seq, cke))
        self._derive_keys(key)
        fin_seq = self._next_msg_seq()
        fin = verify_data(self._master, b"client finished", self._transcript.digest())
        self._transcript.update(encode_message(FINISHED, fin_seq, fin))
        self._write_epoch = 1
        self._phase = C_WAIT_CCS
        self._new_flight(
            [
                (HANDSHAKE, 0, (CLIENT_KEY_EXCHANGE, cke_seq, cke)),
                (CHANGE_CIPHER_SPEC, 0, CCS_BODY),
                (HANDSHAKE, 1, (FINISHED, fin_seq, fin)),
            ],
            now,
        )

    def _on_server_finished(self, seq: int, body: bytes, raw: bytes, now: float) -> None:
        expected = verify_data(self._master, b"server finished", self._transcript.digest())
        if not hmac.compare_digest(body, expected):
            self._fail(DECRYPT_ERROR, "handshake failed: the server's Finished did not verify")
            return
        self._flight = None
        assert self._psk is not None
        self._established(self._psk[0])

    # server side
