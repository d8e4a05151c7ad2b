"""Soak: hostile-but-legal clients against one greencoap demo server, watching for leaks.

    .venv/bin/python bench/soak.py                      # 10 minutes on io_uring, 220 s idle tail
    .venv/bin/python bench/soak.py --duration 60 --idle-tail 20 --max-latency 5   # the CI test
    .venv/bin/python bench/soak.py --hub epoll --duration 120

The demo server (``greencoap.demo.build_router()``, plain CoAP and DTLS PSK)
runs in a child process pinned to CPU 1 (this script, ``--serve``), with
short lifetimes so that its tables can be seen returning to idle within the
run: ``upload_timeout`` (Block1/Block2 state), ``dtls_idle_timeout``, and a
small ``ack_timeout``/``max_retransmit`` (an unanswered CON notification gives
up after MAX_TRANSMIT_WAIT).  On request (a line on its stdin) it prints one
JSON line: RSS, open fds, ``Server.table_sizes()``, ``Server.stats`` and a few
hub/GC figures.

The load runs here, pinned to CPU 0, for ``--duration`` seconds, all of it at
once:

* steady background requests with a ``greencoap.Client`` (GET /hello, POST
  /echo, GET /sensors/N, complete block-wise GET /large and PUT /store, GET
  /slow with and without a separate response, NON GETs, discovery);
* observe cycles with ``Client.observe``: register, take 1-2 notifications,
  cancel (explicitly, or by leaving the ``with`` block);
* abandoned observations over raw UDP: register, then never answer (the
  socket stays open and silent until the server must have given up), close
  the socket at once, or answer the first notification with RST;
* abandoned Block1 uploads (raw: blocks 0..k-1 of a PUT /store with more=1,
  k = 1..3, never finished) and abandoned Block2 transfers (raw: block 0 of
  GET /large?size=50000 only);
* abandoned DTLS handshakes (raw, with the ``DtlsSession`` engine): a lone
  ClientHello, a cookie exchange after which the client goes silent, and a
  completed handshake plus one GET whose client vanishes without
  close_notify; and now and then real ``coaps://`` GETs with
  ``Client(psk=...)`` that close properly;
* ``--peers`` (5,000) distinct raw UDP sockets, opened and closed in chunks,
  each sending a few GET /hello (CON and NON) per cycle.

A row is printed every ``--interval`` seconds (10): elapsed time, server RSS,
open fds, requests/s and the main table sizes.  Then the load stops and the
idle tail (``--idle-tail`` seconds; by default EXCHANGE_LIFETIME + 12 s,
rounded up to the interval) shows the tables draining.  The verdict:
RSS growth from the end of warm-up (``--warmup`` of the run, 30 %) to the end
of the load, fd growth, and for every table its idle value (before the load),
its maximum and its final value.

Some entries outlive the short knobs (:data:`LONG_LIVED`): deduplication
entries live EXCHANGE_LIFETIME (~201 s here, since MAX_LATENCY is 100 s),
a NON notification's exchange NON_LIFETIME (~101 s), an Echo-verified peer the
verifier's lifetime.  A table of those is checked only when the tail covers
its lifetime; otherwise its expected expiry is printed.  ``--max-latency S``
gives the server a shorter MAX_LATENCY (it has no constructor knob for it:
the soak replaces ``Server.params`` before ``start()``), so that a short run
reaches its steady state early and drains everything within its tail; the
RFC value needs a load of several minutes (the tables fill for ~100-200 s)
and a tail of ~215 s.

Exit status: 0 when RSS and fds are flat and every checked table returned to
idle; 1 otherwise (each reason printed); 2 when the server could not start or
died.  ``--json PATH`` writes every sample.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import datetime
import gc
import itertools
import json
import math
import os
import platform
import random
import resource
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
SERVER_CPU = 1
CLIENT_CPU = 0
IDENTITY, KEY = "soak", "secret-key"

#: the server's short lifetimes (see the module docstring)
SERVER_KNOBS = {
    "ack_timeout": 0.5,
    "max_retransmit": 1,  # MAX_TRANSMIT_WAIT = 0.5 * 3 * 1.5 = 2.25 s
    "upload_timeout": 10.0,
    "dtls_idle_timeout": 10.0,
}

#: RSS growth after warm-up that fails the run: both limits must be passed
RSS_GROWTH_PCT = 20.0
RSS_GROWTH_MIB = 10.0

#: tables whose entries outlive the short knobs above, by the lifetime that
#: drains them (the rest must be back to idle after any tail of ~15 s):
#: deduplication entries live EXCHANGE_LIFETIME (CON) or NON_LIFETIME (NON);
#: a NON notification's exchange is kept NON_LIFETIME for an RST to it; a
#: peer that answered an Echo challenge stays verified for the echo lifetime
LONG_LIVED = {
    "dedup": "exchange",
    "dedup_peers": "exchange",
    "dedup_queued": "exchange",
    "dedup_peer_orders": "exchange",
    "by_mid": "non",
    "deadlines": "non",
    "timer_buckets": "non",
    "echo_verified_peers": "echo",
}

#: one body for every PUT /store (so that GET /store sees one representation)
STORE_BODY = bytes(range(256)) * 12

#: columns of the periodic row: (header, key in the sample's tables; *_bytes in KiB)
COLUMNS = (
    ("obs", "observers"),
    ("b1", "block1_uploads"),
    ("b2", "block2_bodies"),
    ("b2KiB", "block2_bytes"),
    ("rate", "rate_buckets"),
    ("tok", "by_token"),
    ("mid", "by_mid"),
    ("infl", "inflight"),
    ("dl", "deadlines"),
    ("tbkt", "timer_buckets"),
    ("sep", "separate_timers"),
    ("rq", "requests_queued"),
    ("dedup", "dedup"),
    ("dpeer", "dedup_peers"),
    ("s.tok", "dtls_by_token"),
    ("s.dedup", "dtls_dedup"),
    ("sess", "dtls_dtls_sessions"),
    ("s.tmr", "dtls_dtls_timers"),
    ("h.tmr", "hub_timers"),
)


# ============================================================================
# the server (child process)
# ============================================================================
def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def serve(args: argparse.Namespace) -> int:
    """``--serve``: the demo server; a JSON sample per line read on stdin."""
    with contextlib.suppress(OSError, ValueError):
        os.sched_setaffinity(0, {SERVER_CPU})
    with contextlib.suppress(OSError, AttributeError):  # a safety net: die with the soak
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    from greencoap import Server, spawn
    from greencoap.demo import build_router

    srv = Server(
        build_router(),
        host=HOST,
        port=0,
        dtls_port=0,
        psk={IDENTITY: KEY.encode()},
        **SERVER_KNOBS,
    )
    if args.max_latency is not None:  # no constructor knob: the parameters start() uses
        srv.params = dataclasses.replace(srv.params, max_latency=args.max_latency)
    srv.start()
    params = srv.endpoint.layer.params  # what the message layer really runs with
    hub = srv.hub
    out = sys.stdout

    def emit(tag: str) -> None:
        tables = srv.table_sizes()
        timers = getattr(hub, "_timers", None)
        extra = {
            "hub_timers": len(timers) if timers is not None else -1,
            "hub_workers": len(getattr(hub, "_workers", ())),
            "gc_objects": len(gc.get_objects()),
        }
        tables["hub_timers"] = extra["hub_timers"]
        sample = {
            "tag": tag,
            "now": time.monotonic(),
            "rss": rss_bytes(),
            "fds": open_fds(),
            "tables": tables,
            "stats": srv.stats,
            "extra": extra,
        }
        out.write(json.dumps(sample) + "\n")
        out.flush()

    def stop() -> None:
        spawn(srv.stop)

    def read_commands() -> None:  # an OS thread: hands each command to the hub
        for line in sys.stdin:
            cmd = line.strip()
            if cmd == "quit":
                break
            hub.run_callback_threadsafe(emit, cmd or "sample")
        hub.run_callback_threadsafe(stop)

    import greencoap

    ready = {
        "ready": True,
        "pid": os.getpid(),
        "greencoap": str(Path(greencoap.__file__).resolve().parent),
        "hub": hub.backend,
        "port": srv.port,
        "dtls_port": srv.dtls_port,
        "max_latency": params.max_latency,
        "exchange_lifetime": params.exchange_lifetime,
        "non_lifetime": params.non_lifetime,
        "max_transmit_wait": params.max_transmit_wait,
        "lifetimes": {
            "exchange": params.exchange_lifetime,
            "non": params.non_lifetime,
            "echo": getattr(getattr(srv, "echo", None), "lifetime", None),
            # the longest of the short ones: Block1/Block2 state, DTLS idle,
            # an abandoned observer (20 notifications at 0.2 s + MAX_TRANSMIT_WAIT)
            "short": max(
                SERVER_KNOBS["upload_timeout"],
                SERVER_KNOBS["dtls_idle_timeout"],
                20 * 0.2 + params.max_transmit_wait,
            )
            + 2.0,
            "observer_drain": 20 * 0.2 + params.max_transmit_wait + 1.0,
        },
        "cpus": sorted(os.sched_getaffinity(0)),
    }
    out.write(json.dumps(ready) + "\n")
    out.flush()
    threading.Thread(target=read_commands, name="soak-commands", daemon=True).start()
    srv.serve_forever()
    return 0


# ============================================================================
# raw CoAP helpers (the load's own wire format, via greencoap's codec)
# ============================================================================
def _codec():
    from greencoap.message import Message
    from greencoap.options import Block, encode_uint

    return Message, Block, encode_uint


class Counters:
    """Per-scenario counters, updated from several threads (a lock each bump)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.c: dict[str, dict[str, int]] = {}

    def add(self, scenario: str, what: str, n: int = 1) -> None:
        with self._lock:
            d = self.c.setdefault(scenario, {})
            d[what] = d.get(what, 0) + n

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {k: dict(v) for k, v in self.c.items()}


class Pacer:
    """Hold a loop to ``rate`` iterations/s (``sleep`` is time.sleep or the hub's)."""

    def __init__(self, rate: float, sleep: Any = time.sleep) -> None:
        self.period = 1.0 / rate if rate > 0 else 0.0
        self.sleep = sleep
        self.next = time.monotonic()

    def wait(self, n: int = 1) -> None:
        self.next += self.period * n
        delay = self.next - time.monotonic()
        if delay > 0:
            self.sleep(delay)
        elif delay < -1.0:  # fell behind: do not burst to catch up
            self.next = time.monotonic()


def udp_socket(timeout: float | None = 1.0) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((HOST, 0))
    s.settimeout(timeout)
    return s


def path_options(path: str, query: str = "") -> list[tuple[int, bytes]]:
    opts = [(11, seg.encode()) for seg in path.strip("/").split("/") if seg]
    if query:
        opts += [(15, q.encode()) for q in query.split("&")]
    return opts


def encode(
    mtype: int, code: int, mid: int, token: bytes, opts: list, payload: bytes = b""
) -> bytes:
    Message, _, _ = _codec()
    return Message(mtype, code, mid & 0xFFFF, token, sorted(opts), payload).encode()


def decode(data: bytes):
    Message, _, _ = _codec()
    return Message.decode(data)


def recv_reply(sock: socket.socket, token: bytes, timeout: float):
    """The first datagram on ``sock`` that carries ``token`` (None on timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        sock.settimeout(left)
        try:
            data = sock.recv(2048)
        except (TimeoutError, ConnectionRefusedError):
            return None
        try:
            msg = decode(data)
        except Exception:  # noqa: BLE001 - not ours to judge here
            continue
        if msg.token == token:
            return msg


def exchange(
    load: Load, sock: socket.socket, code: int, opts: list, payload: bytes = b""
) -> tuple[Any, bool]:
    """One CON request from ``sock`` and its reply (None on timeout), as a legal
    client does it: a 4.01 with an Echo option (the server wants the address
    proven before a large response, RFC 9175 §2.4) is answered once by
    repeating the request with that Echo value.  Also says whether it did."""
    token = os.urandom(4)
    sock.sendto(encode(0, code, load.mid(), token, opts, payload), load.addr)
    load.sent()
    reply = recv_reply(sock, token, 2.0)
    if reply is None or reply.code != 129:  # 4.01
        return reply, False
    echo = reply.opt(252)
    if echo is None:
        return reply, False
    token = os.urandom(4)
    sock.sendto(encode(0, code, load.mid(), token, opts + [(252, echo)], payload), load.addr)
    load.sent()
    return recv_reply(sock, token, 2.0), True


# ============================================================================
# the load (this process)
# ============================================================================
class Load:
    """Every scenario; ``stop`` ends them all."""

    def __init__(self, args: argparse.Namespace, port: int, dtls_port: int) -> None:
        self.args = args
        self.port = port
        self.dtls_port = dtls_port
        self.addr = (HOST, port)
        self.daddr = (HOST, dtls_port)
        self.base = f"coap://{HOST}:{port}"
        self.sbase = f"coaps://{HOST}:{dtls_port}"
        self.stop = threading.Event()
        self.counts = Counters()
        self.threads: list[threading.Thread] = []
        self.greenlets: list = []
        self.last_request = 0.0  # monotonic time of the last request sent (any scenario)
        self._mid = itertools.count(random.randrange(0x10000))

    def mid(self) -> int:
        return next(self._mid) & 0xFFFF

    def sent(self) -> None:
        self.last_request = time.monotonic()

    # -- threads: raw UDP and DTLS ------------------------------------------
    def start_threads(self) -> None:
        for fn in (
            self.peers,
            self.abandoned_observations,
            self.abandoned_block1,
            self.abandoned_block2,
            self.abandoned_dtls,
        ):
            t = threading.Thread(target=self._guard, args=(fn,), name=fn.__name__, daemon=True)
            t.start()
            self.threads.append(t)

    def _guard(self, fn: Any) -> None:
        while not self.stop.is_set():
            try:
                fn()
                return
            except Exception as e:  # noqa: BLE001 - count, report, carry on
                self.counts.add(fn.__name__, f"exception {type(e).__name__}: {e}"[:100])
                time.sleep(0.5)

    def peers(self) -> None:
        """``--peers`` sockets open at once; each sends CON, NON, CON GET /hello per cycle."""
        n_peers = self.args.peers
        chunk = 250
        pacer = Pacer(self.args.peer_rate / chunk)
        get_hello = path_options("/hello")
        while not self.stop.is_set():
            socks: list[socket.socket] = []
            try:
                for _ in range(n_peers):
                    s = udp_socket(None)
                    s.setblocking(False)
                    socks.append(s)
                self.counts.add("peers", "sockets_opened", len(socks))
                for mtype in (0, 1, 0):  # CON, NON, CON
                    for i in range(0, len(socks), chunk):
                        if self.stop.is_set():
                            return
                        self._peer_round(socks[i : i + chunk], mtype, get_hello)
                        pacer.wait()
            finally:
                for s in socks:
                    s.close()

    def _peer_round(self, socks: list[socket.socket], mtype: int, opts: list) -> None:
        poll = select.poll()
        waiting: dict[int, tuple[socket.socket, bytes]] = {}
        for s in socks:
            token = os.urandom(4)
            try:
                s.sendto(encode(mtype, 1, self.mid(), token, opts), self.addr)
            except OSError:
                self.counts.add("peers", "send_error")
                continue
            waiting[s.fileno()] = (s, token)
            poll.register(s.fileno(), select.POLLIN)
        self.sent()
        self.counts.add("peers", "sent", len(waiting))
        deadline = time.monotonic() + 2.0
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for fd, _ev in poll.poll(left * 1000):
                s, token = waiting[fd]
                try:
                    msg = decode(s.recv(2048))
                except OSError:
                    continue
                except Exception:  # noqa: BLE001 - e.g. a DTLS record for this port's last owner
                    self.counts.add("peers", "not_coap")
                    continue
                if msg.token == token and msg.code == 69:
                    self.counts.add("peers", "ok")
                    del waiting[fd]
                    poll.unregister(fd)
        if waiting:
            self.counts.add("peers", "lost", len(waiting))

    def abandoned_observations(self) -> None:
        """Register on /counter, then vanish: silent (never ACK the CON), closed, or RST."""
        pacer = Pacer(self.args.abandon_rate)
        silent: deque[tuple[float, socket.socket]] = deque()
        modes = itertools.cycle(("silent", "closed", "rst"))
        try:
            while not self.stop.is_set():
                now = time.monotonic()
                while silent and silent[0][0] <= now:
                    silent.popleft()[1].close()
                mode = next(modes)
                interval = random.choice((0.05, 0.1, 0.2))
                s = udp_socket()
                opts = path_options("/counter", f"interval={interval}") + [(6, b"")]
                reply, echoed = exchange(self, s, 1, opts)
                if echoed:
                    self.counts.add("observe_abandoned", "echo_answered")
                if reply is None or reply.observe is None:
                    self.counts.add("observe_abandoned", "not_registered")
                    s.close()
                else:
                    token = reply.token
                    self.counts.add("observe_abandoned", mode)
                    if mode == "silent":
                        # the server gives up after con_every (20) notifications
                        # plus MAX_TRANSMIT_WAIT: stay silent well past that
                        silent.append((now + 20 * interval + 6.0, s))
                    elif mode == "closed":
                        s.close()
                    else:
                        note = recv_reply(s, token, 2.0)
                        if note is not None:
                            s.sendto(encode(3, 0, note.mid, b"", []), self.addr)
                            self.counts.add("observe_abandoned", "rst_sent")
                        s.close()
                pacer.wait()
        finally:
            for _, s in silent:
                s.close()

    def abandoned_block1(self) -> None:
        """PUT /store Block1 blocks 0..k-1 (more=1), k = 1..3, then silence."""
        _, Block, encode_uint = _codec()
        pacer = Pacer(self.args.abandon_rate)
        body = os.urandom(1024)
        while not self.stop.is_set():
            k = random.randint(1, 3)
            tag = os.urandom(4)
            with udp_socket() as s:
                for num in range(k):
                    opts = path_options("/store") + [
                        (27, encode_uint(Block(num, True, 6).encode())),
                        (292, tag),
                    ]
                    if num == 0:
                        opts.append((60, encode_uint(8 * 1024)))
                    reply, _ = exchange(self, s, 3, opts, body)
                    if reply is None or reply.code != 95:  # 2.31 Continue
                        self.counts.add("block1_abandoned", "unexpected")
                        break
                else:
                    self.counts.add("block1_abandoned", f"left_after_{k}")
            pacer.wait()

    def abandoned_block2(self) -> None:
        """GET /large?size=50000: take block 0, never ask for block 1."""
        pacer = Pacer(self.args.abandon_rate)
        opts = path_options("/large", "size=50000")
        while not self.stop.is_set():
            with udp_socket() as s:
                reply, echoed = exchange(self, s, 1, opts)
                if echoed:
                    self.counts.add("block2_abandoned", "echo_answered")
                if reply is not None and reply.block2 is not None and reply.block2.more:
                    self.counts.add("block2_abandoned", "left_after_block0")
                else:
                    code = "none" if reply is None else f"{reply.code >> 5}.{reply.code & 31:02d}"
                    self.counts.add("block2_abandoned", f"unexpected {code}")
            pacer.wait()

    def abandoned_dtls(self) -> None:
        """A lone ClientHello; a cookie exchange, then silence; a full handshake
        and one GET, then the client vanishes without close_notify."""
        from greencoap.protocol.dtls import CLOSED, ESTABLISHED, FAILED, DtlsSession

        psk = (IDENTITY.encode(), KEY.encode())
        pacer = Pacer(self.args.dtls_rate)
        modes = itertools.cycle(("hello", "cookie", "hello", "established"))
        while not self.stop.is_set():
            mode = next(modes)
            with udp_socket() as s:
                s.connect(self.daddr)
                sess = DtlsSession("client", psk=psk)
                sess.start(time.monotonic())
                self._flush(s, sess)
                self.sent()
                if mode == "hello":
                    self.counts.add("dtls_abandoned", "hello_only")
                    pacer.wait()
                    continue
                deadline = time.monotonic() + 5.0
                datagrams = 0
                while time.monotonic() < deadline and sess.state not in (FAILED, CLOSED):
                    if sess.state is ESTABLISHED:
                        break
                    if mode == "cookie" and datagrams == 2:  # HelloVerifyRequest, ServerHello…
                        break
                    nd = sess.next_deadline()
                    left = min(deadline, nd if nd is not None else deadline) - time.monotonic()
                    s.settimeout(max(0.01, left))
                    try:
                        data = s.recv(4096)
                    except TimeoutError:
                        sess.expire(time.monotonic())
                        self._flush(s, sess)
                        continue
                    datagrams += 1
                    sess.receive(data, time.monotonic())
                    if mode == "cookie" and datagrams == 2:
                        break  # the server holds a session in its handshake now
                    self._flush(s, sess)
                if mode == "cookie":
                    self.counts.add("dtls_abandoned", "after_cookie" if datagrams == 2 else "fail")
                elif sess.state is ESTABLISHED:
                    token = os.urandom(4)
                    s.send(sess.send(encode(0, 1, self.mid(), token, path_options("/whoami"))))
                    self.sent()
                    got = False
                    s.settimeout(2.0)
                    with contextlib.suppress(TimeoutError):
                        for app in sess.receive(s.recv(4096), time.monotonic()):
                            got = got or decode(app).payload == IDENTITY.encode()
                    self.counts.add("dtls_abandoned", "established_get" if got else "no_answer")
                else:
                    self.counts.add("dtls_abandoned", "handshake_failed")
            pacer.wait()

    @staticmethod
    def _flush(sock: socket.socket, sess: Any) -> None:
        out, sess.outbox = sess.outbox, []
        for d in out:
            sock.send(d)

    # -- greenlets: greencoap clients ---------------------------------------
    def start_greenlets(self) -> None:
        from greencoap import Client, spawn

        self.client = Client(timeout=5.0)
        n = self.args.workers
        for i in range(n):
            self.greenlets.append(spawn(self._guard_g, self.background, i, n))
        for i in range(self.args.observers):
            self.greenlets.append(spawn(self._guard_g, self.observe_cycles, i, 0))
        self.greenlets.append(spawn(self._guard_g, self.coaps, 0, 0))

    def _guard_g(self, fn: Any, i: int, n: int) -> None:
        from greencoap import sleep

        while not self.stop.is_set():
            try:
                fn(i, n)
                return
            except Exception as e:  # noqa: BLE001
                self.counts.add(fn.__name__, f"exception {type(e).__name__}: {e}"[:100])
                sleep(0.5)

    def background(self, i: int, n: int) -> None:
        from greencoap import sleep

        c = self.client
        b = self.base
        pacer = Pacer(self.args.rate / n, sleep)
        body = STORE_BODY  # one body for every greenlet: GET /store sees one representation
        mix = (
            [("hello", lambda: c.get(b + "/hello"))] * 12
            + [("echo", lambda: c.post(b + "/echo", b"ping" * 8))] * 3
            + [("sensor", lambda: c.get(f"{b}/sensors/{random.randrange(100)}"))] * 2
            + [("non", lambda: c.get(b + "/hello", confirmable=False))] * 2
            + [("large", lambda: c.get(b + "/large?size=3000"))]
            + [("store", lambda: c.put(b + "/store", body))]
            + [("store_get", lambda: c.get(b + "/store"))]
            + [("slow", lambda: c.get(b + "/slow?ms=20"))]
            + [("core", lambda: c.get(b + "/.well-known/core"))]
        )
        rare = ("slow_separate", lambda: c.get(b + "/slow?ms=700"))  # empty ACK, CON response
        k = 0
        while not self.stop.is_set():
            k += 1
            name, call = rare if k % 500 == i % 500 else random.choice(mix)
            self.sent()
            try:
                r = call()
                self.counts.add("background", "ok" if r.code < 128 else f"code {r.code}")
            except Exception as e:  # noqa: BLE001
                self.counts.add("background", f"{name} {type(e).__name__}")
            pacer.wait()

    def observe_cycles(self, i: int, _n: int) -> None:
        """Register, take 1-2 notifications, cancel (explicitly or by leaving ``with``)."""
        from greencoap import sleep

        c = self.client
        pacer = Pacer(self.args.observe_rate / max(1, self.args.observers), sleep)
        k = 0
        while not self.stop.is_set():
            k += 1
            want = 1 + k % 2
            interval = random.choice((0.05, 0.1))
            self.sent()
            try:
                with c.observe(f"{self.base}/counter?interval={interval}", timeout=5.0) as obs:
                    got = 0
                    for r in obs.iter(timeout=5.0):
                        if r.code >= 128:
                            break
                        got += 1
                        if got > want:  # the registration's response + `want` notifications
                            break
                    if k % 2:
                        obs.cancel()
                self.counts.add("observe_cycles", "ok" if got > want else "short")
            except Exception as e:  # noqa: BLE001
                self.counts.add("observe_cycles", type(e).__name__)
            pacer.wait()

    def coaps(self, _i: int, _n: int) -> None:
        """Now and then a fresh coaps:// client: three GETs, then close (close_notify)."""
        from greencoap import Client, sleep

        while not self.stop.is_set():
            self.sent()
            try:
                with Client(timeout=5.0, psk=(IDENTITY, KEY)) as c:
                    ok = c.get(self.sbase + "/whoami").payload == IDENTITY.encode()
                    ok &= c.get(self.sbase + "/hello").code == 69
                    ok &= c.get(self.sbase + "/large?size=3000").code == 69
                self.counts.add("coaps", "ok" if ok else "wrong_answer")
            except Exception as e:  # noqa: BLE001
                self.counts.add("coaps", type(e).__name__)
            sleep(1.0 / self.args.coaps_rate)

    def finish(self, timeout: float = 10.0) -> None:
        """Stop every scenario and wait for it (its sockets are closed)."""
        from greencoap import joinall, sleep

        self.stop.set()
        joinall(self.greenlets, timeout=timeout)
        deadline = time.monotonic() + timeout
        while any(t.is_alive() for t in self.threads) and time.monotonic() < deadline:
            sleep(0.05)  # the hub keeps running while the threads wind down
        self.client.close()


# ============================================================================
# the driver
# ============================================================================
class Child:
    """The server process: samples on demand; stopped by its PID."""

    def __init__(self, hub: str, max_latency: float | None) -> None:
        env = dict(os.environ, GREENCOAP_HUB=hub)
        self.errfile = tempfile.TemporaryFile("w+")
        cmd = [sys.executable, str(Path(__file__).resolve()), "--serve"]
        if max_latency is not None:
            cmd += ["--max-latency", str(max_latency)]
        self.p = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.errfile,
            text=True,
            env=env,
        )
        self.lines: deque[dict] = deque()
        self.reader = threading.Thread(target=self._read, name="soak-reader", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.p.stdout:
            with contextlib.suppress(ValueError):
                self.lines.append(json.loads(line))

    def next_line(self, timeout: float) -> dict | None:
        from greencoap import sleep

        deadline = time.monotonic() + timeout
        while not self.lines:
            if time.monotonic() > deadline or self.p.poll() is not None:
                return None
            sleep(0.01)
        return self.lines.popleft()

    def sample(self, tag: str = "sample", timeout: float = 10.0) -> dict | None:
        try:
            self.p.stdin.write(tag + "\n")
            self.p.stdin.flush()
        except (BrokenPipeError, ValueError):
            return None
        return self.next_line(timeout)

    def stderr(self) -> str:
        self.errfile.seek(0)
        return self.errfile.read()

    def stop(self) -> None:
        with contextlib.suppress(BrokenPipeError, ValueError, OSError):
            self.p.stdin.write("quit\n")
            self.p.stdin.flush()
            self.p.stdin.close()
        try:
            self.p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.p.terminate()
            try:
                self.p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def mib(n: float) -> float:
    return n / (1 << 20)


def header(columns: list[tuple[str, str]]) -> str:
    cols = ["     t", " phase", "RSS MiB", " fds", " req/s"] + [f"{h:>6}" for h, _ in columns]
    return " ".join(cols)


def row(s: dict, t: float, phase: str, rps: float, columns: list[tuple[str, str]]) -> str:
    tables = s["tables"]
    cells = [f"{t:6.0f}", f"{phase:>6}", f"{mib(s['rss']):7.1f}", f"{s['fds']:4d}", f"{rps:6.0f}"]
    for _h, key in columns:
        v = tables.get(key, 0)
        if key.endswith("_bytes"):
            v = v // 1024
        cells.append(f"{v:6d}")
    return " ".join(cells)


def fit_slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope (y per x) of ``points``; 0 for fewer than two."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    var = sum((p[0] - mx) ** 2 for p in points)
    if var == 0:
        return 0.0
    return sum((p[0] - mx) * (p[1] - my) for p in points) / var


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of load (600)")
    ap.add_argument("--hub", choices=("uring", "epoll"), default="uring", help="server hub")
    ap.add_argument(
        "--idle-tail",
        type=float,
        default=None,
        help="seconds of idle after the load (EXCHANGE_LIFETIME + 12 s, rounded up to the "
        "interval: 220 with the RFC's MAX_LATENCY)",
    )
    ap.add_argument("--interval", type=float, default=10.0, help="seconds between rows (10)")
    ap.add_argument("--warmup", type=float, default=0.3, help="warm-up share of the run (0.3)")
    ap.add_argument("--peers", type=int, default=5000, help="distinct raw peers (5000)")
    ap.add_argument("--peer-rate", type=float, default=1000.0, help="their requests/s (1000)")
    ap.add_argument("--rate", type=float, default=1500.0, help="background requests/s (1500)")
    ap.add_argument("--workers", type=int, default=32, help="background greenlets (32)")
    ap.add_argument("--observers", type=int, default=8, help="observe-cycle greenlets (8)")
    ap.add_argument("--observe-rate", type=float, default=20.0, help="observe cycles/s (20)")
    ap.add_argument(
        "--abandon-rate", type=float, default=10.0, help="abandoned observe/Block1/Block2 /s each"
    )
    ap.add_argument("--dtls-rate", type=float, default=4.0, help="abandoned DTLS handshakes/s (4)")
    ap.add_argument("--coaps-rate", type=float, default=1.0, help="coaps:// clients/s (1)")
    ap.add_argument(
        "--max-latency",
        type=float,
        default=None,
        help="the server's MAX_LATENCY in s (default: the RFC's 100; a small value makes "
        "EXCHANGE_LIFETIME and NON_LIFETIME short enough to drain within the tail)",
    )
    ap.add_argument("--json", metavar="PATH", help="write every sample to PATH")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        return serve(args)
    os.environ["GREENCOAP_HUB"] = args.hub  # this process's hub too
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.peers + 512:
        print(f"RLIMIT_NOFILE hard limit {hard} < {args.peers} peers + 512", file=sys.stderr)
        return 2
    pinned = False
    with contextlib.suppress(OSError, ValueError):
        os.sched_setaffinity(0, {CLIENT_CPU})
        pinned = True
    child = Child(args.hub, args.max_latency)

    def on_term(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)  # reaches the main greenlet: the finally below runs

    signal.signal(signal.SIGTERM, on_term)
    try:
        return drive(args, child, pinned)
    finally:
        child.stop()


def drive(args: argparse.Namespace, child: Child, pinned: bool) -> int:
    from greencoap import sleep

    ready = child.next_line(30.0)
    if not ready or not ready.get("ready"):
        print("the server did not start:\n" + child.stderr(), file=sys.stderr)
        return 2
    if ready["hub"] != args.hub:
        print(f"the server runs on {ready['hub']}, not {args.hub}:\n{child.stderr()}")
        return 2
    lifetime = ready["exchange_lifetime"]
    if args.idle_tail is None:  # long enough for every table but the Echo verifier's
        args.idle_tail = math.ceil((lifetime + 12.0) / args.interval) * args.interval
    commit = git_commit(Path(ready["greencoap"]))
    print(
        f"soak: greencoap {commit} ({ready['greencoap']}) · {ready['hub']} hub · "
        f"server pid {ready['pid']} on CPU "
        f"{ready['cpus']}, load on CPU {sorted(os.sched_getaffinity(0)) if pinned else 'any'} · "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC · {platform.release()}"
    )
    print(
        f"load {args.duration:.0f} s + idle tail {args.idle_tail:.0f} s · "
        f"{args.peers} peers at {args.peer_rate:.0f} req/s, background {args.rate:.0f} req/s, "
        f"{args.observe_rate:.0f} observe cycles/s, {args.abandon_rate:.0f}/s each of abandoned "
        f"observe/Block1/Block2, {args.dtls_rate:.0f} abandoned DTLS/s, "
        f"{args.coaps_rate:.0f} coaps clients/s"
    )
    print(
        "server: "
        + ", ".join(f"{k}={v}" for k, v in SERVER_KNOBS.items())
        + f" -> MAX_TRANSMIT_WAIT {ready['max_transmit_wait']:.2f} s, "
        f"MAX_LATENCY {ready['max_latency']:g} s, EXCHANGE_LIFETIME {lifetime:.1f} s, "
        f"NON_LIFETIME {ready['non_lifetime']:.1f} s"
    )
    short = ready["lifetimes"]["short"]
    if args.idle_tail < short:
        print(f"warning: an idle tail under {short:.0f} s is shorter than the server's lifetimes")
    idle = child.sample("idle")
    if idle is None:
        print("no sample from the server", file=sys.stderr)
        return 2
    samples: list[tuple[float, str, dict]] = []
    load = Load(args, ready["port"], ready["dtls_port"])
    t0 = time.monotonic()
    samples.append((0.0, "idle", idle))
    print()
    columns = [c for c in COLUMNS if c[1] in idle["tables"]]  # those this server has
    print(header(columns))
    print(row(idle, 0.0, "idle", 0.0, columns), flush=True)
    load.start_threads()
    load.start_greenlets()
    prev = idle
    n_load = int((args.duration - 1e-6) // args.interval)
    n_tail = int((args.idle_tail - 1e-6) // args.interval)
    schedule = [(i * args.interval, "load") for i in range(1, n_load + 1)]
    schedule.append((args.duration, "stop"))
    schedule += [(args.duration + i * args.interval, "idle") for i in range(1, n_tail + 1)]
    if args.idle_tail > 0:
        schedule.append((args.duration + args.idle_tail, "idle"))
    load_stopped = None
    died = False
    for at, phase in schedule:
        delay = t0 + at - time.monotonic()
        if delay > 0:
            sleep(delay)
        if phase == "stop":
            load.finish()
            load_stopped = time.monotonic()
            phase = "load"
        s = child.sample()
        if s is None:
            died = True
            break
        t = s["now"] - t0
        dt = s["now"] - prev["now"]
        rps = (s["stats"]["requests_received"] - prev["stats"]["requests_received"]) / dt
        samples.append((t, phase, s))
        print(row(s, t, phase, rps, columns), flush=True)
        prev = s
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"ready": ready, "samples": [{"t": t, "phase": p, **s} for t, p, s in samples]}, f
            )
    if died:
        print(f"\nthe server died (exit {child.p.poll()}):\n{child.stderr()[-4000:]}")
        return 2
    return verdict(args, ready, samples, load, load_stopped - t0, child)


def verdict(
    args: argparse.Namespace,
    ready: dict,
    samples: list[tuple[float, str, dict]],
    load: Load,
    load_end: float,
    child: Child,
) -> int:
    failures: list[str] = []
    idle = samples[0][2]
    load_samples = [(t, s) for t, p, s in samples if p == "load"]
    warm_at = args.warmup * args.duration
    warm = next(((t, s) for t, s in load_samples if t >= warm_at), load_samples[-1])
    end_t, end = load_samples[-1]
    final_t, final = samples[-1][0], samples[-1][2]
    after = [(t, s) for t, s in load_samples if t >= warm[0]]

    print("\nverdict")
    print("-------")
    # RSS
    grow = end["rss"] - warm[1]["rss"]
    pct = 100.0 * grow / warm[1]["rss"]
    slope = fit_slope([(t / 60.0, mib(s["rss"])) for t, s in after])
    rss_max = max(s["rss"] for _, s in load_samples)
    bad_rss = pct > RSS_GROWTH_PCT and mib(grow) > RSS_GROWTH_MIB
    print(
        f"RSS: idle {mib(idle['rss']):.1f} MiB, warm-up end (t={warm[0]:.0f} s) "
        f"{mib(warm[1]['rss']):.1f} MiB, end of load (t={end_t:.0f} s) {mib(end['rss']):.1f} MiB "
        f"-> {mib(grow):+.1f} MiB ({pct:+.1f} %), fit {slope:+.2f} MiB/min after warm-up; "
        f"max {mib(rss_max):.1f} MiB; after the tail {mib(final['rss']):.1f} MiB "
        f"[{'FAIL' if bad_rss else 'ok'}: limit > {RSS_GROWTH_PCT:.0f} % and > "
        f"{RSS_GROWTH_MIB:.0f} MiB]"
    )
    if bad_rss:
        failures.append(f"RSS grew {mib(grow):.1f} MiB ({pct:.1f} %) after warm-up")
    # fds
    fds_after = max(s["fds"] for _, s in after)
    bad_fds = fds_after > warm[1]["fds"] or final["fds"] > idle["fds"]
    print(
        f"fds: idle {idle['fds']}, warm-up end {warm[1]['fds']}, max after warm-up {fds_after}, "
        f"end of load {end['fds']}, after the tail {final['fds']} "
        f"[{'FAIL' if bad_fds else 'ok'}]"
    )
    if bad_fds:
        failures.append(
            f"fds grew: {warm[1]['fds']} at warm-up end, {fds_after} max, {final['fds']} final"
        )
    objs_w, objs_e, objs_f = (s["extra"]["gc_objects"] for s in (warm[1], end, final))
    print(
        f"GC-tracked objects (info): warm-up end {objs_w:,}, end of load {objs_e:,}, "
        f"after the tail {objs_f:,}; hub workers parked {final['extra']['hub_workers']}"
    )
    # tables
    lifetimes = ready["lifetimes"]
    quiet = final["now"] - load.last_request  # seconds without a request at the final sample
    print(
        f"\ntables: idle value, max, final after {final_t - load_end:.0f} s idle "
        f"(the last request was {quiet:.0f} s before the final sample)"
    )
    keys = list(idle["tables"])
    width = max(len(k) for k in keys)
    lingering: list[str] = []
    unchecked: list[str] = []
    for key in keys:
        v0 = idle["tables"][key]
        vmax = max(s["tables"].get(key, 0) for _, _, s in samples)
        vf = final["tables"].get(key, 0)
        kind = LONG_LIVED.get(key.removeprefix("dtls_"))
        life = lifetimes.get(kind) if kind else None
        # notifications go on for a few seconds after the last request, until
        # the server has dropped the abandoned observers
        slack = lifetimes["observer_drain"] if kind == "non" else 1.0
        left = None if life is None else life + slack - quiet
        if vf == v0:
            note = "idle"
        elif key == "hub_timers":
            note = "info (cancelled hub timers stay in the heap until their deadline)"
        elif left is not None and left > 0:
            note = f"not checked: {kind} lifetime {life:.0f} s, the last expire in ~{left:.0f} s"
            unchecked.append(key)
        else:
            note = "FAIL: not back to idle"
            failures.append(f"table {key}: {vf} after the tail (idle {v0}, max {vmax})")
            lingering.append(key)
        print(f"  {key:<{width}} {v0:>8} {vmax:>8} {vf:>8}  {note}")
    if lingering:
        probe(load, child, lingering)
    # what the load did
    print("\nload (client side):")
    for scenario, c in sorted(load.counts.snapshot().items()):
        print(f"  {scenario}: " + ", ".join(f"{k} {v:,}" for k, v in sorted(c.items())))
    st = final["stats"]
    picked = {
        k: v
        for k, v in sorted(st.items())
        if v
        and (
            k.startswith("observers_dropped")
            or k
            in (
                "requests_received",
                "duplicates",
                "observe_registrations",
                "notifications_sent",
                "retransmissions",
                "timeouts",
                "resets_received",
                "separate_responses",
                "block1_incomplete",
                "block2_served",
                "dedup_evicted",
                "dedup_peer_full",
                "shed_early",
                "throttled",
                "shed",
                "handler_errors",
                "internal_errors",
                "send_errors",
                "recv_errors",
                "dtls_hello_verify_sent",
                "dtls_sessions_created",
                "dtls_sessions_expired",
                "dtls_sessions_closed",
                "dtls_handshakes_failed",
                "dtls_sessions_abandoned",
            )
        )
    }
    print("server stats: " + ", ".join(f"{k} {v:,}" for k, v in picked.items()))
    for bad in ("handler_errors", "internal_errors", "dtls_internal_errors"):
        if st.get(bad):
            failures.append(f"server {bad} = {st[bad]}")
    # a leak check means little if the server stopped serving: the plain load must succeed
    counts = load.counts.snapshot()
    bg, peers = counts.get("background", {}), counts.get("peers", {})
    for scenario, ok, total in (
        ("background", bg.get("ok", 0), sum(bg.values())),  # one count per request
        ("peers", peers.get("ok", 0), peers.get("sent", 0)),
    ):
        if total == 0 or ok < 0.99 * total:
            failures.append(f"{scenario}: only {ok:,} of {total:,} requests succeeded")
    err = child.stderr().strip()
    if err:
        print(f"\nserver stderr ({len(err.splitlines())} lines), last lines:")
        print("\n".join("  " + line for line in err.splitlines()[-20:]))
    print()
    if failures:
        print("FAIL: " + "; ".join(failures))
        return 1
    extra = ""
    if unchecked:
        extra = f" (not checked, their lifetime exceeds the tail: {', '.join(unchecked)})"
    print(f"PASS: RSS and fds flat after warm-up, every table back to idle{extra}")
    return 0


def probe(load: Load, child: Child, lingering: list[str]) -> None:
    """Diagnose tables that did not drain: one block-wise request (a single-block
    PUT /store, which leaves no state), then one more sample."""
    _, Block, encode_uint = _codec()
    with udp_socket() as s:
        opts = path_options("/store") + [(27, encode_uint(Block(0, False, 6).encode()))]
        reply, _ = exchange(load, s, 3, opts, b"probe")
    after = child.sample("probe")
    if after is None:
        return
    code = f"{reply.code >> 5}.{reply.code & 31:02d}" if reply is not None else "no answer"
    print(
        f"  probe: after one single-block PUT /store ({code}), "
        + ", ".join(f"{k} = {after['tables'].get(k)}" for k in lingering)
    )


def git_commit(package: Path) -> str:
    """The commit of the checkout ``package`` (the greencoap the server
    imported) lives in, ``+dirty`` with uncommitted changes there; "?" outside
    a git checkout (e.g. an export: its path then says what it is)."""

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=package, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else ""

    try:
        if git("rev-parse", "--show-prefix") != "greencoap/":
            return "?"
        commit = git("rev-parse", "--short", "HEAD") or "?"
        if git("status", "--porcelain", "--", "."):
            commit += "+dirty"
        return commit
    except (OSError, subprocess.SubprocessError):
        return "?"


if __name__ == "__main__":
    sys.exit(main())
