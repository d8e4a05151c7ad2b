"""A lossy UDP relay for end-to-end tests over a bad network.

``LossyRelay`` sits between a client under test and a real server: the client
talks to ``relay.uri`` instead of the server, and the relay forwards each
datagram, or drops it, duplicates it or holds it back for a random delay
(which reorders datagrams), all from a seeded ``random.Random`` so that a
failing run can be replayed.

It runs in its own OS thread with plain blocking-capable sockets and a
``selectors`` loop, so it works whatever greenlet hub (io_uring, epoll,
gevent) the test itself runs on, and it never touches the test's hub.

Each client address gets its own upstream socket, so the server sees one
peer per client and replies go back to the client that caused them.

Typical use::

    with LossyRelay(("127.0.0.1", server_port), loss=0.2, seed=7) as relay:
        client.get(relay.uri + "/big")
        print(relay.snapshot())   # {"c2s": {"forwarded": ..., ...}, "s2c": {...}}
"""

from __future__ import annotations

import heapq
import random
import selectors
import socket
import threading
import time
from collections.abc import Callable

#: Direction names used as keys of ``LossyRelay.stats`` and passed to ``drop``.
C2S = "c2s"  # client -> server
S2C = "s2c"  # server -> client
DIRECTIONS = (C2S, S2C)

#: Longest the relay thread sleeps in ``select``: bounds how long ``stop()`` takes.
POLL_INTERVAL = 0.02

#: Datagrams read from one socket per loop turn, so one busy peer cannot starve others.
BURST = 64

MAX_DATAGRAM = 65_535


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


class LossyRelay:
    """Forward UDP datagrams between clients and ``target`` over a simulated bad link.

    ``target``     the server's ``(host, port)``.
    ``loss``       probability that a datagram is dropped, drawn independently
                   for each datagram in each direction.
    ``seed``       seed of the relay's ``random.Random`` (None: unseeded).
    ``duplicate``  probability that a forwarded datagram is sent twice.
    ``delay``      each forwarded copy is held back a uniform random time in
                   ``[0, delay]`` seconds, which reorders datagrams; 0 sends at once.
    ``drop``       optional deterministic hook ``drop(direction, datagram) -> bool``
                   called before the random draw; True drops the datagram (counted
                   as dropped).  Runs on the relay thread.
    ``host``/``port``  where the relay listens (default 127.0.0.1, a free port).

    ``loss``, ``duplicate``, ``delay`` and ``drop`` are plain attributes and
    may be changed while the relay runs (e.g. heal the network mid-test).

    ``stats`` maps ``"c2s"`` and ``"s2c"`` to ``{"forwarded", "dropped",
    "duplicated"}`` counters, updated under ``lock``; ``snapshot()`` copies it.
    ``forwarded`` counts datagrams that passed (a duplicated one counts once in
    ``forwarded`` and once in ``duplicated``).  Send errors are counted in
    ``errors``.
    """

    def __init__(
        self,
        target: tuple[str, int],
        loss: float = 0.2,
        seed: int | None = None,
        *,
        duplicate: float = 0.0,
        delay: float = 0.0,
        drop: Callable[[str, bytes], bool] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.target = (target[0], int(target[1]))
        self.loss = loss
        self.duplicate = duplicate
        self.delay = delay
        self.drop = drop
        self.seed = seed
        self.host = host
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.stats: dict[str, dict[str, int]] = {}
        self.errors = 0
        self.reset_stats()

        self._listen = socket.socket(_family(host), socket.SOCK_DGRAM)
        try:
            self._listen.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        except OSError:
            pass
        self._listen.bind((host, port))
        self._listen.setblocking(False)
        self.port: int = self._listen.getsockname()[1]

        self._sel = selectors.DefaultSelector()
        self._sel.register(self._listen, selectors.EVENT_READ, None)
        # One upstream socket per client address; the selector key's data is that address.
        self._upstream: dict[tuple, socket.socket] = {}
        # Held-back datagrams: (due, sequence, socket, datagram, destination).
        self._pending: list[tuple[float, int, socket.socket, bytes, tuple]] = []
        self._seq = 0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    # -- public -------------------------------------------------------------

    @property
    def uri(self) -> str:
        """``coap://host:port`` of the relay, to use instead of the server's URI."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"coap://{host}:{self.port}"

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` where the relay listens."""
        return (self.host, self.port)

    @property
    def clients(self) -> int:
        """How many distinct client addresses the relay has seen."""
        with self.lock:
            return len(self._upstream)

    def start(self) -> LossyRelay:
        """Start the relay thread (once); returns self."""
        if self._closed:
            raise RuntimeError("LossyRelay is stopped; make a new one")
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"LossyRelay:{self.port}", daemon=True
            )
            self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread (within about ``POLL_INTERVAL``), join it, close the sockets.

        Held-back datagrams are discarded.  Safe to call twice.
        """
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError(f"LossyRelay thread did not stop within {timeout} s")
        if not self._closed:
            self._closed = True
            self._sel.close()
            self._listen.close()
            with self.lock:
                ups = list(self._upstream.values())
            for s in ups:
                s.close()
            self._pending.clear()

    def snapshot(self) -> dict[str, dict[str, int]]:
        """A consistent copy of ``stats``."""
        with self.lock:
            return {d: dict(c) for d, c in self.stats.items()}

    def reset_stats(self) -> None:
        """Zero every counter."""
        with self.lock:
            self.stats = {d: {"forwarded": 0, "dropped": 0, "duplicated": 0} for d in DIRECTIONS}
            self.errors = 0

    def __enter__(self) -> LossyRelay:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return (
            f"<LossyRelay {self.uri} -> {self.target} loss={self.loss} "
            f"duplicate={self.duplicate} delay={self.delay} seed={self.seed}>"
        )

    # -- relay thread -------------------------------------------------------

    def _run(self) -> None:
        sel = self._sel
        while not self._stopping.is_set():
            timeout = POLL_INTERVAL
            if self._pending:
                timeout = max(0.0, min(timeout, self._pending[0][0] - time.monotonic()))
            for key, _ in sel.select(timeout):
                if key.data is None:
                    self._from_client()
                else:
                    self._from_server(key.fileobj, key.data)
            self._flush_due()

    def _from_client(self) -> None:
        for _ in range(BURST):
            try:
                data, addr = self._listen.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            up = self._upstream.get(addr)
            if up is None:
                up = socket.socket(_family(self.target[0]), socket.SOCK_DGRAM)
                up.bind((self.host if _family(self.host) == up.family else "", 0))
                up.setblocking(False)
                self._sel.register(up, selectors.EVENT_READ, addr)
                with self.lock:
                    self._upstream[addr] = up
            self._route(C2S, data, up, self.target)

    def _from_server(self, up: socket.socket, client: tuple) -> None:
        for _ in range(BURST):
            try:
                data, _src = up.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. ICMP port unreachable reported on this socket
                continue
            self._route(S2C, data, self._listen, client)

    def _route(self, direction: str, data: bytes, sock: socket.socket, dest: tuple) -> None:
        rng = self.rng
        # Always draw, so a hook or a changed setting does not shift later draws.
        lost = rng.random() < self.loss
        dup = rng.random() < self.duplicate
        hook = self.drop
        if (hook is not None and hook(direction, data)) or lost:
            with self.lock:
                self.stats[direction]["dropped"] += 1
            return
        with self.lock:
            counts = self.stats[direction]
            counts["forwarded"] += 1
            if dup:
                counts["duplicated"] += 1
        for _ in range(2 if dup else 1):
            delay = self.delay
            if delay > 0:
                self._seq += 1
                due = time.monotonic() + rng.uniform(0.0, delay)
                heapq.heappush(self._pending, (due, self._seq, sock, data, dest))
            else:
                self._send(sock, data, dest)

    def _flush_due(self) -> None:
        now = time.monotonic()
        pending = self._pending
        while pending and pending[0][0] <= now:
            _due, _seq, sock, data, dest = heapq.heappop(pending)
            self._send(sock, data, dest)

    def _send(self, sock: socket.socket, data: bytes, dest: tuple) -> None:
        try:
            sock.sendto(data, dest)
        except OSError:
            with self.lock:
                self.errors += 1
