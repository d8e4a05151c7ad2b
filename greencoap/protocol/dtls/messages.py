"""DTLS 1.2 handshake messages for a PSK handshake (layer 2; RFC 6347 §4.2.2
and §4.3.2, RFC 5246 §7.4, RFC 4279 §2, extensions per RFC 7627 and RFC 5746).

Every handshake message travels behind a 12-byte header
``msg_type(1) length(3) message_seq(2) fragment_offset(3) fragment_length(3)``;
:func:`parse_fragments` splits a handshake record into such fragments and
:func:`encode_header` writes one.  The bodies are encoded and decoded by small
dataclasses; decoding is strict and raises :class:`DecodeError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

HELLO_REQUEST = 0
CLIENT_HELLO = 1
SERVER_HELLO = 2
HELLO_VERIFY_REQUEST = 3
SERVER_KEY_EXCHANGE = 12
SERVER_HELLO_DONE = 14
CLIENT_KEY_EXCHANGE = 16
FINISHED = 20

TLS_PSK_WITH_AES_128_CCM_8 = 0xC0A8
TLS_EMPTY_RENEGOTIATION_INFO_SCSV = 0x00FF
NULL_COMPRESSION = 0

EXT_EXTENDED_MASTER_SECRET = 23  # RFC 7627
EXT_RENEGOTIATION_INFO = 0xFF01  # RFC 5746
EMPTY_RENEGOTIATION_INFO = b"\x00"  # renegotiated_connection<0..255> = empty

HANDSHAKE_HEADER_LENGTH = 12
MAX_MESSAGE_LENGTH = 1 << 14  # far above anything a PSK handshake needs


class DecodeError(ValueError):
    """A handshake message or fragment is malformed (becomes decode_error)."""


Fragment = tuple[int, int, int, int, bytes]  # (msg_type, length, message_seq, offset, data)


def encode_header(msg_type: int, length: int, seq: int, offset: int, frag_length: int) -> bytes:
    """The 12-byte DTLS handshake header."""
    return bytes((msg_type,)) + _pack_rest(length, seq, offset, frag_length)


def _pack_rest(length: int, seq: int, offset: int, frag_length: int) -> bytes:
    return (
        length.to_bytes(3, "big")
        + seq.to_bytes(2, "big")
        + offset.to_bytes(3, "big")
        + frag_length.to_bytes(3, "big")
    )


def encode_message(msg_type: int, seq: int, body: bytes) -> bytes:
    """A whole (unfragmented) handshake message, as it enters the transcript."""
    n = len(body)
    return bytes((msg_type,)) + _pack_rest(n, seq, 0, n) + body


def parse_fragments(payload: bytes) -> list[Fragment]:
    """Split the payload of a handshake record into fragments."""
    frags: list[Fragment] = []
    pos, end = 0, len(payload)
    while pos < end:
        if end - pos < HANDSHAKE_HEADER_LENGTH:
            raise DecodeError("truncated handshake header")
        h = payload[pos : pos + HANDSHAKE_HEADER_LENGTH]
        msg_type = h[0]
        length = int.from_bytes(h[1:4], "big")
        seq = int.from_bytes(h[4:6], "big")
        offset = int.from_bytes(h[6:9], "big")
        flen = int.from_bytes(h[9:12], "big")
        pos += HANDSHAKE_HEADER_LENGTH
        if offset + flen > length or pos + flen > end:
            raise DecodeError("handshake fragment runs past its message or record")
        if length > MAX_MESSAGE_LENGTH:
            raise DecodeError(f"handshake message of {length} bytes is too long")
        frags.append((msg_type, length, seq, offset, payload[pos : pos + flen]))
        pos += flen
    return frags


class Reader:
    """A cursor over a message body with the TLS vector readers."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        """The next ``n`` bytes."""
        end = self.pos + n
        if end > len(self.data):
            raise DecodeError("message truncated")
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def uint(self, n: int) -> int:
        """An n-byte big-endian unsigned integer."""
        return int.from_bytes(self.take(n), "big")

    def vector(self, length_bytes: int, maximum: int, minimum: int = 0) -> bytes:
        """A variable-length vector ``<minimum..maximum>``."""
        n = self.uint(length_bytes)
        if not minimum <= n <= maximum:
            raise DecodeError(f"vector length {n} outside {minimum}..{maximum}")
        return self.take(n)

    def remaining(self) -> int:
        """How many bytes are left."""
        return len(self.data) - self.pos

    def end(self) -> None:
        """Fail when bytes are left over."""
        if self.pos != len(self.data):
            raise DecodeError("trailing bytes after the message")


def vec(data: bytes, length_bytes: int) -> bytes:
    """Encode a TLS vector with a ``length_bytes`` length prefix."""
    return len(data).to_bytes(length_bytes, "big") + data


def decode_extensions(r: Reader) -> dict[int, bytes]:
    """The optional extensions block at the end of a hello (RFC 5246 §7.4.1.4)."""
    ext: dict[int, bytes] = {}
    if r.remaining() == 0:
        return ext
    block = Reader(r.vector(2, 0xFFFF))
    r.end()
    while block.remaining():
        etype = block.uint(2)
        data = block.vector(2, 0xFFFF)
        if etype in ext:
            raise DecodeError(f"duplicate extension {etype}")
        ext[etype] = data
    return ext


def encode_extensions(ext: dict[int, bytes]) -> bytes:
    """The extensions block, omitted entirely when there are none."""
    if not ext:
        return b""
    return vec(b"".join(t.to_bytes(2, "big") + vec(d, 2) for t, d in ext.items()), 2)


@dataclass
class ClientHello:
    """ClientHello with the DTLS cookie (RFC 6347 §4.2.1)."""

    version: int
    random: bytes
    session_id: bytes = b""
    cookie: bytes = b""
    cipher_suites: bytes = b""  # raw 2-byte values, kept raw for the cookie MAC
    compression: bytes = b"\x00"
    extensions: dict[int, bytes] = field(default_factory=dict)

    def suites(self) -> list[int]:
        """The offered cipher suites as integers."""
        s = self.cipher_suites
        return [int.from_bytes(s[i : i + 2], "big") for i in range(0, len(s), 2)]

    def encode(self) -> bytes:
        """The message body."""
        return (
            self.version.to_bytes(2, "big")
            + self.random
            + vec(self.session_id, 1)
            + vec(self.cookie, 1)
            + vec(self.cipher_suites, 2)
            + vec(self.compression, 1)
            + encode_extensions(self.extensions)
        )

    @classmethod
    def decode(cls, body: bytes) -> ClientHello:
        """Parse a ClientHello body."""
        r = Reader(body)
        version = r.uint(2)
        random = r.take(32)
        session_id = r.vector(1, 32)
        cookie = r.vector(1, 255)
        suites = r.vector(2, 0xFFFE, 2)
        if len(suites) % 2:
            raise DecodeError("odd cipher_suites length")
        compression = r.vector(1, 255, 1)
        ext = decode_extensions(r)
        return cls(version, random, session_id, cookie, suites, compression, ext)


@dataclass
class ServerHello:
    """ServerHello (RFC 5246 §7.4.1.3)."""

    version: int
    random: bytes
    session_id: bytes = b""
    cipher_suite: int = TLS_PSK_WITH_AES_128_CCM_8
    compression: int = NULL_COMPRESSION
    extensions: dict[int, bytes] = field(default_factory=dict)

    def encode(self) -> bytes:
        """The message body."""
        return (
            self.version.to_bytes(2, "big")
            + self.random
            + vec(self.session_id, 1)
            + self.cipher_suite.to_bytes(2, "big")
            + bytes((self.compression,))
            + encode_extensions(self.extensions)
        )

    @classmethod
    def decode(cls, body: bytes) -> ServerHello:
        """Parse a ServerHello body."""
        r = Reader(body)
        version = r.uint(2)
        random = r.take(32)
        session_id = r.vector(1, 32)
        suite = r.uint(2)
        compression = r.uint(1)
        ext = decode_extensions(r)
        return cls(version, random, session_id, suite, compression, ext)


@dataclass
class HelloVerifyRequest:
    """HelloVerifyRequest (RFC 6347 §4.2.1); servers put DTLS 1.0 in it."""

    version: int
    cookie: bytes

    def encode(self) -> bytes:
        """The message body."""
        return self.version.to_bytes(2, "big") + vec(self.cookie, 1)

    @classmethod
    def decode(cls, body: bytes) -> HelloVerifyRequest:
        """Parse a HelloVerifyRequest body."""
        r = Reader(body)
        version = r.uint(2)
        cookie = r.vector(1, 255)
        r.end()
        return cls(version, cookie)


def encode_psk_identity(identity: bytes) -> bytes:
    """ServerKeyExchange (hint) or ClientKeyExchange (identity) body (RFC 4279 §2)."""
    return vec(identity, 2)


def decode_psk_identity(body: bytes) -> bytes:
    """Parse a psk_identity_hint / psk_identity body: opaque <0..2^16-1>."""
    r = Reader(body)
    identity = r.vector(2, 0xFFFF)
    r.end()
    return identity
