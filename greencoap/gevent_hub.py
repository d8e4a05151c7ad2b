"""The hub that defers to gevent's loop (layer 3): greencoap inside Locust.

When gevent's hub already runs in a thread (Locust, gevent servers), greencoap
must not start a loop of its own: its blocking calls park on gevent's hub so
that every other gevent greenlet keeps running.  :class:`GeventHub` offers
the same interface as :class:`greencoap.hub.Hub` on top of gevent's loop:
callbacks, timers and parking are gevent's; sockets are watched with gevent
io watchers and read/written with the same non-blocking datagram code as the
epoll backend (sends are flushed once per loop iteration from a callback);
a wildcard-bound socket answers from the address the peer wrote to, as on
epoll (:class:`GeventPktinfoChannel`).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from time import monotonic
from typing import Any

import gevent

from . import pktinfo
from .backends import MAX_DATAGRAM
from .epoll_hub import Channel, PktinfoChannel, channel_class
from .hub import HubBase, Timeout


class _Timer:
    """A gevent timer watcher with the ``cancel()`` of greencoap's timers."""

    __slots__ = ("watcher",)

    def __init__(self, watcher: Any) -> None:
        self.watcher = watcher

    def cancel(self) -> None:
        w = self.watcher
        if w is not None:
            self.watcher = None
            w.stop()
            w.close()


class GeventChannel(Channel):
    """A datagram socket read by a gevent io watcher."""

    __slots__ = ("watcher", "write_watcher")

    def _read_one(self) -> None:
        """Read one datagram per readiness callback.

        gevent's io watchers are level-triggered, so the watcher fires again
        while data remains; this saves the EAGAIN exception that a read loop
        pays on every wake-up of a lightly loaded socket (one per request for
        a Locust user).  A server's socket with a source limiter reads its
        whole backlog at once instead, as the epoll backend does, so that a
        flood is seen (and shed) as one harvest.
        """
        if self.limiter is not None:
            try:
                self._read()
            except Exception:  # noqa: BLE001
                self.backend.hub.handle_error(self.on_batch)
            return
        try:
            item = self.sock.recvfrom(MAX_DATAGRAM + 1)
        except BlockingIOError:
            return
        except OSError:
            self._stats["recv_errors"] += 1
            return
        if len(item[0]) > MAX_DATAGRAM:
            self._stats["truncated"] += 1
        elif not self.closed:
            try:
                self.on_batch([item])
            except Exception:  # noqa: BLE001 - counted and reported as on greencoap's hubs
                self.backend.hub.handle_error(self.on_batch)

    def sendto(self, data: bytes, addr: Any) -> None:
        """Queue; sends leave from one callback per loop iteration (measured:
        sending at once from the calling greenlet is ~35% slower under Locust,
        as the loop then turns once per datagram)."""
        out = self._out
        if not out:
            self.backend._mark_dirty(self)
        out.append((data, addr))


class GeventPktinfoChannel(GeventChannel):
    """A gevent channel on a wildcard-bound socket: ``recvmsg``, and replies
    leave from the address the peer wrote to (see :mod:`greencoap.pktinfo`)."""

    __slots__ = ()

    def __init__(self, backend: Any, sock: socket.socket, on_batch: Callable) -> None:
        super().__init__(backend, sock, on_batch)
        self.local: dict = {}
        self.local_old: dict = {}
        self._cmsgs: dict = {}

    _learn = PktinfoChannel._learn
    _remember = PktinfoChannel._remember
    _rotate = PktinfoChannel._rotate
    _flush = PktinfoChannel._flush

    _read = PktinfoChannel._read

    def _read_one(self) -> None:
        if self.limiter is not None:
            try:
                self._read()
            except Exception:  # noqa: BLE001
                self.backend.hub.handle_error(self.on_batch)
            return
        try:
            data, ancdata, _flags, addr = self.sock.recvmsg(MAX_DATAGRAM + 1, pktinfo.ANCBUF)
        except BlockingIOError:
            return
        except OSError:
            self._stats["recv_errors"] += 1
            return
        if len(data) > MAX_DATAGRAM:
            self._stats["truncated"] += 1
        elif not self.closed:
            self._remember(ancdata, addr)
            self._rotate()
            try:
                self.on_batch([(data, addr)])
            except Exception:  # noqa: BLE001
                self.backend.hub.handle_error(self.on_batch)


class GeventBackend:
    """Datagram I/O through gevent's loop (io watchers + non-blocking calls)."""

    name = "gevent"

    def __init__(self, hub: GeventHub) -> None:
        self.hub = hub
        self.loop = hub.greenlet.loop
        self._channels: dict[int, GeventChannel] = {}
        self._dirty: list[GeventChannel] = []

    def open_channel(self, sock: socket.socket, on_batch: Callable) -> GeventChannel:
        sock.setblocking(False)
        ch = channel_class(sock, GeventChannel, GeventPktinfoChannel)(self, sock, on_batch)
        ch.watcher = self.loop.io(ch.fileno, 1)
        ch.watcher.start(ch._read_one)
        ch.write_watcher = None
        self._channels[ch.fileno] = ch
        return ch

    def _mark_dirty(self, ch: GeventChannel) -> None:
        if not self._dirty:
            self.loop.run_callback(self._flush)
        self._dirty.append(ch)

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        for ch in dirty:
            if ch.closed or ch.write_watcher is not None:
                continue
            try:
                if not ch._flush():  # socket buffer full: wait until writable
                    ch.write_watcher = self.loop.io(ch.fileno, 2)
                    ch.write_watcher.start(self._writable, ch)
            except Exception:  # noqa: BLE001
                self.hub.handle_error(ch._flush)

    def _writable(self, ch: GeventChannel) -> None:
        if ch._flush() or ch.closed:
            ch.write_watcher.stop()
            ch.write_watcher.close()
            ch.write_watcher = None

    def _remove(self, ch: GeventChannel) -> None:
        if self._channels.get(ch.fileno) is ch:
            del self._channels[ch.fileno]
            if ch._out:
                ch._flush()
            for w in (ch.watcher, ch.write_watcher):
                if w is not None:
                    w.stop()
                    w.close()
            ch.watcher = ch.write_watcher = None

    def has_work(self) -> bool:
        return bool(self._channels)

    def wakeup(self) -> None:  # gevent's run_callback_threadsafe wakes its own loop
        pass

    def close(self) -> None:
        for ch in list(self._channels.values()):
            ch.close()


class GeventHub(HubBase):
    """greencoap's hub interface over the gevent hub of the current thread."""

    def __init__(self) -> None:
        self.greenlet = gevent.get_hub()
        self.loop = self.greenlet.loop
        self._init_common()
        self.io = GeventBackend(self)
        self.backend = "gevent"

    def run_callback(self, fn: Callable, *args: Any) -> None:
        self.loop.run_callback(fn, *args)

    def run_callback_threadsafe(self, fn: Callable, *args: Any) -> None:
        self.loop.run_callback_threadsafe(fn, *args)

    def call_later(self, delay: float, fn: Callable, *args: Any) -> _Timer:
        w = self.loop.timer(max(0.0, delay))
        w.start(fn, *args, update=True)
        return _Timer(w)

    def call_at(self, deadline: float, fn: Callable, *args: Any) -> _Timer:
        return self.call_later(deadline - monotonic(), fn, *args)

    def run_in_thread(
        self, fn: Callable, *args: Any, timeout: float | None = None, executor: Any = None
    ) -> Any:
        """Run blocking ``fn(*args)`` on gevent's thread pool (or ``executor``);
        park meanwhile."""
        if executor is not None:
            return HubBase.run_in_thread(self, fn, *args, timeout=timeout, executor=executor)
        result = self.greenlet.threadpool.spawn(fn, *args)
        try:
            return result.get(timeout=timeout)
        except gevent.Timeout:
            raise Timeout(timeout) from None
