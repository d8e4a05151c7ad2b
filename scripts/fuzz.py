#!/usr/bin/env python3
"""Hostile input, measured at scale: fuzz a live greencoap demo server over UDP.

    python scripts/fuzz.py --count 1000000 [--seed N] [--hub uring|epoll|gevent]
                           [--rate R] [--duration S] [--quick]

What one run does, in order:

1. starts the demo server (``greencoap.demo.build_router``) in a child process
   of this script (``--role server``) on 127.0.0.1 (or ::1), on the chosen hub
   (``GREENCOAP_HUB``), with its stderr in a log file; the child answers
   ``stats`` on its stdin with one JSON line: ``Server.stats``,
   ``Server.table_sizes()``, the hub's error count, the backend's own
   counters and every exception the server caught (by signature, with the
   first traceback of each), collected in the hub itself after the datagrams
   already queued were read;
2. starts a GOOD CLIENT in another child (``--role client``): CON GET /hello
   one at a time with its own MIDs and tokens, retransmitted per RFC 7252
   (2 s x random(1, 1.5), doubling, 4 times), measuring latency;
3. replays the regression corpus (``tests/fuzz_corpus``) one file at a time;
4. probes every mutator kind with single datagrams and checks, per
   datagram, which server counter it landed in (this is how counting gaps
   are found) and that every CON got an answer;
5. runs the hostile-but-valid sequences (Block1 gaps/overlaps/size
   changes/restarts, absurd Block2 numbers, Observe storms, MID reuse, an RST
   to a separate response, duplicate storms, thousands of source ports);
6. floods the server with ``--count`` mutated datagrams built from a corpus
   of valid requests, paced by the server socket's receive queue (read from
   /proc/net/udp) so that the kernel does not drop and early shedding does
   not engage, unless ``--rate`` says otherwise;
7. checks survival (alive, answers GET /hello, no traceback in its log, no
   internal or hub errors, bounded tables), the good client's record, and
   the accounting: every datagram sent to the server port is in exactly one
   server counter, or dropped by the kernel (the socket's ``drops`` in
   /proc/net/udp; /proc/net/snmp ``RcvbufErrors`` is reported too), or of a
   kind the probes showed lands in no counter (reported as a counting gap).

Every input that produced a traceback, an unanswered CON, a crash or an
unaccounted datagram is minimised (when cheap) and saved in
``tests/fuzz_corpus`` (one hex datagram per line; see its README).

The exit status is non-zero on any failure.  ``run(FuzzConfig(...))`` is the
same thing as a function (tests/test_fuzz.py uses it).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import queue
import random
import re
import select
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
REPO = HERE.parent.parent
if str(REPO) not in sys.path:  # a fallback: an installed greencoap or PYTHONPATH wins
    sys.path.append(str(REPO))

from greencoap.codes import Code, Type  # noqa: E402
from greencoap.message import Message, decode, encode  # noqa: E402
from greencoap.options import Block  # noqa: E402
from greencoap.options import OptionNumber as O  # noqa: E402

CON, NON, ACK, RST = Type.CON, Type.NON, Type.ACK, Type.RST
GET, POST, PUT, DELETE, FETCH, PATCH, IPATCH = (
    Code.GET,
    Code.POST,
    Code.PUT,
    Code.DELETE,
    Code.FETCH,
    Code.PATCH,
    Code.IPATCH,
)
METHODS = (GET, POST, PUT, DELETE, FETCH, PATCH, IPATCH)
CONTENT = int(Code.CONTENT)
MAX_DATAGRAM = 4052  # greencoap.backends.MAX_DATAGRAM: larger ones count as truncated
CORPUS_DIR = REPO / "tests" / "fuzz_corpus"

#: server counters a received datagram lands in (exactly one each); the others
#: are sub-counts of these (mid_reused, throttled, dedup_*), send-side or gauges
RECEIVE_COUNTERS = (
    "requests_received",
    "duplicates",
    "malformed",
    "pings",
    "unexpected",
    "resets_received",
    "responses_acked",
    "truncated",
    "shed_early",
)
#: counters that must stay 0
ERROR_COUNTERS = ("internal_errors", "handler_errors")
#: upper bounds for Server.table_sizes() after a run (the server's own caps:
#: dedup 65,536 entries, 64 MiB per block-wise store, 64k rate buckets)
TABLE_BOUNDS = {
    "dedup": 65536,
    "dedup_queued": 2 * 65536 + 1024,
    "dedup_peers": 65536,
    "dedup_peer_orders": 65536,
    "block1_bytes": 64 << 20,
    "block2_bytes": 64 << 20,
    "block1_uploads": 100_000,
    "block2_bodies": 100_000,
    "rate_buckets": 65536,
    "requests_queued": 0,
    "observers": 100_000,
}
DEFAULT_TABLE_BOUND = 200_000


# ---------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------


def hexs(data: bytes) -> str:
    return data.hex()


def is_empty_ack_rst(d: bytes) -> bool:
    """An Empty ACK or RST (4 bytes, version 1, TKL 0, code 0.00)."""
    return len(d) == 4 and (d[0] == 0x60 or d[0] == 0x70) and d[1] == 0


def is_con_header(d: bytes) -> bool:
    """Version 1 and type CON, within the size limit: the server must answer
    (ACK or RST), one way or another."""
    return 4 <= len(d) <= MAX_DATAGRAM and d[0] >> 4 == 0x4


def wait_readable(sock: socket.socket, timeout: float) -> bool:
    """poll(2) for one socket (select(2) fails on descriptors above 1023)."""
    p = select.poll()
    p.register(sock, select.POLLIN)
    return bool(p.poll(max(0.0, timeout) * 1000))


def pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    v = sorted(values)
    k = min(len(v) - 1, max(0, int(round(p / 100.0 * (len(v) - 1)))))
    return v[k]


def raise_nofile() -> tuple[int, int]:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit; return (soft, hard)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def pin(cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {cpu})


def snmp_counters() -> dict[str, int]:
    """UDP RcvbufErrors / InErrors from /proc/net/snmp and snmp6 (this netns)."""
    out: dict[str, int] = {}
    try:
        lines = Path("/proc/net/snmp").read_text().splitlines()
        for head, vals in zip(lines, lines[1:], strict=False):
            if head.startswith("Udp:") and vals.startswith("Udp:"):
                row = dict(zip(head.split()[1:], map(int, vals.split()[1:]), strict=False))
                out["Udp.RcvbufErrors"] = row.get("RcvbufErrors", 0)
                out["Udp.InErrors"] = row.get("InErrors", 0)
    except OSError:
        pass
    try:
        for line in Path("/proc/net/snmp6").read_text().splitlines():
            name, _, value = line.partition(" ")
            if name in ("Udp6RcvbufErrors", "Udp6InErrors"):
                out[name] = int(value.strip())
    except OSError:
        pass
    return out


def udp_socket_info(host: str, port: int) -> dict[str, int] | None:
    """rx_queue (bytes) and drops of the UDP socket bound to host:port, from
    /proc/net/udp (udp6 for an IPv6 host); None when not found."""
    v6 = ":" in host
    path = "/proc/net/udp6" if v6 else "/proc/net/udp"
    if v6:
        raw = socket.inet_pton(socket.AF_INET6, host)
        want = "".join(raw[i : i + 4][::-1].hex().upper() for i in range(0, 16, 4))
    else:
        want = socket.inet_aton(host)[::-1].hex().upper()
    want = f"{want}:{port:04X}"
    try:
        with open(path) as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[1] == want:
                    rx = int(fields[4].split(":")[1], 16)
                    return {"rx_queue": rx, "drops": int(fields[-1])}
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    return None


SO_MEMINFO = 55  # linux/sock_diag.h: u32 sk_meminfo[SK_MEMINFO_VARS]


def sock_meminfo(sock: socket.socket) -> dict[str, int]:
    """rmem_alloc (bytes queued, what /proc/net/udp calls rx_queue) and drops
    of a socket, with one getsockopt (reading /proc/net/udp costs milliseconds
    when the namespace has thousands of sockets)."""
    v = struct.unpack("9I", sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 36))
    return {"rx_queue": v[0], "drops": v[8]}


class RxQueueReader:
    """Repeated reads of the server socket's receive queue: SO_MEMINFO on a
    duplicate of its descriptor (never read from), else /proc/net/udp."""

    def __init__(self, host: str, port: int, dup: socket.socket | None = None) -> None:
        self.host, self.port, self.dup = host, port, dup

    def info(self) -> dict[str, int] | None:
        if self.dup is not None:
            with contextlib.suppress(OSError):
                return sock_meminfo(self.dup)
        return udp_socket_info(self.host, self.port)

    def rx_queue(self) -> int:
        info = self.info()
        return 0 if info is None else info["rx_queue"]


# ---------------------------------------------------------------------------
# the seed corpus: valid requests aimed at the demo server's resources
# ---------------------------------------------------------------------------


def block_uint(num: int, more: bool, szx: int) -> bytes:
    """A Block1/Block2 option value, reserved SZX 7 allowed (Block.encode refuses it)."""
    if szx <= 6:
        v = Block(num, more, szx).encode()
    else:
        v = num << 4 | (8 if more else 0) | szx
    return v.to_bytes((v.bit_length() + 7) // 8, "big")


def uint(v: int) -> bytes:
    return v.to_bytes((v.bit_length() + 7) // 8, "big")


def path_opts(path: str) -> list[tuple[int, bytes]]:
    return [(int(O.URI_PATH), seg.encode()) for seg in path.strip("/").split("/") if seg]


def query_opts(*items: str) -> list[tuple[int, bytes]]:
    return [(int(O.URI_QUERY), q.encode()) for q in items]


def make_request(
    mtype: int,
    code: int,
    mid: int,
    token: bytes,
    path: str,
    query: tuple[str, ...] = (),
    opts: list[tuple[int, bytes]] | tuple = (),
    payload: bytes = b"",
) -> bytes:
    options = path_opts(path) + query_opts(*query) + list(opts)
    return encode(Message(mtype, code, mid, token, options, payload))


#: (method, path, query) targets on the demo server
TARGETS = (
    (GET, "/hello", ()),
    (POST, "/echo", ()),
    (GET, "/slow", ("ms=0",)),
    (GET, "/slow", ("ms=5",)),
    (GET, "/sensors/1", ()),
    (GET, "/sensors/kitchen", ()),
    (GET, "/large", ("size=100",)),
    (GET, "/large", ("size=4096",)),
    (GET, "/large", ()),
    (PUT, "/store", ()),
    (GET, "/store", ()),
    (DELETE, "/store", ()),
    (GET, "/counter", ("interval=60",)),
    (GET, "/whoami", ()),
    (GET, "/.well-known/core", ()),
    (GET, "/.well-known/core", ("rt=temperature",)),
    (GET, "/.well-known/core", ("title=Hello*",)),
    (GET, "/nowhere", ()),
)


def option_catalog(rng: random.Random) -> list[tuple[str, list[tuple[int, bytes]]]]:
    """Every registered option (and unknown critical/elective ones) with
    interesting values, each as a named option list to add to a request."""
    cat: list[tuple[str, list[tuple[int, bytes]]]] = []

    def add(name: str, *opts: tuple[int, bytes]) -> None:
        cat.append((name, list(opts)))

    for n in (0, 1, 4, 8):
        add(f"if-match-{n}", (O.IF_MATCH, rng.randbytes(n)))
    add("if-match-x2", (O.IF_MATCH, b"\x01"), (O.IF_MATCH, b"\x02\x03"))
    for h in ("localhost", "127.0.0.1", "[::1]", "h" * 255):
        add(f"uri-host-{len(h)}", (O.URI_HOST, h.encode()))
    for n in (1, 4, 8):
        add(f"etag-{n}", (O.ETAG, rng.randbytes(n)))
    add("etag-x3", *[(O.ETAG, rng.randbytes(4)) for _ in range(3)])
    add("if-none-match", (O.IF_NONE_MATCH, b""))
    add("observe-0", (O.OBSERVE, b""))
    add("observe-1", (O.OBSERVE, b"\x01"))
    add("observe-big", (O.OBSERVE, b"\xff\xff\xff"))
    for p in (0, 5683, 65535):
        add(f"uri-port-{p}", (O.URI_PORT, uint(p)))
    for cf in (0, 40, 42, 50, 60, 11542, 65535):
        add(f"content-format-{cf}", (O.CONTENT_FORMAT, uint(cf)))
        add(f"accept-{cf}", (O.ACCEPT, uint(cf)))
    for ma in (0, 60, 0xFFFFFFFF):
        add(f"max-age-{ma}", (O.MAX_AGE, uint(ma)))
    for hl in (1, 16, 255):
        add(f"hop-limit-{hl}", (O.HOP_LIMIT, uint(hl)))
    for which, num in (("block2", O.BLOCK2), ("block1", O.BLOCK1)):
        for szx in range(8):  # 7 is reserved
            for bnum, more in ((0, False), (0, True), (1, True), (5, False)):
                add(f"{which}-{bnum}-{int(more)}-{szx}", (num, block_uint(bnum, more, szx)))
        add(f"{which}-max", (num, block_uint((1 << 20) - 1, False, 6)))
    for s in (0, 1024, 1 << 20, 0xFFFFFFFF):
        add(f"size1-{s}", (O.SIZE1, uint(s)))
        add(f"size2-{s}", (O.SIZE2, uint(s)))
    for n in (1, 8, 40):
        add(f"echo-{n}", (O.ECHO, rng.randbytes(n)))
    for v in (0, 2, 8, 16, 26):
        add(f"no-response-{v}", (O.NO_RESPONSE, uint(v)))
    for n in (0, 1, 8):
        add(f"request-tag-{n}", (O.REQUEST_TAG, rng.randbytes(n)))
    add("request-tag-x2", (O.REQUEST_TAG, b"\x01"), (O.REQUEST_TAG, b"\x02"))
    add("proxy-uri", (O.PROXY_URI, b"coap://example.com/hello"))
    add("proxy-uri-1000", (O.PROXY_URI, b"coap://example.com/" + b"p" * 981))
    add("proxy-scheme", (O.PROXY_SCHEME, b"coap"))
    add("proxy-scheme-http", (O.PROXY_SCHEME, b"http"))
    # unknown critical (odd) and elective (even) options, extended deltas
    for n in (9, 19, 21, 31, 2049, 65001):
        add(f"critical-{n}", (n, b"\x01"))
    for n in (8, 20, 2048, 65000):
        add(f"elective-{n}", (n, b"\x01"))
    # extended lengths: 13-form (13..268) and 14-form (269..), up to ~1000 bytes
    for length in (12, 13, 14, 100, 268, 269, 270, 500, 1000):
        add(f"elective-2048-len{length}", (2048, rng.randbytes(length)))
    add("uri-query-200", (O.URI_QUERY, b"q=" + b"x" * 198))
    add("uri-path-255", (O.URI_PATH, b"s" * 255))
    add("many-paths", *[(O.URI_PATH, b"a")] * 40)
    add("bad-len-etag-0", (O.ETAG, b""))  # out of bounds: elective, ignored
    add("bad-len-uri-port-3", (O.URI_PORT, b"\x01\x02\x03"))  # critical, 4.02
    add("bad-len-hop-limit-0", (O.HOP_LIMIT, b""))
    add("dup-uri-host", (O.URI_HOST, b"a"), (O.URI_HOST, b"b"))
    return cat


def seed_corpus(seed: int = 0, extra_random: int = 1500) -> list[bytes]:
    """A deterministic corpus of valid requests (plus a few valid non-requests)."""
    rng = random.Random(seed)
    out: list[bytes] = []
    tkl = iter(range(10**9))

    def token() -> bytes:
        return rng.randbytes(next(tkl) % 9)  # 0..8 bytes, cycling

    def mid() -> int:
        return rng.randrange(0x10000)

    # every method on every target, CON and NON
    for mtype in (CON, NON):
        for method in METHODS:
            for _, path, query in TARGETS:
                out.append(make_request(mtype, method, mid(), token(), path, query))
    # the targets with their right methods, with and without payloads
    payloads = (b"", b"x", b"0123456789ab", b"0123456789abc", b"p" * 100, b"P" * 1000)
    for mtype in (CON, NON):
        for method, path, query in TARGETS:
            for p in payloads:
                cf = [(O.CONTENT_FORMAT, uint(rng.choice((0, 42, 50))))] if p else []
                out.append(make_request(mtype, method, mid(), token(), path, query, cf, p))
    # every option of the catalog on a fitting target
    catalog = option_catalog(rng)
    for name, opts in catalog:
        for mtype in (CON, NON):
            if name.startswith("block1"):
                szx = opts[0][1][-1] & 7 if opts[0][1] else 0
                size = 16 << min(szx, 6)
                method, path, query = rng.choice(((PUT, "/store", ()), (POST, "/echo", ())))
                payload = b"b" * size
            elif name.startswith("block2"):
                method, path, query = rng.choice(
                    ((GET, "/large", ("size=4096",)), (GET, "/hello", ()), (GET, "/store", ()))
                )
                payload = b""
            elif name.startswith("observe"):
                method, path, query = rng.choice(
                    (
                        (GET, "/counter", ("interval=60",)),
                        (GET, "/counter", ()),
                        (GET, "/hello", ()),
                    )
                )
                payload = b""
            else:
                method, path, query = rng.choice(TARGETS)
                payload = b"payload" if method in (POST, PUT) else b""
            out.append(make_request(mtype, method, mid(), token(), path, query, opts, payload))
    # valid non-requests: responses (unexpected at a server), pings, empty ACK/RST
    for mtype in (CON, NON, ACK):
        for code in (CONTENT, int(Code.NOT_FOUND), int(Code.INTERNAL_SERVER_ERROR)):
            out.append(encode(Message(mtype, code, mid(), token(), [], b"resp")))
    out.append(encode(Message(CON, 0, mid())))  # ping
    out.append(encode(Message(ACK, 0, mid())))
    out.append(encode(Message(RST, 0, mid())))
    # random combinations of options on random targets
    for _ in range(extra_random):
        method, path, query = rng.choice(TARGETS)
        if rng.random() < 0.15:
            method = rng.choice(METHODS)
        opts = []
        for _ in range(rng.choice((0, 1, 1, 2, 3, 5))):
            opts += rng.choice(catalog)[1]
        payload = b""
        if rng.random() < 0.4:
            payload = rng.randbytes(rng.choice((1, 5, 16, 64, 200)))
        mtype = rng.choice((CON, CON, NON))
        try:
            out.append(make_request(mtype, method, mid(), token(), path, query, opts, payload))
        except Exception:  # noqa: BLE001 - an unencodable combination: skip it
            continue
    return out


# ---------------------------------------------------------------------------
# mutators
# ---------------------------------------------------------------------------

INTERESTING = bytes(
    (0x00, 0x01, 0x0C, 0x0D, 0x0E, 0x0F, 0x10, 0x7F, 0x80, 0xC0, 0xD0, 0xDD, 0xE0, 0xEE, 0xF0, 0xFF)
)


def option_spans(d: bytes) -> tuple[list[tuple[int, int, int]], int]:
    """Option headers of a datagram as (header pos, value start, value end),
    and the payload marker position (-1 if none); stops at the first error."""
    spans: list[tuple[int, int, int]] = []
    n = len(d)
    if n < 4:
        return spans, -1
    pos = 4 + (d[0] & 0x0F)
    while pos < n:
        b = d[pos]
        if b == 0xFF:
            return spans, pos
        hdr = pos
        pos += 1
        delta, length = b >> 4, b & 0x0F
        for nib, is_len in ((delta, False), (length, True)):
            if nib == 13:
                if pos >= n:
                    return spans, -1
                v = d[pos] + 13
                pos += 1
            elif nib == 14:
                if pos + 2 > n:
                    return spans, -1
                v = (d[pos] << 8 | d[pos + 1]) + 269
                pos += 2
            elif nib == 15:
                return spans, -1
            else:
                v = nib
            if is_len:
                length = v
        end = pos + length
        if end > n:
            return spans, -1
        spans.append((hdr, pos, end))
        pos = end
    return spans, -1


def _rb(r: random.Random) -> int:
    return r.choice(INTERESTING) if r.random() < 0.5 else r.randrange(256)


def m_bitflip(r: random.Random, d: bytes, corpus: list[bytes]) -> bytes:
    if not d:
        return bytes((r.randrange(256),))
    b = bytearray(d)
    for _ in range(r.choice((1, 1, 1, 2, 3, 8))):
        b[r.randrange(len(b))] ^= 1 << r.randrange(8)
    return bytes(b)


def m_byte_set(r: random.Random, d: bytes, corpus: list[bytes]) -> bytes:
    if not d:
        return bytes((_rb(r),))
    b = bytearray(d)
    for _ in range(r.choice((1, 1, 2, 4))):
        b[r.randrange(len(b))] = _rb(r)
    return bytes(b)


def m_byte_insert(r: random.Random, d: bytes, corpus: list[bytes]) -> bytes:
    i = r.randrange(len(d) + 1)
    return d[:i] + bytes(_rb(r) for _ in range(r.choice((1, 1, 2, 4, 16)))) + d[i:]


def m_byte_delete(r: random.Random, d: bytes, corpus: list[bytes]) -> bytes:
    if not d:
        return d
    i = r.randrange(len(d))
    return d[:i] + d[i + r.choice((1, 1, 2, 4, 8)) :]


def m_truncate(r: random.Random, d: bytes, corpus: list[bytes]) -> bytes:
    return d[: r.randrange(len(d) + 1)]


def m_dup_chunk(r: random.Random, d: bytes, corpus: list[bytes]) -> bytes:
    if len(d) < 2:
        return d + d
    i = r.randrange(len(d))
    j = min(len(d), i + r.choice((1, 2, 4, 8, 32)))
    k = r.randrange(len(d) + 1)
    return d[:k] + d[i:j] * r.choice((1, 2, 8)) + d[k:]


def m_splice(r: random.Random, d: bytes, corpus: list[bytes]) -> bytes:
    other = r.choice(corpus)
    return d[: r.randrange(len(d) + 1)] + other[r.randrange(len(other) + 1) :]


def m_lying_length(r: random.Random, d: bytes, corpus: list[bytes]) -> bytes:
    """Option delta/length nibbles 13/14/15 whose extensions lie, or lengths
    that run past the end / stop short."""
    spans, _ = option_spans(d)
    if not spans:
        return m_bitflip(r, d, corpus)
    hdr, vstart, vend = r.choice(spans)
    b = bytearray(d)
    h = b[hdr]
    how = r.randrange(6)
    if how == 0:  # length nibble 13/14/15, following bytes taken as extension
        b[hdr] = (h & 0xF0) | r.choice((13, 14, 15))
    elif how == 1:  # delta nibble 13/14/15
        b[hdr] = (r.choice((13, 14, 15)) << 4) | (h & 0x0F)
    elif how == 2 and vstart - hdr > 1:  # an existing extension made to lie
        for i in range(hdr + 1, vstart):
            b[i] = r.choice((0xFF, 0xFE, 0x00, r.randrange(256)))
    elif how == 3:  # length longer than what is left
        b[hdr] = (h & 0xF0) | 12
        if vend - vstart >= 12:
            b[hdr] = (h & 0xF0) | 14
            b[hdr + 1 : vstart] = b"\xff\xff"
    elif how == 4:  # length shorter: the value's tail is read as options
        short = max(0, (vend - vstart) - r.randrange(1, 4))
        if short < 13:
            b[hdr:vstart] = bytes(((h & 0xF0) | short,))
    else:  # extended length 13/14 forms with a wrong extension byte count
        b[hdr] = (h & 0xF0) | 13
        b.insert(hdr + 1, r.randrange(256))
    return bytes(b)


def m_stray_marker(r: random.Random, d: bytes, corpus: list[bytes]) -> bytes:
    """0xFF payload markers where none belong, with and without payload."""
    spans, marker = option_spans(d)
    how = r.randrange(4)
    if how == 0:
        return d + b"\xff"  # marker, no payload (or a second marker after the payload)
    if how == 1 and spans:
        hdr = r.choice(spans)[0]
        return d[:hdr] + b"\xff" + d[hdr:]  # marker between options: the rest is payload
    if how == 2 and marker >= 0:
        return d[:marker] + b"\xff" + d[marker:]  # double marker
    base = d[: 4 + (d[0] & 0x0F)] if len(d) >= 4 else d
    return base + b"\xff" + (r.randbytes(r.randrange(4)) if r.random() < 0.5 else b"")


def m_reserved_code(r: random.Random, d: bytes, corpus: list[bytes]) -> bytes:
    if len(d) < 2:
        return d
    return d[:1] + bytes((r.choice((1, 3, 6, 7)) << 5 | r.randrange(32),)) + d[2:]


def m_response_code(r: random.Random, d: bytes, corpus: list[bytes]) -> bytes:
    if len(d) < 2:
        return d
    return d[:1] + bytes((r.choice((2, 4, 5)) << 5 | r.randrange(32),)) + d[2:]


def m_wrong_version(r: random.Random, d: bytes, corpus: list[bytes]) -> bytes:
    if not d:
        return d
    return bytes(((d[0] & 0x3F) | r.choice((0, 2, 3)) << 6,)) + d[1:]


def m_tkl_reserved(r: random.Random, d: bytes, corpus: list[bytes]) -> bytes:
    if not d:
        return d
    return bytes(((d[0] & 0xF0) | r.randrange(9, 16),)) + d[1:]


def m_empty_extra(r: random.Random, d: bytes, corpus: list[bytes]) -> bytes:
    """An Empty (0.00) message of any type with a token, options or payload."""
    tkl = r.randrange(9)
    head = bytes((0x40 | r.randrange(4) << 4 | tkl, 0, r.randrange(256), r.randrange(256)))
    extra = r.choice((r.randbytes(tkl + r.randrange(1, 8)), r.randbytes(tkl) + b"\xffx", b"\x00"))
    return head + extra


def m_empty_ack_rst(r: random.Random, d: bytes, corpus: list[bytes]) -> bytes:
    """An Empty ACK or RST with a random MID (matches nothing, usually)."""
    return bytes((r.choice((0x60, 0x70)), 0, r.randrange(256), r.randrange(256)))


def m_set_type(r: random.Random, d: bytes, corpus: list[bytes]) -> bytes:
    """ACK/RST carrying a request (or any type on anything)."""
    if not d:
        return d
    t = r.choice((2, 3, 2, 3, 0, 1))
    return bytes(((d[0] & 0xCF) | t << 4,)) + d[1:]


def m_garbage(r: random.Random, d: bytes, corpus: list[bytes]) -> bytes:
    return r.randbytes(r.choice((0, 1, 2, 3, 4, 5, 8, 16, 64, 300, 1400)))


def m_oversize(r: random.Random, d: bytes, corpus: list[bytes]) -> bytes:
    """Larger than any backend accepts (> 4052 bytes): counted as truncated."""
    size = r.choice((MAX_DATAGRAM + 1, MAX_DATAGRAM + 2, 4096, 6000, 9000, 16000))
    pad = d + (b"\xff" if b"\xff" not in d[4:] else b"")
    return (pad + r.randbytes(64) * (size // 64 + 1))[:size]


def m_max_size(r: random.Random, d: bytes, corpus: list[bytes]) -> bytes:
    """Exactly at the limit (4052 bytes): must be processed, not truncated."""
    pad = d + (b"\xff" if b"\xff" not in d[4:] else b"")
    return (pad + b"z" * MAX_DATAGRAM)[: r.choice((MAX_DATAGRAM, MAX_DATAGRAM - 1, 1500))]


MUTATORS: dict[str, tuple[Any, int]] = {
    # name: (function, weight)
    "bitflip": (m_bitflip, 14),
    "byte_set": (m_byte_set, 10),
    "byte_insert": (m_byte_insert, 7),
    "byte_delete": (m_byte_delete, 7),
    "truncate": (m_truncate, 7),
    "dup_chunk": (m_dup_chunk, 5),
    "splice": (m_splice, 5),
    "lying_length": (m_lying_length, 10),
    "stray_marker": (m_stray_marker, 6),
    "reserved_code": (m_reserved_code, 3),
    "response_code": (m_response_code, 2),
    "wrong_version": (m_wrong_version, 2),
    "tkl_reserved": (m_tkl_reserved, 2),
    "empty_extra": (m_empty_extra, 2),
    "empty_ack_rst": (m_empty_ack_rst, 2),
    "set_type": (m_set_type, 3),
    "garbage": (m_garbage, 3),
    "oversize": (m_oversize, 1),
    "max_size": (m_max_size, 1),
}
_MUT_NAMES = list(MUTATORS)
_MUT_FUNCS = [MUTATORS[n][0] for n in _MUT_NAMES]
_MUT_CUM: list[int] = []
_acc = 0
for _n in _MUT_NAMES:
    _acc += MUTATORS[_n][1]
    _MUT_CUM.append(_acc)
del _acc, _n


class Mutator:
    """Stacked mutations of corpus entries; ``next()`` -> (kind, datagram)."""

    def __init__(self, corpus: list[bytes], seed: int) -> None:
        self.corpus = corpus
        self.r = random.Random(seed)
        # truncation at every position of some seeds, first
        self._prefixes: collections.deque = collections.deque()

    def queue_all_truncations(self, n_seeds: int) -> int:
        r = self.r
        total = 0
        for _ in range(n_seeds):
            d = r.choice(self.corpus)
            for i in range(len(d)):
                self._prefixes.append(d[:i])
                total += 1
        return total

    def next(self) -> tuple[str, bytes]:
        if self._prefixes:
            return "truncate_all", self._prefixes.popleft()
        r = self.r
        d = r.choice(self.corpus)
        x = r.random()
        if x < 0.06:
            kind = "valid"
        else:
            depth = 1 if x < 0.65 else (2 if x < 0.9 else r.choice((3, 4)))
            names = []
            for _ in range(depth):
                i = _bisect(_MUT_CUM, r.randrange(_MUT_CUM[-1]))
                d = _MUT_FUNCS[i](r, d, self.corpus)
                names.append(_MUT_NAMES[i])
            kind = names[0] if depth == 1 else "+".join(names)
        if len(d) >= 4 and r.random() < 0.85:  # a fresh MID mostly (else dedup answers)
            d = d[:2] + struct.pack("!H", r.randrange(0x10000)) + d[4:]
        return kind, d

    def of_kind(self, name: str) -> bytes:
        """One datagram mutated by ``name`` only (the per-kind probes)."""
        r = self.r
        d = r.choice(self.corpus)
        if name != "valid":
            d = MUTATORS[name][0](r, d, self.corpus)
        if len(d) >= 4 and name != "empty_ack_rst":
            d = d[:2] + struct.pack("!H", r.randrange(0x10000)) + d[4:]
        return d


def _bisect(cum: list[int], x: int) -> int:
    lo, hi = 0, len(cum)
    while lo < hi:
        mid = (lo + hi) // 2
        if cum[mid] <= x:
            lo = mid + 1
        else:
            hi = mid
    return lo


# ---------------------------------------------------------------------------
# the server child (--role server)
# ---------------------------------------------------------------------------


def _signature(exc: BaseException) -> str:
    """Exception type + message (digits folded) + innermost greencoap frame."""
    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else []
    where = ""
    for fr in reversed(frames):
        if "greencoap" in fr.filename:
            where = f"{Path(fr.filename).name}:{fr.name}"
            break
    outer = ""
    for fr in reversed(frames):
        if "greencoap" in fr.filename and Path(fr.filename).name == "server.py":
            outer = f" <- server.py:{fr.name}"
            break
    msg = re.sub(r"\d+", "N", str(exc))[:100]
    return f"{type(exc).__name__}({msg}) at {where}{outer}"


class ErrorCapture:
    """Every exception the server reports (hub.handle_error, log.exception),
    by signature, with the first traceback of each."""

    def __init__(self) -> None:
        self.counts: collections.Counter = collections.Counter()
        self.first: dict[str, str] = {}

    def record(self, exc: BaseException | None, where: str) -> None:
        if exc is None:
            return
        sig = _signature(exc)
        self.counts[sig] += 1
        if sig not in self.first and len(self.first) < 20:
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            self.first[sig] = f"in {where}:\n{text}"[-4000:]


def serve_role(args: argparse.Namespace) -> int:
    """The demo server, with a stats/stop control channel on stdin/stdout."""
    import faulthandler
    import logging

    faulthandler.enable()  # a crash in C still leaves a Python traceback in the log
    pin(args.cpu)
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    capture = ErrorCapture()

    class CaptureHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.exc_info and record.exc_info[1] is not None:
                if record.name == "greencoap.hub":
                    return  # counted by the handle_error wrapper (which sees suppressed ones)
                capture.record(record.exc_info[1], record.name)

    logging.getLogger().addHandler(CaptureHandler(level=logging.ERROR))

    import greencoap
    from greencoap.demo import build_router
    from greencoap.server import Server

    srv = Server(build_router(), host=args.host, port=args.port)
    srv.start()
    hub = srv.hub
    original = hub.handle_error

    def handle_error(where: Any, exc: BaseException | None = None) -> None:
        e = exc if exc is not None else sys.exc_info()[1]
        with contextlib.suppress(Exception):
            capture.record(e, getattr(where, "__qualname__", repr(where)))
        original(where, exc if exc is not None else e)

    hub.handle_error = handle_error
    out_lock = threading.Lock()

    def reply(obj: dict) -> None:
        with out_lock:
            sys.stdout.write(json.dumps(obj) + "\n")
            sys.stdout.flush()

    def collect() -> dict:
        io_stats = {}
        stats_fn = getattr(hub.io, "statistics", None)
        if stats_fn is not None:
            io_stats = stats_fn()
        return {
            "stats": {k: v for k, v in srv.stats.items() if isinstance(v, int)},
            "tables": srv.table_sizes() if srv.endpoint is not None else {},
            "hub_errors": hub.errors,
            "io": io_stats,
            "errors_by_sig": dict(capture.counts),
            "tracebacks": capture.first,
            "t": time.monotonic(),
        }

    def in_hub(q: queue.Queue, turns: int) -> None:
        # run after the hub polled `turns` more times: what was queued is read
        if turns > 0:
            hub.call_later(0.001, in_hub, q, turns - 1)
            return
        try:
            q.put(collect())
        except Exception as e:  # noqa: BLE001
            q.put({"error": repr(e)})

    def control() -> None:
        for line in sys.stdin:
            cmd = line.strip()
            if cmd == "stats":
                q: queue.Queue = queue.Queue()
                hub.run_callback_threadsafe(in_hub, q, 2)
                try:
                    reply(q.get(timeout=30))
                except queue.Empty:
                    reply({"error": "the hub did not answer within 30 s"})
            elif cmd == "stop":
                break
        hub.run_callback_threadsafe(srv.stop)

    if args.fd_channel is not None:  # a duplicate of the socket, for SO_MEMINFO
        with contextlib.suppress(OSError):
            chan = socket.socket(fileno=args.fd_channel)
            socket.send_fds(chan, [b"fd"], [srv.endpoint.sock.fileno()])
            chan.close()
    reply(
        {
            "port": srv.port,
            "backend": hub.backend,
            "pid": os.getpid(),
            "greencoap": str(Path(greencoap.__file__).parent),
        }
    )
    threading.Thread(target=control, daemon=True).start()
    try:
        srv.serve_forever()
    finally:
        with contextlib.suppress(Exception):
            srv.stop()
        reply({"stopped": True, "stats": {k: v for k, v in srv.stats.items()}})
    return 0


class ServerProc:
    """The server child, stopped by its PID."""

    def __init__(
        self,
        hub: str | None,
        host: str,
        log_path: Path,
        cpu: int | None = None,
        server_path: str | None = None,
    ) -> None:
        env = dict(os.environ)
        if hub:
            env["GREENCOAP_HUB"] = hub
            if hub == "uring":
                env["GREENCOAP_REQUIRE_URING"] = "1"
        if server_path:
            env["PYTHONPATH"] = server_path + os.pathsep + env.get("PYTHONPATH", "")
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        cmd = [sys.executable, str(HERE), "--role", "server", "--host", host, "--port", "0"]
        cmd += ["--fd-channel", str(theirs.fileno())]
        if cpu is not None:
            cmd += ["--cpu", str(cpu)]
        self.host = host
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.p = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
            env=env,
            cwd=str(REPO) if not server_path else server_path,
            pass_fds=(theirs.fileno(),),
        )
        theirs.close()
        self.pid = self.p.pid
        self.sock_dup: socket.socket | None = None
        self._lock = threading.Lock()
        hello = self._read(30)
        if hello is None or "port" not in hello:
            self.stop()
            raise RuntimeError(f"the server did not start: {self.log_text()[-3000:]}")
        mine.settimeout(5)
        try:
            _, fds, _, _ = socket.recv_fds(mine, 16, 1)
            if fds:
                self.sock_dup = socket.socket(fileno=fds[0])
                sock_meminfo(self.sock_dup)
        except OSError:
            self.sock_dup = None
        finally:
            mine.close()
        self.port = hello["port"]
        self.backend = hello["backend"]
        self.package = hello.get("greencoap")
        self.final: dict | None = None
        self._so = self._so_mtimes()

    def _so_mtimes(self) -> dict[str, int]:
        out = {}
        if self.package:
            for f in Path(self.package).glob("*.so"):
                with contextlib.suppress(OSError):
                    out[str(f)] = f.stat().st_mtime_ns
        return out

    def rebuilt(self) -> list[str]:
        """The server's compiled modules that changed on disk since it started
        (an editable install rebuilt in place under a running process crashes it)."""
        now = self._so_mtimes()
        return [f for f, t in self._so.items() if now.get(f) != t]

    def _read(self, timeout: float) -> dict | None:
        out = self.p.stdout
        r, _, _ = select.select([out], [], [], timeout)
        if not r:
            return None
        line = out.readline()
        if not line:
            return None
        return json.loads(line)

    def alive(self) -> bool:
        return self.p.poll() is None

    def exit_status(self) -> str:
        """How the process ended (None while it runs)."""
        rc = self.p.poll()
        if rc is None:
            return "running"
        if rc < 0:
            import signal

            return f"killed by signal {signal.Signals(-rc).name}"
        return f"exit status {rc}"

    def stats(self, timeout: float = 30.0) -> dict:
        """The server's counters after the datagrams queued so far were read."""
        with self._lock:
            if not self.alive():
                raise RuntimeError(f"the server process is dead ({self.exit_status()})")
            self.p.stdin.write("stats\n")
            self.p.stdin.flush()
            r = self._read(timeout)
        if r is None:
            raise RuntimeError("the server did not answer the stats request")
        if "error" in r:
            raise RuntimeError(f"stats failed in the server: {r['error']}")
        return r

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        try:
            if self.p.poll() is None:
                with contextlib.suppress(OSError, ValueError):
                    self.p.stdin.write("stop\n")
                    self.p.stdin.flush()
                try:
                    self.p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.p.terminate()
                    try:
                        self.p.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        self.p.kill()
                        self.p.wait()
        finally:
            with contextlib.suppress(Exception):
                rest = self.p.stdout.read()
                for line in rest.splitlines():
                    with contextlib.suppress(ValueError):
                        obj = json.loads(line)
                        if obj.get("stopped"):
                            self.final = obj
            for f in (self.p.stdin, self.p.stdout, self.sock_dup):
                with contextlib.suppress(Exception):
                    f.close()
            self._log.close()


# ---------------------------------------------------------------------------
# the good client child (--role client)
# ---------------------------------------------------------------------------


def good_client_role(args: argparse.Namespace) -> int:
    """CON GET /hello one at a time, RFC 7252 retransmission; a JSON report at stop."""
    pin(args.cpu)
    host, port = args.host, args.port
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(fam, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    addr = (host, port)
    rng = random.Random()
    stop = threading.Event()
    running = threading.Event()  # cleared while paused
    running.set()

    def watch() -> None:
        for line in sys.stdin:
            cmd = line.strip()
            if cmd == "stop":
                break
            if cmd == "pause":
                running.clear()
            elif cmd == "resume":
                running.set()
        stop.set()
        running.set()

    threading.Thread(target=watch, daemon=True).start()
    mid = rng.randrange(0x10000)
    lat: list[float] = []
    failures: list[dict] = []
    codes: collections.Counter = collections.Counter()
    sent = empty_sent = retrans = answered = 0
    started = time.monotonic()
    print(json.dumps({"ready": True}), flush=True)
    while not stop.is_set():
        if not running.is_set():  # paused (per-datagram measurements): say so, wait
            print(json.dumps({"paused": sent}), flush=True)
            running.wait()
            if stop.is_set():
                break
            continue
        mid = (mid + 1) & 0xFFFF
        token = rng.randbytes(8)
        req = encode(Message(CON, GET, mid, token, [(11, b"hello")]))
        t0 = time.monotonic()
        sock.sendto(req, addr)
        sent += 1
        interval = 2.0 * (1 + rng.random() * 0.5)
        next_tx = t0 + interval
        left = 4  # MAX_RETRANSMIT
        deadline = t0 + args.giveup
        result = None
        while result is None:
            now = time.monotonic()
            if now >= deadline:
                result = ("failure", "no answer")
                break
            if now >= next_tx and left:
                sock.sendto(req, addr)
                sent += 1
                retrans += 1
                left -= 1
                interval *= 2
                next_tx = now + interval
            wait = min(deadline, next_tx if left else deadline) - now
            r, _, _ = select.select([sock], [], [], max(0.0, wait))
            if not r:
                continue
            data, _ = sock.recvfrom(65536)
            try:
                m = decode(data)
            except Exception:  # noqa: BLE001
                continue
            if m.mtype == ACK and m.mid == mid and m.code == 0:
                left = 0  # separate response follows: stop retransmitting
                continue
            if m.token != token or m.code == 0:
                continue  # a stale answer
            if m.mtype == CON:
                sock.sendto(bytes((0x60, 0, m.mid >> 8, m.mid & 0xFF)), addr)
                sent += 1
                empty_sent += 1
            result = ("answer", m.code)
        took = time.monotonic() - t0
        if result[0] == "answer":
            answered += 1
            codes[str(Code(result[1]).dotted)] += 1
            lat.append(took * 1000)
            if result[1] != CONTENT:
                failures.append(
                    {"t": t0 - started, "reason": f"answered {Code(result[1])}", "req": hexs(req)}
                )
        else:
            failures.append({"t": t0 - started, "reason": result[1], "req": hexs(req)})
        pause = args.interval - (time.monotonic() - t0)
        if pause > 0 and running.is_set():
            stop.wait(pause)
    report = {
        "requests": answered + sum(1 for f in failures if f["reason"] == "no answer"),
        "answered": answered,
        "failures": failures,
        "codes": dict(codes),
        "sent": sent,
        "empty_sent": empty_sent,
        "retransmissions": retrans,
        "p50_ms": pct(lat, 50),
        "p99_ms": pct(lat, 99),
        "max_ms": max(lat) if lat else 0.0,
        "duration": time.monotonic() - started,
    }
    print(json.dumps(report), flush=True)
    return 0


class GoodClientProc:
    def __init__(
        self, host: str, port: int, interval: float, giveup: float, cpu: int | None
    ) -> None:
        cmd = [
            sys.executable,
            str(HERE),
            "--role",
            "client",
            "--host",
            host,
            "--port",
            str(port),
            "--interval",
            str(interval),
            "--giveup",
            str(giveup),
        ]
        if cpu is not None:
            cmd += ["--cpu", str(cpu)]
        self.giveup = giveup
        self.started = time.monotonic()
        self.p = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1, cwd=REPO
        )
        self.pid = self.p.pid
        r, _, _ = select.select([self.p.stdout], [], [], 30)
        if not r or "ready" not in self.p.stdout.readline():
            self.kill()
            raise RuntimeError("the good client did not start")
        self.report: dict | None = None
        self.paused = False

    def pause(self) -> None:
        """Until resume(): no request of the good client is in flight."""
        if self.paused or self.p.poll() is not None:
            return
        self.p.stdin.write("pause\n")
        self.p.stdin.flush()
        r, _, _ = select.select([self.p.stdout], [], [], self.giveup + 10)
        line = self.p.stdout.readline() if r else ""
        if "paused" not in line:
            raise RuntimeError(f"the good client did not pause ({line!r})")
        self.paused = True

    def resume(self) -> None:
        if self.paused and self.p.poll() is None:
            self.p.stdin.write("resume\n")
            self.p.stdin.flush()
        self.paused = False

    def stop(self) -> dict:
        try:
            with contextlib.suppress(OSError, ValueError):
                self.p.stdin.write("stop\n")
                self.p.stdin.flush()
            out, _ = self.p.communicate(timeout=self.giveup + 15)
            for line in out.splitlines():
                with contextlib.suppress(ValueError):
                    self.report = json.loads(line)
        except subprocess.TimeoutExpired:
            self.kill()
        return self.report or {"error": "the good client gave no report"}

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


# ---------------------------------------------------------------------------
# sending, with every datagram to the server port counted
# ---------------------------------------------------------------------------


class Ctx:
    """What the phases share: the server, the counters of what was sent."""

    def __init__(self, cfg: FuzzConfig, server: ServerProc) -> None:
        self.cfg = cfg
        self.server = server
        self.host = cfg.host
        self.addr = (cfg.host, server.port)
        self.family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
        self.sent = 0  # every datagram sent to the server port by this process
        self.recent: collections.deque = collections.deque(maxlen=500)
        self.empty_sent = 0  # Empty ACK/RST among them
        self.oversize_sent = 0
        self.send_errors = 0
        self.failures: list[str] = []
        self.findings: list[dict] = []
        self.notes: list[str] = []
        self.gap_empty_ackrst = True  # Empty ACK/RST matching nothing land in no counter
        self.extra_counters: list[str] = []
        self.rxq = RxQueueReader(cfg.host, server.port, server.sock_dup)
        self.client: GoodClientProc | None = None
        self.known_sigs: set[str] = set()
        self.seq_results: dict[str, dict] = {}

    def socket(self, rcvbuf: int | None = None) -> socket.socket:
        s = socket.socket(self.family, socket.SOCK_DGRAM)
        if rcvbuf:
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.bind((self.host, 0))
        s.setblocking(False)
        return s

    def send(self, sock: socket.socket, data: bytes) -> None:
        while True:
            try:
                sock.sendto(data, self.addr)
                break
            except BlockingIOError:
                select.select([], [sock], [], 0.05)
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    time.sleep(0.0005)
                    continue
                self.send_errors += 1  # not sent: not counted
                return
        self.sent += 1
        self.recent.append(data)
        if len(data) == 4 and (data[0] == 0x60 or data[0] == 0x70) and data[1] == 0:
            self.empty_sent += 1
        elif len(data) > MAX_DATAGRAM:
            self.oversize_sent += 1

    def wait_drained(self, timeout: float = 5.0) -> None:
        """Until the server socket's receive queue is empty."""
        deadline = time.monotonic() + timeout
        while self.rxq.rx_queue() and time.monotonic() < deadline:
            time.sleep(0.001)

    def sync_stats(self) -> dict:
        self.wait_drained()
        return self.server.stats()

    @contextlib.contextmanager
    def quiet(self) -> Any:
        """Pause the good client (per-datagram counter deltas must be exact)."""
        c = self.client
        if c is None or c.paused:
            yield
            return
        c.pause()
        try:
            yield
        finally:
            c.resume()

    def fail(self, text: str) -> None:
        self.failures.append(text)
        print(f"  FAILURE: {text}", flush=True)


def drain(sock: socket.socket, limit: int = 100000) -> int:
    n = 0
    recv = sock.recv
    try:
        while n < limit:
            recv(65536)
            n += 1
    except (BlockingIOError, InterruptedError):
        pass
    except OSError:
        pass
    return n


class Peer:
    """A client socket for the sequences: requests matched to their answers."""

    def __init__(self, ctx: Ctx, sock: socket.socket | None = None) -> None:
        self.ctx = ctx
        self.sock = sock or ctx.socket(rcvbuf=1 << 20)
        self.rng = random.Random(ctx.cfg.seed ^ 0x5EED ^ self.sock.getsockname()[1])
        self.mid = self.rng.randrange(0x10000)
        self.inbox: list[Message] = []

    def next_mid(self) -> int:
        self.mid = (self.mid + 1) & 0xFFFF
        return self.mid

    def send(self, data: bytes) -> None:
        self.ctx.send(self.sock, data)

    def recv(self, timeout: float) -> Message | None:
        if self.inbox:
            return self.inbox.pop(0)
        if not wait_readable(self.sock, timeout):
            return None
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, OSError):
            return None
        try:
            return decode(data)
        except Exception:  # noqa: BLE001
            return None

    def close(self) -> None:
        self.sock.close()

    def request(
        self,
        code: int,
        path: str,
        query: tuple[str, ...] = (),
        opts: list | tuple = (),
        payload: bytes = b"",
        *,
        mtype: int = CON,
        token: bytes | None = None,
        mid: int | None = None,
        timeout: float = 4.0,
        separate: str = "ack",
    ) -> tuple[Message | None, bytes]:
        """Send a request; return (its response or None, the datagram sent).

        A CON is retransmitted once after 2 s; an empty ACK means a separate
        response follows, which is ACKed (``separate="ack"``), reset
        (``"rst"``) or ignored."""
        token = self.rng.randbytes(4) if token is None else token
        mid = self.next_mid() if mid is None else mid
        data = make_request(mtype, code, mid, token, path, query, opts, payload)
        return self.exchange(data, timeout=timeout, separate=separate), data

    def exchange(self, data: bytes, timeout: float = 4.0, separate: str = "ack") -> Message | None:
        msg = decode(data)
        t0 = time.monotonic()
        self.send(data)
        retx = t0 + 2.0 if msg.mtype == CON else float("inf")
        acked = False
        while True:
            now = time.monotonic()
            if now >= t0 + timeout:
                return None
            if now >= retx and not acked:
                self.send(data)
                retx = float("inf")
            m = self.recv(min(t0 + timeout, retx) - now)
            if m is None:
                continue
            if m.mtype in (ACK, RST) and m.mid == msg.mid:
                if m.mtype == RST:
                    return m
                if m.code == 0:
                    acked = True
                    continue
                if m.token == msg.token:
                    return m
            if m.token == msg.token and m.code != 0 and m.mtype in (CON, NON):
                if m.mtype == CON:
                    if separate == "ack":
                        self.send(bytes((0x60, 0, m.mid >> 8, m.mid & 0xFF)))
                    elif separate == "rst":
                        self.send(bytes((0x70, 0, m.mid >> 8, m.mid & 0xFF)))
                return m
            self.inbox_other(m)

    def inbox_other(self, m: Message) -> None:
        """A message for nothing we wait for: a notification gets an RST
        (stale observation) or an ACK when it is CON and wanted."""
        if m.mtype == CON:
            self.send(bytes((0x70, 0, m.mid >> 8, m.mid & 0xFF)))


# ---------------------------------------------------------------------------
# findings: minimise and save
# ---------------------------------------------------------------------------


def _errors_total(st: dict) -> int:
    s = st["stats"]
    return st["hub_errors"] + sum(s.get(k, 0) for k in ERROR_COUNTERS)


def _new_sigs(before: dict, after: dict) -> dict[str, int]:
    b, a = before.get("errors_by_sig", {}), after.get("errors_by_sig", {})
    return {k: v - b.get(k, 0) for k, v in a.items() if v > b.get(k, 0)}


def counted(ctx: Ctx, st: dict) -> int:
    """Datagrams the server counted as received (exactly one counter each)."""
    s = st["stats"]
    io = st.get("io", {})
    total = 0
    for k in RECEIVE_COUNTERS:
        v = s.get(k)
        if v is None and k in ("truncated", "shed_early"):
            v = io.get(k, 0)  # io_uring: truncated is in the ring's counters only
        total += v or 0
    for k in ctx.extra_counters:
        total += s.get(k, 0)
    return total


def counter_deltas(before: dict, after: dict) -> dict[str, int]:
    out = {}
    for src in ("stats", "io"):
        b, a = before.get(src, {}), after.get(src, {})
        for k, v in a.items():
            if isinstance(v, int) and v != b.get(k, 0):
                out[f"io.{k}" if src == "io" else k] = v - b.get(k, 0)
    return out


class Replayer:
    """Send datagrams from one socket and see what the server made of them."""

    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.sock = ctx.socket(rcvbuf=4 << 20)
        self.mid = random.Random(ctx.cfg.seed).randrange(0x10000)

    def close(self) -> None:
        self.sock.close()

    def run(
        self, datagrams: list[bytes], wait_answers: bool = True, fresh_mid: bool = False
    ) -> dict:
        """Send, wait for the CONs' answers (when asked), diff the counters.

        ``fresh_mid`` gives each datagram a new MID (a replayed one would be
        answered from the server's deduplication cache, not handled again)."""
        ctx = self.ctx
        if fresh_mid:
            out = []
            for d in datagrams:
                if len(d) >= 4:
                    self.mid = (self.mid + 1) & 0xFFFF
                    d = d[:2] + struct.pack("!H", self.mid) + d[4:]
                out.append(d)
            datagrams = out
        drain(self.sock)
        before = ctx.sync_stats()
        sent_before, empty_before = ctx.sent, ctx.empty_sent
        cons = {}
        for d in datagrams:
            ctx.send(self.sock, d)
            if is_con_header(d) and not (len(d) >= 2 and d[1] >= 64 and d[1] != 0):
                cons[d[2] << 8 | d[3]] = d
        answered: set[int] = set()
        if wait_answers and cons:
            deadline = time.monotonic() + (0.8 if len(datagrams) < 50 else 3.0)
            while time.monotonic() < deadline and len(answered) < len(cons):
                if not wait_readable(self.sock, deadline - time.monotonic()):
                    break
                try:
                    data = self.sock.recv(65536)
                except OSError:
                    continue
                if len(data) >= 4 and (data[0] >> 4) & 3 in (ACK, RST):
                    answered.add(data[2] << 8 | data[3])
        after = ctx.sync_stats()
        n = ctx.sent - sent_before
        empty = ctx.empty_sent - empty_before
        got = counted(ctx, after) - counted(ctx, before)
        expected = n
        if ctx.gap_empty_ackrst:  # only the Empty ACK/RST that matched something count
            b_s, a_s = before["stats"], after["stats"]
            matched = sum(
                a_s.get(k, 0) - b_s.get(k, 0) for k in ("resets_received", "responses_acked")
            )
            expected = n - empty + min(matched, empty)
        return {
            "sent": n,
            "counted": got,
            "expected": expected,
            "empty": empty,
            "deltas": counter_deltas(before, after),
            "errors": _errors_total(after) - _errors_total(before),
            "sigs": _new_sigs(before, after),
            "unanswered": [cons[m] for m in cons if m not in answered] if wait_answers else [],
            "tracebacks": after.get("tracebacks", {}),
            "dead": not ctx.server.alive(),
        }


def bad(result: dict) -> list[str]:
    why = []
    if result["errors"] or result["sigs"]:
        why.append("traceback")
    if result["unanswered"]:
        why.append("unanswered")
    if result["counted"] != result["expected"]:
        why.append("unaccounted")
    return why


def shrink_candidates(d: bytes) -> list[bytes]:
    """Smaller variants of one datagram, most promising first."""
    out = []
    try:
        m = decode(d)
    except Exception:  # noqa: BLE001
        m = None
    if m is not None:
        if m.payload:
            out.append(encode(Message(m.mtype, m.code, m.mid, m.token, m.options, b"")))
        if m.token:
            out.append(encode(Message(m.mtype, m.code, m.mid, b"", m.options, m.payload)))
        for i in range(len(m.options)):
            opts = m.options[:i] + m.options[i + 1 :]
            with contextlib.suppress(Exception):
                out.append(encode(Message(m.mtype, m.code, m.mid, m.token, opts, m.payload)))
        for i, (num, val) in enumerate(m.options):
            if len(val) > 1 and num not in (11, 15, 23, 27):
                opts = list(m.options)
                opts[i] = (num, val[: len(val) // 2])
                with contextlib.suppress(Exception):
                    out.append(encode(Message(m.mtype, m.code, m.mid, m.token, opts, m.payload)))
    else:
        step = max(1, len(d) // 8)
        for i in range(0, len(d), step):
            out.append(d[:i] + d[i + step :])
        out.append(d[: len(d) - 1])
    return [c for c in out if c and c != d and len(c) < len(d) + 1]


def minimise(
    ctx: Ctx, rep: Replayer, d: bytes, still: Any, budget: int = 120, answers: bool = False
) -> bytes:
    """Greedy shrinking of one datagram while ``still(result)`` holds."""
    tries = 0
    improved = True
    while improved and tries < budget:
        improved = False
        for cand in shrink_candidates(d):
            tries += 1
            if tries > budget:
                break
            if still(rep.run([cand], wait_answers=answers, fresh_mid=True)):
                d = cand
                improved = True
                break
    return d


def save_finding(
    ctx: Ctx,
    kind: str,
    signature: str,
    datagrams: list[bytes],
    note: str,
    traceback_text: str = "",
) -> Path | None:
    """Save a reproducer in the findings directory unless one with this
    signature is there already."""
    directory = ctx.cfg.findings_dir
    if directory is None:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    for f in list(directory.glob("*.hex")):
        with contextlib.suppress(OSError):
            if f"# signature: {signature}\n" in f.read_text():
                return f
    digest = hashlib.sha1((signature + "".join(map(hexs, datagrams))).encode()).hexdigest()[:10]
    slug = re.sub(r"[^a-z0-9]+", "-", signature.lower())[:40].strip("-")
    path = directory / f"{kind}-{slug}-{digest}.hex"
    lines = [
        f"# kind: {kind}",
        f"# signature: {signature}",
        f"# found by scripts/fuzz.py --seed {ctx.cfg.seed} on the {ctx.server.backend} hub, "
        f"{time.strftime('%Y-%m-%d')}",
        f"# note: {note}",
    ]
    if traceback_text:
        lines += ["# traceback (first seen):"] + [
            "#   " + ln for ln in traceback_text.strip().splitlines()[-12:]
        ]
    lines += ["# one datagram per line (hex), sent in order from one socket"]
    lines += [hexs(d) for d in datagrams]
    path.write_text("\n".join(lines) + "\n")
    readme = directory / "README.md"
    with contextlib.suppress(OSError):
        text = readme.read_text() if readme.exists() else ""
        if path.name not in text:
            with open(readme, "a") as f:
                f.write(f"\n* `{path.name}` ({kind}, found automatically): {signature}. {note}\n")
    print(f"  saved {path.relative_to(REPO) if path.is_relative_to(REPO) else path}", flush=True)
    return path


def record_finding(
    ctx: Ctx, kind: str, sig: str, datagrams: list[bytes], note: str, tb: str = ""
) -> None:
    key = f"{kind}:{sig}"
    if key in ctx.known_sigs:
        return
    ctx.known_sigs.add(key)
    path = save_finding(ctx, kind, sig, datagrams, note, tb)
    ctx.findings.append(
        {
            "kind": kind,
            "signature": sig,
            "datagrams": [hexs(d) for d in datagrams[:20]],
            "count": len(datagrams),
            "note": note,
            "file": str(path) if path else None,
            "traceback": tb,
        }
    )


def investigate_single(ctx: Ctx, rep: Replayer, d: bytes, result: dict, origin: str) -> None:
    """A datagram that misbehaved on its own: minimise and save it per kind."""
    why = bad(result)
    if "traceback" in why:
        sig = next(iter(result["sigs"]), "hub error (no signature)")
        if f"traceback:{sig}" in ctx.known_sigs:
            return

        def still(r: dict, sig: str = sig) -> bool:
            return sig in r["sigs"] or (sig.startswith("hub error") and r["errors"] > 0)

        small = minimise(ctx, rep, d, still, ctx.cfg.minimise_budget)
        final = rep.run([small], fresh_mid=True)
        tb = final["tracebacks"].get(sig, "") or result["tracebacks"].get(sig, "")
        note = f"from {origin}; "
        if final["unanswered"]:
            note += "the CON request gets no answer; "
        note += f"the datagram decodes as {describe(small)}"
        record_finding(ctx, "traceback", sig, [small], note, tb)
    elif "unanswered" in why:
        sig = f"unanswered {classify(d)}"
        small = minimise(
            ctx, rep, d, lambda r: bool(r["unanswered"]), ctx.cfg.minimise_budget // 4, True
        )
        record_finding(ctx, "unanswered", sig, [small], f"from {origin}: {describe(small)}")
    if "unaccounted" in why:
        delta = result["counted"] - result["expected"]
        sig = f"unaccounted {classify(d)} (counted {delta:+d})"
        record_finding(
            ctx, "unaccounted", sig, [d], f"from {origin}: {describe(d)}; deltas {result['deltas']}"
        )


def classify(d: bytes) -> str:
    """A coarse class of a datagram for signatures: what the server should see."""
    if len(d) < 4:
        return "short datagram"
    if d[0] >> 6 != 1:
        return "wrong version"
    t = ("CON", "NON", "ACK", "RST")[(d[0] >> 4) & 3]
    code = d[1]
    if code == 0:
        return f"Empty {t} ({len(d)} bytes)"
    cls = code >> 5
    kind = "request" if code < 32 else ("reserved class" if cls in (1, 3, 6, 7) else "response")
    return f"{t} {kind} {cls}.{code & 31:02d}"


def describe(d: bytes) -> str:
    try:
        return repr(decode(d))
    except Exception as e:  # noqa: BLE001
        return f"undecodable {len(d)}-byte datagram ({e})"


# ---------------------------------------------------------------------------
# phases
# ---------------------------------------------------------------------------


def load_corpus(directory: Path) -> list[tuple[Path, list[bytes], dict[str, str]]]:
    """The regression corpus: *.hex (one hex datagram per line, # comments)
    and *.bin (one raw datagram)."""
    out = []
    if not directory.is_dir():
        return out
    for f in sorted(directory.iterdir()):
        if f.suffix == ".hex":
            meta, grams = {}, []
            for line in f.read_text().splitlines():
                line = line.strip()
                if line.startswith("#"):
                    k, sep, v = line[1:].strip().partition(":")
                    if sep and k.strip() in ("kind", "signature", "expect", "note"):
                        meta.setdefault(k.strip(), v.strip())
                elif line:
                    grams.append(bytes.fromhex(line))
            out.append((f, grams, meta))
        elif f.suffix == ".bin":
            out.append((f, [f.read_bytes()], {}))
    return out


def phase_corpus(ctx: Ctx) -> dict:
    """Replay the regression corpus, one file at a time."""
    rep = Replayer(ctx)
    results = {}
    try:
        for path, grams, meta in load_corpus(ctx.cfg.corpus_dir):
            r = rep.run(grams)
            why = bad(r)
            if meta.get("kind") == "gap" and why == ["unaccounted"] and ctx.gap_empty_ackrst:
                why = []  # a known counting gap, reported separately
            results[path.name] = "ok" if not why else "FAILS: " + ", ".join(why)
            if why:
                detail = ""
                if r["sigs"]:
                    detail = "; ".join(r["sigs"])
                elif r["unanswered"]:
                    detail = f"{len(r['unanswered'])} CON unanswered"
                else:
                    detail = f"counted {r['counted']} of {r['expected']}"
                ctx.fail(f"regression corpus {path.name} still fails: {', '.join(why)} ({detail})")
                for sig in r["sigs"]:
                    ctx.known_sigs.add(f"traceback:{sig}")
            for sig in meta.get("signature", "").split("\n"):
                if sig:
                    ctx.known_sigs.add(f"{meta.get('kind', 'traceback')}:{sig}")
    finally:
        rep.close()
    return results


def phase_probes(ctx: Ctx, mut: Mutator) -> dict:
    """Each mutator kind, one datagram at a time: which counter does it land
    in, is every CON answered, does anything raise."""
    rep = Replayer(ctx)
    table: dict[str, collections.Counter] = {}
    try:
        # the Empty ACK/RST gap first: does a stray Empty ACK/RST land anywhere?
        ctx.gap_empty_ackrst = False
        landed = collections.Counter()
        for first in (0x60, 0x70):
            for _ in range(3):
                d = bytes((first, 0)) + os.urandom(2)
                r = rep.run([d])
                landed.update(r["deltas"])
                if r["counted"] == 0:
                    ctx.gap_empty_ackrst = True
                    unknown = [
                        k
                        for k, v in r["deltas"].items()
                        if v == 1 and k not in RECEIVE_COUNTERS and not k.startswith("io.")
                    ]
                    if len(unknown) == 1 and unknown[0] not in ctx.extra_counters:
                        ctx.extra_counters.append(unknown[0])  # a counter added since
                        ctx.gap_empty_ackrst = False
        if ctx.gap_empty_ackrst:
            ctx.notes.append(
                "COUNTING GAP: an Empty ACK or RST (4 bytes, code 0.00) whose MID matches "
                "no exchange of the server lands in no counter (MessageLayer.receive returns "
                "None without counting; only a matched one counts, as resets_received or "
                "responses_acked)"
            )
            record_finding(
                ctx,
                "gap",
                "Empty ACK/RST matching no exchange lands in no counter",
                [bytes((0x60, 0, 0x12, 0x34)), bytes((0x70, 0, 0x12, 0x35))],
                "MessageLayer.receive: code 0.00, type ACK/RST, no exchange with that MID: "
                "returns None, no stats key incremented",
            )
        kinds = ["valid", *MUTATORS]
        for name in kinds:
            c = table.setdefault(name, collections.Counter())
            for _ in range(ctx.cfg.probes_per_kind):
                d = mut.of_kind(name)
                r = rep.run([d], fresh_mid=name != "empty_ack_rst")
                for k, v in r["deltas"].items():
                    if k in RECEIVE_COUNTERS or k in ctx.extra_counters or k == "io.truncated":
                        c[k] += v
                if r["dead"]:
                    record_finding(ctx, "crash", f"server died on {classify(d)}", [d], name)
                    raise RuntimeError("the server died during the probes")
                if bad(r):
                    investigate_single(ctx, rep, d, r, f"probe of mutator {name}")
    finally:
        rep.close()
    return {k: dict(v) for k, v in table.items()}


def seq_block1(ctx: Ctx, scale: float) -> dict:
    p = Peer(ctx)
    codes = collections.Counter()
    unanswered = []

    def put(num: int, more: bool, szx: int, payload: bytes | None = None, extra=(), tag=None):
        size = 16 << min(szx, 6)
        body = payload if payload is not None else bytes([65 + num % 26]) * size
        opts = [(O.BLOCK1, block_uint(num, more, szx)), *extra]
        if tag is not None:
            opts.append((O.REQUEST_TAG, tag))
        r, data = p.request(PUT, "/store", opts=opts, payload=body)
        if r is None:
            unanswered.append(data)
        else:
            codes[Code(r.code).dotted] += 1
        return r

    try:
        for szx in (0, 2, 6):  # in order, complete
            for n in range(3):
                put(n, n < 2, szx)
        put(0, True, 2)  # a gap
        put(2, True, 2)
        put(0, True, 2)  # overlaps and restarts
        put(1, True, 2)
        put(1, True, 2)
        put(0, True, 2)
        put(1, False, 2)
        put(0, True, 6)  # size changes: smaller, then larger again
        put(4, True, 4)
        put(3, True, 5)
        put(0, True, 2, payload=b"short")  # a payload that does not fit the block
        put(0, False, 2, payload=b"x" * 200)
        put(5, False, 3)  # a last block with no start
        put(0, True, 2, extra=[(O.SIZE1, uint(2 << 20))])  # Size1 over the limit
        put(0, True, 2, extra=[(O.SIZE1, uint(0xFFFFFFFF))])
        put((1 << 20) - 1, True, 0)  # the largest block number
        put(0, True, 2, extra=[(O.BLOCK2, block_uint(0, False, 0))])  # with early Block2
        for i in range(int(200 * scale)):  # parallel uploads left half done
            put(0, True, 6, tag=struct.pack("!I", i))
        put(0, True, 7)  # the reserved SZX 7 (known bug: no answer, traceback)
    finally:
        p.close()
    return {"codes": dict(codes), "unanswered": unanswered}


def seq_block2(ctx: Ctx, scale: float) -> dict:
    p = Peer(ctx)
    codes = collections.Counter()
    unanswered = []
    try:
        for target, query in (
            ("/large", ("size=4096",)),
            ("/hello", ()),
            ("/.well-known/core", ()),
        ):
            for szx in range(7):
                for num in (0, 1, 3, 1000, (1 << 16), (1 << 20) - 1):
                    r, data = p.request(
                        GET, target, query, opts=[(O.BLOCK2, block_uint(num, False, szx))]
                    )
                    if r is None:
                        unanswered.append(data)
                    else:
                        codes[Code(r.code).dotted] += 1
        for target in ("/large", "/hello"):  # the reserved SZX 7 (known bug)
            r, data = p.request(GET, target, opts=[(O.BLOCK2, block_uint(1, False, 7))])
            if r is None:
                unanswered.append(data)
            else:
                codes[Code(r.code).dotted] += 1
    finally:
        p.close()
    return {"codes": dict(codes), "unanswered": unanswered}


def seq_observe_storm(ctx: Ctx, scale: float) -> dict:
    """Many registrations with new tokens, deregistrations, replacements, RSTs."""
    p = Peer(ctx, ctx.socket(rcvbuf=8 << 20))
    n = max(20, int(1000 * scale))
    before = after = ctx.server.stats()["tables"].get("observers", 0)
    retransmitted = 0
    tokens = [struct.pack("!I", i) + os.urandom(2) for i in range(n)]
    unanswered = []
    codes = collections.Counter()
    try:
        pending = {}  # mid -> [datagram, next retransmission, interval, left]
        for tok in tokens:  # a burst of registrations, no waiting
            mid = p.next_mid()
            data = make_request(
                CON, GET, mid, tok, "/counter", ("interval=0.2",), [(O.OBSERVE, b"")]
            )
            p.send(data)
            iv = 2.0 * (1 + p.rng.random() * 0.5)
            pending[mid] = [data, time.monotonic() + iv, iv, 4]
        # a burst this size from one source may engage early shedding (by
        # design): like any RFC 7252 client, retransmit what got no answer
        deadline = time.monotonic() + 20
        retransmitted = 0
        while pending and time.monotonic() < deadline:
            now = time.monotonic()
            for e in pending.values():
                if now >= e[1] and e[3]:
                    p.send(e[0])
                    retransmitted += 1
                    e[2] *= 2
                    e[1] = now + e[2]
                    e[3] -= 1
            m = p.recv(0.05)
            if m is None:
                continue
            if m.mtype == ACK and m.mid in pending:
                codes[Code(m.code).dotted] += 1
                del pending[m.mid]
            elif m.mtype == CON:
                p.send(bytes((0x60, 0, m.mid >> 8, m.mid & 0xFF)))  # ACK notifications
        pending = {mid: e[0] for mid, e in pending.items()}
        unanswered += list(pending.values())
        third = n // 3
        for tok in tokens[:third]:  # deregister
            r, data = p.request(GET, "/counter", opts=[(O.OBSERVE, b"\x01")], token=tok)
            if r is None:
                unanswered.append(data)
        for tok in tokens[third : 2 * third]:  # re-register with the same token (replace)
            r, data = p.request(
                GET, "/counter", ("interval=0.2",), opts=[(O.OBSERVE, b"")], token=tok
            )
            if r is None:
                unanswered.append(data)
        # now reset every notification until the server has no observer of ours left
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            m = p.recv(0.05)
            if m is not None:
                if m.mtype in (CON, NON) and m.code:
                    p.send(bytes((0x70, 0, m.mid >> 8, m.mid & 0xFF)))
                continue
            left = ctx.server.stats()["tables"].get("observers", 0) - before
            if left <= 0:
                break
        after = ctx.server.stats()["tables"].get("observers", 0)
        if after > before:
            ctx.notes.append(
                f"observe storm: {after - before} observers still registered 10 s after "
                "every notification was answered with RST"
            )
    finally:
        p.close()
    return {
        "registrations": n,
        "retransmitted": retransmitted,
        "codes": dict(codes),
        "unanswered": unanswered,
        "observers_left": after - before,
    }


def seq_mid_reuse(ctx: Ctx, scale: float) -> dict:
    """The same MID with new tokens: each must get its own answer."""
    p = Peer(ctx)
    wrong, unanswered = [], []
    try:
        for _ in range(max(5, int(50 * scale))):
            mid = p.rng.randrange(0x10000)
            for path in ("/hello", "/sensors/7", "/hello"):
                r, data = p.request(GET, path, mid=mid)
                if r is None:
                    unanswered.append(data)
                elif r.token != decode(data).token or (
                    path == "/sensors/7" and b"celsius" not in r.payload
                ):
                    wrong.append(data)
        # the same MID, new tokens, sent back to back without waiting
        mid = p.rng.randrange(0x10000)
        toks = [os.urandom(4) for _ in range(20)]
        for t in toks:
            p.send(make_request(CON, GET, mid, t, "/hello"))
        seen = set()
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and len(seen) < len(toks):
            m = p.recv(0.1)
            if m is not None and m.mid == mid:
                seen.add(m.token)
    finally:
        p.close()
    if wrong:
        ctx.fail(f"MID reuse: {len(wrong)} requests got an answer for another token/resource")
        record_finding(ctx, "wrong-answer", "MID reuse answered from the old exchange", wrong, "")
    return {
        "unanswered": unanswered,
        "wrong": len(wrong),
        "back_to_back_answered": f"{len(seen)}/{len(toks)} tokens",
    }


def seq_separate_rst(ctx: Ctx, scale: float) -> dict:
    """GET /slow?ms=800: an empty ACK, then a separate CON response, answered
    with RST (and variants: ACK, ignored, RST with a wrong MID)."""
    out = {}
    unanswered = []
    for how in ("rst", "ack", "wrong-rst", "ignore"):
        p = Peer(ctx)
        try:
            before = ctx.server.stats()
            tok = os.urandom(4)
            mid = p.next_mid()
            data = make_request(CON, GET, mid, tok, "/slow", ("ms=800",))
            p.send(data)
            got_ack = resp = None
            deadline = time.monotonic() + 4
            while time.monotonic() < deadline and resp is None:
                m = p.recv(0.1)
                if m is None:
                    continue
                if m.mtype == ACK and m.mid == mid and m.code == 0:
                    got_ack = time.monotonic()
                elif m.token == tok and m.code:
                    resp = m
            if resp is None:
                unanswered.append(data)
                continue
            if resp.mtype == CON:
                if how == "rst":
                    p.send(bytes((0x70, 0, resp.mid >> 8, resp.mid & 0xFF)))
                elif how == "ack":
                    p.send(bytes((0x60, 0, resp.mid >> 8, resp.mid & 0xFF)))
                elif how == "wrong-rst":
                    w = (resp.mid + 1) & 0xFFFF
                    p.send(bytes((0x70, 0, w >> 8, w & 0xFF)))
            retx = 0
            if how in ("ignore", "wrong-rst") and ctx.cfg.slow_sequences:
                t_end = time.monotonic() + 3.5  # the first retransmission comes at 2-3 s
                while time.monotonic() < t_end:
                    m = p.recv(0.1)
                    if m is not None and m.token == tok:
                        retx += 1
                        p.send(bytes((0x70, 0, m.mid >> 8, m.mid & 0xFF)))
                        break
            after = ctx.server.stats()
            out[how] = {
                "empty_ack": got_ack is not None,
                "separate_type": Type(resp.mtype).name,
                "code": Code(resp.code).dotted,
                "retransmissions_seen": retx,
                "deltas": {
                    k: v
                    for k, v in counter_deltas(before, after).items()
                    if k
                    in (
                        "resets_received",
                        "responses_acked",
                        "separate_acks",
                        "separate_responses",
                        "requests_received",
                    )
                },
                "by_mid_left": after["tables"].get("by_mid", 0),
            }
        finally:
            p.close()
    out["unanswered"] = unanswered
    return out


def seq_duplicates(ctx: Ctx, scale: float) -> dict:
    """One CON retransmitted many times at once (fast and slow handlers)."""
    p = Peer(ctx)
    res = {}
    try:
        for path, query in (("/hello", ()), ("/slow", ("ms=300",))):
            mid = p.next_mid()
            tok = os.urandom(4)
            data = make_request(CON, GET, mid, tok, path, query)
            copies = max(5, int(30 * scale))
            for _ in range(copies):
                p.send(data)
            answers = collections.Counter()
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                m = p.recv(0.1)
                if m is None:
                    if answers.get("response"):
                        break
                    continue
                if m.mid == mid and m.mtype == ACK:
                    answers["response" if m.code else "empty_ack"] += 1
            res[path] = dict(answers)
            if not answers.get("response"):
                ctx.fail(f"duplicate storm on {path}: no response")
                record_finding(ctx, "unanswered", f"duplicate storm {path}", [data] * 3, "")
    finally:
        p.close()
    return res


def seq_port_storm(ctx: Ctx, scale: float) -> dict:
    """Requests from thousands of distinct source ports (sockets in chunks)."""
    soft, hard = raise_nofile()
    want = max(50, ctx.cfg.ports)
    chunk = max(10, min(500, (soft - 200) // 2))
    answered = total = 0
    unanswered = []
    created = 0
    rng = random.Random(ctx.cfg.seed ^ 0xF00D)
    while created < want:
        socks = []
        try:
            for _ in range(min(chunk, want - created)):
                socks.append(ctx.socket(rcvbuf=65536))
            created += len(socks)
            expect = {}
            for s in socks:
                mid = rng.randrange(0x10000)
                path = rng.choice(("/hello", "/sensors/3", "/.well-known/core", "/store"))
                data = make_request(CON, GET, mid, os.urandom(2), path)
                ctx.send(s, data)
                expect[s.fileno()] = (s, mid, data)
                total += 1
            poller = select.poll()
            for s in socks:
                poller.register(s, select.POLLIN)
            deadline = time.monotonic() + 3.0
            retx_at = time.monotonic() + 2.0
            retxed = False
            while expect and time.monotonic() < deadline:
                if not retxed and time.monotonic() >= retx_at:
                    retxed = True
                    for s, _mid, data in expect.values():
                        ctx.send(s, data)
                for fd, _ev in poller.poll(50):
                    e = expect.get(fd)
                    if e is None:
                        continue
                    try:
                        d = e[0].recv(65536)
                    except OSError:
                        continue
                    if len(d) >= 4 and (d[2] << 8 | d[3]) == e[1]:
                        del expect[fd]
                        poller.unregister(fd)
                        answered += 1
            unanswered += [e[2] for e in expect.values()]
        finally:
            for s in socks:
                s.close()
    return {
        "sockets": created,
        "chunk": chunk,
        "nofile": [soft, hard],
        "answered": f"{answered}/{total}",
        "unanswered": unanswered,
    }


SEQUENCES = (
    ("block1", seq_block1),
    ("block2", seq_block2),
    ("observe_storm", seq_observe_storm),
    ("mid_reuse", seq_mid_reuse),
    ("separate_rst", seq_separate_rst),
    ("duplicates", seq_duplicates),
    ("port_storm", seq_port_storm),
)


def phase_sequences(ctx: Ctx) -> dict:
    results = {}
    for name, fn in SEQUENCES:
        t0 = time.monotonic()
        before = ctx.server.stats()
        try:
            r = fn(ctx, ctx.cfg.scale)
        except Exception as e:  # noqa: BLE001 - a tool bug must not hide the server's state
            ctx.fail(f"sequence {name} raised {e!r}")
            r = {"error": traceback.format_exc()}
        after = ctx.sync_stats()
        r["seconds"] = round(time.monotonic() - t0, 2)
        sigs = _new_sigs(before, after)
        if sigs:
            r["tracebacks"] = sigs
        results[name] = r
        un = r.get("unanswered") or []
        r["unanswered"] = [hexs(d) for d in un]
        if un:
            ctx.fail(f"sequence {name}: {len(un)} CON request(s) unanswered")
            # each unanswered one on its own: a traceback or plain silence?
            rep = Replayer(ctx)
            try:
                with ctx.quiet():
                    for d in un[:3]:
                        single = rep.run([d])
                        if bad(single):
                            investigate_single(ctx, rep, d, single, f"sequence {name}")
            finally:
                rep.close()
        for sig, n in sigs.items():
            if f"traceback:{sig}" not in ctx.known_sigs:
                tb = after["tracebacks"].get(sig, "")
                record_finding(ctx, "traceback", sig, un[:1], f"sequence {name} ({n} times)", tb)
        print(f"  sequence {name}: {short(r)}", flush=True)
    return results


def short(r: dict) -> str:
    parts = []
    for k, v in r.items():
        if k in ("unanswered",):
            parts.append(f"unanswered={len(v)}")
        elif k in ("error",):
            parts.append("ERROR")
        elif isinstance(v, dict) and len(json.dumps(v)) > 160:
            parts.append(f"{k}=({len(v)} entries)")
        else:
            parts.append(f"{k}={v}")
    return ", ".join(parts)


def phase_flood(ctx: Ctx, mut: Mutator) -> dict:
    """``count`` mutated datagrams (or ``duration`` s), paced by the server's
    receive queue; errors are attributed to windows of what was sent."""
    cfg = ctx.cfg
    socks = [ctx.socket(rcvbuf=4 << 20) for _ in range(cfg.sockets)]
    nsocks = len(socks)
    history: collections.deque = collections.deque(maxlen=cfg.history)
    kinds: collections.Counter = collections.Counter()
    windows: dict[str, list[tuple[int, int]]] = {}
    truncations = mut.queue_all_truncations(cfg.truncate_all_seeds)
    count = cfg.count
    t0 = time.monotonic()
    end = t0 + cfg.duration if cfg.duration else float("inf")
    last_poll = t0
    last_seq = 0
    base = ctx.server.stats()
    prev_sigs = dict(base.get("errors_by_sig", {}))
    prev_err = _errors_total(base)
    rxq = ctx.rxq.rx_queue
    limit = cfg.queue_limit
    rate = cfg.rate
    sent = 0
    waits = polls = 0
    t_wait = t_drain = t_rpc = 0.0
    replies = 0
    max_rxq = 0
    send = ctx.send
    nxt = mut.next
    try:
        while sent < count and time.monotonic() < end:
            burst = min(cfg.burst, count - sent)
            for _ in range(burst):
                kind, d = nxt()
                s = socks[sent % nsocks]
                send(s, d)
                history.append((sent, sent % nsocks, d))
                kinds[kind.split("+")[0] if "+" in kind else kind] += 1
                sent += 1
            if not ctx.server.alive():
                raise RuntimeError("the server died during the flood")
            # pacing: the server's receive queue, then the optional rate
            tw = time.monotonic()
            q = rxq()
            if q > max_rxq:
                max_rxq = q
            while q > limit:
                waits += 1
                for s in socks:
                    replies += drain(s)
                time.sleep(0.0003)
                q = rxq()
            td = time.monotonic()
            t_wait += td - tw
            for s in socks:  # the replies: else their buffers fill and the kernel drops
                replies += drain(s)
            t_drain += time.monotonic() - td
            if rate:
                ahead = sent / rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
            now = time.monotonic()
            if now - last_poll >= cfg.poll_interval:
                st = ctx.server.stats()
                polls += 1
                t_rpc += time.monotonic() - now
                err = _errors_total(st)
                if err != prev_err:
                    grew = {
                        k: v - prev_sigs.get(k, 0)
                        for k, v in st.get("errors_by_sig", {}).items()
                        if v > prev_sigs.get(k, 0)
                    } or {"hub error (no signature)": err - prev_err}
                    for sig in grew:
                        w = windows.setdefault(sig, [])
                        if len(w) < 3:
                            w.append((max(0, last_seq - cfg.window_lag), sent))
                    prev_sigs = dict(st.get("errors_by_sig", {}))
                    prev_err = err
                last_poll = now
                last_seq = sent
                if cfg.progress:
                    rate_now = sent / (now - t0)
                    print(
                        f"\r  flood: {sent:>9,} sent, {rate_now:>8,.0f}/s, rxq {q:>7}",
                        end="",
                        flush=True,
                    )
        for s in socks:
            replies += drain(s)
    finally:
        elapsed = time.monotonic() - t0
        if cfg.progress:
            print(flush=True)
    result = {
        "sent": sent,
        "seconds": round(elapsed, 2),
        "rate": round(sent / elapsed) if elapsed else 0,
        "truncations_of_every_position": truncations,
        "flow_control_waits": waits,
        "seconds_pacing": round(t_wait, 2),  # reading rx_queue and waiting for it
        "seconds_draining_replies": round(t_drain, 2),
        "seconds_in_stats_polls": round(t_rpc, 2),
        "stats_polls": polls,
        "max_rx_queue_bytes": max_rxq,
        "replies_drained": replies,
        "kinds": dict(kinds.most_common()),
        "error_windows": {k: len(v) for k, v in windows.items()},
    }
    # attribute each new error signature to a datagram: replay its window, bisect
    ctx.wait_drained()
    time.sleep(0.05)
    st = ctx.server.stats()
    hist = list(history)
    first_seq = hist[0][0] if hist else 0
    with ctx.quiet():
        for sig, wins in windows.items():
            if f"traceback:{sig}" in ctx.known_sigs:
                continue
            lo, hi = wins[0]
            lo = max(lo, first_seq)
            cand = [h for h in hist if lo <= h[0] < hi]
            found = bisect_window(ctx, socks, cand, sig)
            tb = st.get("tracebacks", {}).get(sig, "")
            if found is None:
                record_finding(
                    ctx,
                    "traceback",
                    sig,
                    [h[2] for h in cand[-200:]],
                    "seen in the flood; not reproduced by replaying its window alone "
                    "(the last 200 datagrams of the window are kept)",
                    tb,
                )
            else:
                rep = Replayer(ctx)
                try:
                    r = rep.run([found])
                    investigate_single(ctx, rep, found, r, "the flood")
                    if f"traceback:{sig}" not in ctx.known_sigs:
                        record_finding(ctx, "traceback", sig, [found], "from the flood", tb)
                finally:
                    rep.close()
    for s in socks:
        s.close()
    return result


def bisect_window(ctx: Ctx, socks: list, cand: list, sig: str) -> bytes | None:
    """The one datagram of ``cand`` that raises ``sig`` when replayed (group
    testing, each datagram from the socket it first came from)."""

    def raises(group: list) -> bool:
        # fresh source sockets each time: the server's deduplication cache
        # would answer datagrams it saw from the same (peer, MID) again
        fresh = [ctx.socket(rcvbuf=4 << 20) for _ in socks]
        try:
            before = ctx.sync_stats()
            for _, si, d in group:
                ctx.send(fresh[si], d)
                if ctx.sent % 256 == 0:
                    while ctx.rxq.rx_queue() > ctx.cfg.queue_limit:
                        time.sleep(0.0005)
                    for s in fresh:
                        drain(s)
            after = ctx.sync_stats()
        finally:
            for s in fresh:
                s.close()
        if sig.startswith("hub error"):
            return _errors_total(after) > _errors_total(before)
        return sig in _new_sigs(before, after)

    if not cand or not raises(cand):
        return None
    budget = 60
    while len(cand) > 1 and budget:
        budget -= 1
        half = len(cand) // 2
        a, b = cand[:half], cand[half:]
        if raises(a):
            cand = a
        elif raises(b):
            cand = b
        else:
            return None  # needs datagrams from both halves: stateful
    for _, _, d in cand:
        return d
    return None


# ---------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class FuzzConfig:
    count: int = 1_000_000
    seed: int = 1
    hub: str | None = "uring"
    host: str = "127.0.0.1"
    rate: float | None = None  # datagrams/s; None: as fast as the server keeps up
    duration: float | None = None
    quick: bool = False
    sockets: int = 8
    burst: int = 64
    queue_limit: int = 192 * 1024  # server socket rx_queue bytes before pausing
    poll_interval: float = 0.5
    window_lag: int = 4096
    history: int = 200_000
    truncate_all_seeds: int = 200
    probes_per_kind: int = 20
    minimise_budget: int = 120
    scale: float = 1.0  # of the sequences
    ports: int = 3000
    slow_sequences: bool = True
    good_interval: float = 0.02
    good_giveup: float = 93.0  # RFC 7252 MAX_TRANSMIT_WAIT
    settle: float = 3.0
    server_cpu: int | None = None
    fuzzer_cpu: int | None = None
    corpus_dir: Path = CORPUS_DIR
    findings_dir: Path | None = CORPUS_DIR
    log_dir: Path | None = None
    server_path: str | None = None
    progress: bool = True
    strict_gaps: bool = False
    p99_limit_ms: float | None = None

    def quick_version(self) -> FuzzConfig:
        return dataclasses.replace(
            self,
            count=min(self.count, 50_000),
            truncate_all_seeds=20,
            probes_per_kind=6,
            scale=0.15,
            ports=2000,
            slow_sequences=False,
            settle=1.0,
            good_giveup=10.0,
            minimise_budget=40,
        )


def run(cfg: FuzzConfig) -> dict:
    """One fuzz run; returns the report (``report["ok"]`` says it all)."""
    if cfg.quick:
        cfg = cfg.quick_version()
    pin(cfg.fuzzer_cpu)
    raise_nofile()
    log_dir = cfg.log_dir or Path(tempfile.mkdtemp(prefix="greencoap-fuzz-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"server-{cfg.hub or 'default'}.log"
    corpus = seed_corpus(cfg.seed)
    mut = Mutator(corpus, cfg.seed)
    report: dict[str, Any] = {
        "config": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()
        },
        "corpus_size": len(corpus),
        "log": str(log_path),
    }
    server = client = None
    ctx = None
    snmp0 = snmp_counters()
    t_start = time.monotonic()
    try:
        server = ServerProc(cfg.hub, cfg.host, log_path, cfg.server_cpu, cfg.server_path)
        report["server"] = {
            "pid": server.pid,
            "port": server.port,
            "backend": server.backend,
            "greencoap": server.package,
        }
        print(
            f"server pid {server.pid} on {cfg.host}:{server.port}, {server.backend} hub "
            f"({server.package})",
            flush=True,
        )
        if cfg.hub and server.backend != cfg.hub:
            raise RuntimeError(f"asked for the {cfg.hub} hub, the server runs {server.backend}")
        ctx = Ctx(cfg, server)
        first = server.stats()
        sock0 = ctx.rxq.info()
        client = GoodClientProc(
            cfg.host, server.port, cfg.good_interval, cfg.good_giveup, cfg.fuzzer_cpu
        )
        report["good_client_pid"] = client.pid
        phases = report["phases"] = {}
        ctx.client = client
        print("phase 1: regression corpus", flush=True)
        t = time.monotonic()
        with ctx.quiet():
            report["corpus_replay"] = phase_corpus(ctx)
        phases["corpus"] = round(time.monotonic() - t, 2)
        print("phase 2: per-kind probes", flush=True)
        t = time.monotonic()
        with ctx.quiet():
            report["probes"] = phase_probes(ctx, mut)
        phases["probes"] = round(time.monotonic() - t, 2)
        print("phase 3: hostile sequences", flush=True)
        t = time.monotonic()
        report["sequences"] = phase_sequences(ctx)
        phases["sequences"] = round(time.monotonic() - t, 2)
        print(f"phase 4: flood of {cfg.count:,} mutated datagrams", flush=True)
        t = time.monotonic()
        report["flood"] = phase_flood(ctx, mut)
        phases["flood"] = round(time.monotonic() - t, 2)
        print("phase 5: settle and check", flush=True)
        time.sleep(cfg.settle)
        good = client.stop()
        client = ctx.client = None
        report["good_client"] = good
        # survival: alive, answers GET /hello
        if not server.alive():
            ctx.fail("the server process died")
        p = Peer(ctx)
        try:
            r, _ = p.request(GET, "/hello", timeout=5.0)
        finally:
            p.close()
        report["final_hello"] = None if r is None else Code(r.code).dotted
        if r is None or r.code != CONTENT:
            ctx.fail(f"the server does not answer GET /hello after the run ({r})")
        last = ctx.sync_stats()
        sock1 = ctx.rxq.info()
        snmp1 = snmp_counters()
        report["tables"] = last["tables"]
        report["stats"] = last["stats"]
        report["io"] = last.get("io", {})
        report["hub_errors"] = last["hub_errors"]
        report["errors_by_sig"] = last.get("errors_by_sig", {})
        accounting(ctx, report, first, last, good, sock0, sock1, snmp0, snmp1)
        survival(ctx, report, last, good)
    except Exception as e:  # noqa: BLE001
        if ctx is not None:
            ctx.fail(f"the run broke off: {e!r}")
        else:
            report.setdefault("failures", []).append(f"the run broke off: {e!r}")
        report["exception"] = traceback.format_exc()
    finally:
        if client is not None:
            client.kill()
        if server is not None:
            if not server.alive():
                died(ctx, report, server)
            server.stop()
            log = server.log_text()
            if "Fatal Python error" in log:
                i = log.find("Fatal Python error")
                report["fatal_error"] = log[i : i + 3000]
            report["log_tracebacks"] = log.count("Traceback")
            i = log.find("Traceback")
            if i >= 0:
                report["first_traceback"] = log[max(0, log.rfind("\n", 0, i) + 1) :][:4000]
                if ctx is not None:
                    ctx.fail(f"the server logged {report['log_tracebacks']} traceback(s)")
    report["seconds"] = round(time.monotonic() - t_start, 1)
    if ctx is not None:
        report["failures"] = report.get("failures", []) + ctx.failures
        report["findings"] = ctx.findings
        report["notes"] = ctx.notes
        report["sent_total"] = ctx.sent
    report["ok"] = not report.get("failures")
    return report


def died(ctx: Ctx | None, report: dict, server: ServerProc) -> None:
    """The server process is gone: say how, keep what was sent last."""
    status = server.exit_status()
    report["server_exit"] = status
    rebuilt = server.rebuilt()
    if ctx is None:
        report.setdefault("failures", []).append(f"the server process died: {status}")
        return
    if rebuilt:
        ctx.fail(
            f"the server process died ({status}) after {', '.join(rebuilt)} was rebuilt on "
            "disk while it ran: most likely that, not the input (nothing saved)"
        )
        return
    ctx.fail(f"the server process died: {status}")
    record_finding(
        ctx,
        "crash",
        f"server died ({status})",
        list(ctx.recent)[-200:],
        "the last 200 datagrams sent to the server before it died (replay them in order)",
        server.log_text()[-2000:],
    )


def accounting(
    ctx: Ctx,
    report: dict,
    first: dict,
    last: dict,
    good: dict,
    sock0: dict | None,
    sock1: dict | None,
    snmp0: dict,
    snmp1: dict,
) -> None:
    s0, s1 = first["stats"], last["stats"]
    io0, io1 = first.get("io", {}), last.get("io", {})
    rows = []
    for k in RECEIVE_COUNTERS + tuple(ctx.extra_counters):
        a, b = s0.get(k), s1.get(k)
        src = ""
        if b is None and k in ("truncated", "shed_early") and k in io1:
            a, b, src = io0.get(k, 0), io1.get(k, 0), " (hub.io.statistics only)"
        rows.append((k + src, (b or 0) - (a or 0)))
    server_counted = sum(v for _, v in rows)
    sent = ctx.sent + good.get("sent", 0)
    empty = ctx.empty_sent + good.get("empty_sent", 0)
    if sock0 is not None and sock1 is not None:
        drops = sock1["drops"] - sock0["drops"]
    else:  # no /proc/net/udp line for the server socket: the netns-wide count
        key = "Udp6RcvbufErrors" if ":" in ctx.host else "Udp.RcvbufErrors"
        drops = snmp1.get(key, 0) - snmp0.get(key, 0)
        ctx.notes.append(f"no /proc/net/udp line for the server socket: drops from {key}")
    matched_empty = sum(v for k, v in rows if k in ("resets_received", "responses_acked"))
    uncounted_empty = empty - matched_empty if ctx.gap_empty_ackrst else 0
    unexplained = sent - drops - server_counted - uncounted_empty
    acc = {
        "sent_total": sent,
        "sent_by_fuzzer": ctx.sent,
        "sent_by_good_client": good.get("sent", 0),
        "oversize_sent": ctx.oversize_sent,
        "empty_ack_rst_sent": empty,
        "server_counters": dict(rows),
        "server_counted": server_counted,
        "socket_drops": drops,
        "drops_from": "SO_MEMINFO" if ctx.rxq.dup is not None else "/proc/net/udp",
        "uncounted_empty_ack_rst": uncounted_empty,
        "unexplained": unexplained,
        "snmp_delta": {k: snmp1.get(k, 0) - snmp0.get(k, 0) for k in snmp1},
        "send_errors": ctx.send_errors,
    }
    report["accounting"] = acc
    if unexplained:
        ctx.fail(
            f"accounting: {unexplained:+d} datagrams unexplained (sent {sent}, counted "
            f"{server_counted}, dropped by the kernel {drops}, Empty ACK/RST in no counter "
            f"{uncounted_empty})"
        )
    if uncounted_empty and cfg_strict(ctx):
        ctx.fail(f"counting gap: {uncounted_empty} Empty ACK/RST datagrams in no counter")
    trunc = dict(rows).get("truncated", dict(rows).get("truncated (hub.io.statistics only)", 0))
    if trunc != ctx.oversize_sent:
        ctx.notes.append(
            f"oversized datagrams: sent {ctx.oversize_sent}, counted truncated {trunc}"
        )
    if "truncated" not in s1 and "truncated" in io1:
        ctx.notes.append(
            "COUNTING GAP (reporting): on the io_uring hub, Server.stats has no 'truncated' "
            "key; oversized datagrams are counted only in hub.io.statistics()['truncated']"
        )


def cfg_strict(ctx: Ctx) -> bool:
    return ctx.cfg.strict_gaps


def survival(ctx: Ctx, report: dict, last: dict, good: dict) -> None:
    s = last["stats"]
    for k in ERROR_COUNTERS:
        if s.get(k, 0):
            ctx.fail(f"server counter {k} = {s[k]}")
    if last["hub_errors"]:
        ctx.fail(f"hub errors = {last['hub_errors']}")
    for sig, n in last.get("errors_by_sig", {}).items():
        report.setdefault("error_signatures", {})[sig] = n
    for k, v in last["tables"].items():
        bound = TABLE_BOUNDS.get(k, DEFAULT_TABLE_BOUND)
        if v > bound:
            ctx.fail(f"table {k} = {v} after the run (bound {bound})")
    if "error" in good:
        ctx.fail(f"good client: {good['error']}")
        return
    if good.get("failures"):
        ctx.fail(
            f"good client: {len(good['failures'])} of {good['requests']} requests failed "
            f"(first: {good['failures'][0]['reason']} at t={good['failures'][0]['t']:.1f}s)"
        )
        record_finding(
            ctx,
            "good-client",
            "good client request failed: " + good["failures"][0]["reason"],
            [bytes.fromhex(good["failures"][0]["req"])],
            f"{len(good['failures'])} failures; during the run at t="
            + ", ".join(f"{f['t']:.1f}s" for f in good["failures"][:10]),
        )
    if good.get("requests", 0) == 0:
        ctx.fail("good client: no request completed")
    limit = ctx.cfg.p99_limit_ms
    if limit is not None and good.get("p99_ms", 0) > limit:
        ctx.fail(f"good client p99 {good['p99_ms']:.1f} ms > {limit} ms")


def print_summary(report: dict) -> None:
    w = sys.stdout.write
    w("\n=== greencoap fuzz summary ===\n")
    srv = report.get("server", {})
    w(f"hub: {srv.get('backend')}  server pid {srv.get('pid')}  log {report.get('log')}\n")
    fl = report.get("flood", {})
    if fl:
        w(
            f"flood: {fl['sent']:,} mutated datagrams in {fl['seconds']} s "
            f"({fl['rate']:,}/s), max server rx_queue {fl['max_rx_queue_bytes']:,} B, "
            f"{fl['flow_control_waits']:,} pacing waits\n"
        )
    acc = report.get("accounting")
    if acc:
        w("\naccounting (server port)\n")
        w(f"  {'datagrams sent (all sources)':<44}{acc['sent_total']:>12,}\n")
        w(f"  {'  by the fuzzer':<44}{acc['sent_by_fuzzer']:>12,}\n")
        w(f"  {'  by the good client':<44}{acc['sent_by_good_client']:>12,}\n")
        w(f"  {'  oversized (> 4052 bytes)':<44}{acc['oversize_sent']:>12,}\n")
        w(f"  {'  Empty ACK/RST':<44}{acc['empty_ack_rst_sent']:>12,}\n")
        for k, v in acc["server_counters"].items():
            w(f"  {'server ' + k:<44}{v:>12,}\n")
        w(f"  {'server counted (sum)':<44}{acc['server_counted']:>12,}\n")
        w(f"  {'kernel drops on the server socket':<44}{acc['socket_drops']:>12,}\n")
        w(f"  {'Empty ACK/RST in no counter (gap)':<44}{acc['uncounted_empty_ack_rst']:>12,}\n")
        w(f"  {'UNEXPLAINED (sent - all of the above)':<44}{acc['unexplained']:>12,}\n")
        for k, v in acc["snmp_delta"].items():
            w(f"  {'/proc/net/snmp ' + k + ' delta':<44}{v:>12,}\n")
    good = report.get("good_client")
    if good and "requests" in good:
        w(
            f"\ngood client: {good['answered']}/{good['requests']} answered, "
            f"{len(good['failures'])} failures, {good['retransmissions']} retransmissions, "
            f"latency p50 {good['p50_ms']:.2f} ms, p99 {good['p99_ms']:.2f} ms, "
            f"max {good['max_ms']:.2f} ms, codes {good['codes']}\n"
        )
    probes = report.get("probes")
    if probes:
        w("\nper-kind probes (single datagrams): the counters they landed in\n")
        for kind, landed in probes.items():
            text = ", ".join(f"{k} {v}" for k, v in sorted(landed.items())) or "NO COUNTER"
            w(f"  {kind:<16}{text}\n")
    tables = report.get("tables")
    if tables:
        w("tables after the run: " + ", ".join(f"{k}={v}" for k, v in tables.items()) + "\n")
    if report.get("error_signatures"):
        w("exceptions caught by the server:\n")
        for sig, n in report["error_signatures"].items():
            w(f"  {n:>8,} x {sig}\n")
    if report.get("server_exit"):
        w(f"the server process died: {report['server_exit']}\n")
    if report.get("fatal_error"):
        w("  " + report["fatal_error"].strip().replace("\n", "\n  ")[:3000] + "\n")
    if report.get("first_traceback"):
        w("first traceback in the server log:\n")
        w("  " + report["first_traceback"].strip().replace("\n", "\n  ")[:3000] + "\n")
    for n in report.get("notes", []):
        w(f"note: {n}\n")
    if report.get("findings"):
        w("findings:\n")
        for f in report["findings"]:
            w(f"  [{f['kind']}] {f['signature']}\n     {f['file']}\n")
            for d in f["datagrams"][:3]:
                w(f"     {d[:160]}\n")
    w(f"\n{'OK' if report['ok'] else 'FAILED'} in {report.get('seconds')} s\n")
    for f in report.get("failures", []):
        w(f"  failure: {f}\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--role", choices=("fuzz", "server", "client"), default="fuzz")
    ap.add_argument("--count", type=int, default=1_000_000, help="mutated datagrams in the flood")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--hub", choices=("uring", "epoll", "gevent"), default=None)
    ap.add_argument("--rate", type=float, default=None, help="datagrams/s (default: paced)")
    ap.add_argument("--duration", type=float, default=None, help="stop the flood after S s")
    ap.add_argument("--quick", action="store_true", help="the short version (tests)")
    ap.add_argument("--host", default="127.0.0.1", help="127.0.0.1 or ::1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--cpu", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--fd-channel", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--interval", type=float, default=0.02, help=argparse.SUPPRESS)
    ap.add_argument("--giveup", type=float, default=93.0, help=argparse.SUPPRESS)
    ap.add_argument("--sockets", type=int, default=8, help="fuzzer source sockets")
    ap.add_argument("--ports", type=int, default=3000, help="sockets in the port storm")
    ap.add_argument("--queue-limit", type=int, default=192 * 1024)
    ap.add_argument("--server-cpu", type=int, default=None)
    ap.add_argument("--fuzzer-cpu", type=int, default=None)
    ap.add_argument("--pin", action="store_true", help="server on CPU 1, fuzzer on CPU 0")
    ap.add_argument("--corpus", type=Path, default=CORPUS_DIR, help="regression corpus dir")
    ap.add_argument("--findings", type=Path, default=CORPUS_DIR, help="where to save findings")
    ap.add_argument("--no-save", action="store_true", help="do not save findings")
    ap.add_argument("--log-dir", type=Path, default=None)
    ap.add_argument("--server-path", default=None, help="PYTHONPATH for the server's greencoap")
    ap.add_argument("--strict-gaps", action="store_true", help="counting gaps fail the run")
    ap.add_argument("--json", type=Path, default=None, help="write the full report here")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if args.role == "server":
        return serve_role(args)
    if args.role == "client":
        return good_client_role(args)
    server_cpu, fuzzer_cpu = args.server_cpu, args.fuzzer_cpu
    if args.pin and (os.cpu_count() or 1) >= 2:
        server_cpu = 1 if server_cpu is None else server_cpu
        fuzzer_cpu = 0 if fuzzer_cpu is None else fuzzer_cpu
    cfg = FuzzConfig(
        count=args.count,
        seed=args.seed,
        hub=args.hub,
        host=args.host,
        rate=args.rate,
        duration=args.duration,
        quick=args.quick,
        sockets=args.sockets,
        ports=args.ports,
        queue_limit=args.queue_limit,
        server_cpu=server_cpu,
        fuzzer_cpu=fuzzer_cpu,
        corpus_dir=args.corpus,
        findings_dir=None if args.no_save else args.findings,
        log_dir=args.log_dir,
        server_path=args.server_path,
        progress=not args.no_progress and sys.stdout.isatty(),
        strict_gaps=args.strict_gaps,
    )
    report = run(cfg)
    print_summary(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
