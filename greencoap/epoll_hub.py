"""The portable I/O backend: epoll readiness + non-blocking datagram calls (layer 3).

This is the fallback for machines where io_uring is missing or forbidden
(old kernels, seccomp profiles, ``kernel.io_uring_disabled``) and the
reference the io_uring backend is measured against.  Its shape is the one all
backends share:

* ``open_channel(sock, on_batch)`` registers a UDP socket once and returns a
  :class:`Channel`; received datagrams are handed to ``on_batch(batch)`` as a
  list of ``(data, address)`` pairs, in the hub;
* ``Channel.sendto(data, addr)`` queues a datagram; queued sends are flushed
  once per loop turn, before the hub waits;
* ``poll(timeout)`` flushes, waits for readiness at most ``timeout`` seconds
  and dispatches what arrived; ``wakeup()`` may be called from any thread.

A server socket bound to a wildcard address gets a :class:`PktinfoChannel`,
which reads with ``recvmsg`` and answers each peer from the local address it
wrote to (:mod:`greencoap.pktinfo`); every other socket keeps ``recvfrom`` /
``sendto``.
"""

from __future__ import annotations

import errno
import os
import select
import socket
from collections.abc import Callable
from time import monotonic
from typing import Any

from . import pktinfo
from .backends import MAX_DATAGRAM, DatagramBackend
from .protocol.limits import SHED_HOLD, SHED_PERSIST, SHED_TRIGGER, SourceLimiter

#: datagrams read per readiness event before the other sockets' turn (as many
#: as the io_uring backend harvests per call: a backlog this deep is what
#: engages early shedding, see :class:`~greencoap.protocol.limits.SourceLimiter`)
RECV_BATCH = 1024
# what a send with a source address that is no longer ours fails with (IPv6:
# EINVAL; IPv4: ENETUNREACH from the route lookup)
_SOURCE_REFUSED = (errno.EINVAL, errno.EADDRNOTAVAIL, errno.ENETUNREACH)


class Channel:
    """One registered UDP socket: queued sends, batched receives, counters."""

    __slots__ = (
        "sock",
        "fileno",
        "on_batch",
        "backend",
        "_out",
        "closed",
        "_stats",
        "limiter",
        # used by PktinfoChannel (slots here: gevent's channel subclasses both)
        "local",
        "local_old",
        "_cmsgs",
    )

    def __init__(self, backend: Any, sock: socket.socket, on_batch: Callable) -> None:
        self.backend = backend
        self.sock = sock
        self.fileno = sock.fileno()
        self.on_batch = on_batch
        self._out: list = []
        self.closed = False
        self._stats = {"send_errors": 0, "recv_errors": 0, "truncated": 0}
        self.limiter: SourceLimiter | None = None

    @property
    def stats(self) -> dict[str, int]:
        """Send/receive errors, truncated datagrams and early shedding counters."""
        s = dict(self._stats)
        if self.limiter is not None:
            s.update(self.limiter.statistics(monotonic()))
        else:
            s.update(shed_early=0, shed_engagements=0, shedding=0)
        return s

    def limit_sources(
        self,
        rate: float,
        burst: float,
        trigger: int = SHED_TRIGGER,
        persist: float = SHED_PERSIST,
        hold: float = SHED_HOLD,
    ) -> None:
        """Shed a flooding source's excess as datagrams are read, before any
        protocol work (:class:`~greencoap.protocol.limits.SourceLimiter`);
        ``rate <= 0`` turns it off."""
        self.limiter = SourceLimiter(rate, burst, trigger, persist, hold) if rate > 0 else None

    def _deliver(self, batch: list) -> None:
        """Hand a harvest to the consumer, through the source limiter if any."""
        limiter = self.limiter
        if limiter is not None:
            batch = limiter.filter(batch, monotonic(), len(batch) >= RECV_BATCH)
        if batch and not self.closed:
            self.on_batch(batch)

    def sendto(self, data: bytes, addr: Any) -> None:
        """Queue one datagram; it leaves on this loop turn's flush."""
        out = self._out
        if not out:
            self.backend._dirty.append(self)
        out.append((data, addr))

    def close(self) -> None:
        """Unregister from the backend (does not close the socket)."""
        if not self.closed:
            self.closed = True
            self.backend._remove(self)

    def _flush(self) -> bool:
        """Send what is queued; True when all of it left (else wait for EPOLLOUT)."""
        out = self._out
        send = self.sock.sendto
        i = 0
        n = len(out)
        while i < n:
            data, addr = out[i]
            try:
                send(data, addr)
            except BlockingIOError:
                del out[:i]
                return False
            except OSError:
                # unreachable peer, EMSGSIZE, …: the datagram is lost, as on a wire
                self._stats["send_errors"] += 1
            i += 1
        out.clear()
        return True

    def _read(self) -> None:
        recv = self.sock.recvfrom
        batch = []
        for _ in range(RECV_BATCH):
            try:
                item = recv(MAX_DATAGRAM + 1)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno in (errno.EBADF, errno.ENOTSOCK):
                    break
                self._stats["recv_errors"] += 1  # e.g. ICMP port unreachable
                continue
            if len(item[0]) > MAX_DATAGRAM:
                self._stats["truncated"] += 1
            else:
                batch.append(item)
        if batch:
            self._deliver(batch)


class PktinfoChannel(Channel):
    """A channel on a wildcard-bound socket: replies leave from the address
    the peer wrote to (see :mod:`greencoap.pktinfo`).

    ``local`` (and ``local_old``, the previous generation) map a peer to the
    ``sendmsg`` ancillary data for its last destination address (``()``: none,
    e.g. it wrote to a multicast group); ``_cmsgs`` caches that data per
    received control message.
    """

    __slots__ = ()

    def __init__(self, backend: Any, sock: socket.socket, on_batch: Callable) -> None:
        super().__init__(backend, sock, on_batch)
        self.local: dict = {}
        self.local_old: dict = {}
        self._cmsgs: dict = {}

    def _learn(self, ancdata: list) -> list | tuple:
        """The ``sendmsg`` ancillary data answering a datagram that came with
        ``ancdata`` (cached: keyed by its last cmsg, IP_PKTINFO when there are two)."""
        cache = self._cmsgs
        if len(cache) > 1024:
            cache.clear()
        anc = cache[ancdata[-1]] = pktinfo.send_cmsgs(pktinfo.local_from_cmsgs(ancdata))
        return anc

    def _remember(self, ancdata: list, addr: Any) -> None:
        """Note the destination address of a datagram ``addr`` sent us."""
        if ancdata:
            anc = self._cmsgs.get(ancdata[-1])
            self.local[addr] = self._learn(ancdata) if anc is None else anc

    def _rotate(self) -> None:
        if len(self.local) > pktinfo.LIMIT:
            self.local_old = self.local
            self.local = {}

    def _flush(self) -> bool:
        out = self._out
        sock = self.sock
        send, sendmsg = sock.sendto, sock.sendmsg
        local, old = self.local, self.local_old
        i = 0
        n = len(out)
        while i < n:
            data, addr = out[i]
            anc = local.get(addr) or old.get(addr)
            try:
                if anc:
                    sendmsg((data,), anc, 0, addr)
                else:
                    send(data, addr)
            except BlockingIOError:
                del out[:i]
                return False
            except OSError as e:
                if anc and e.errno in _SOURCE_REFUSED:
                    # the source was refused (the address went away): forget
                    # it and send this datagram again, letting the kernel pick
                    local.pop(addr, None)
                    old.pop(addr, None)
                    continue
                self._stats["send_errors"] += 1
            i += 1
        out.clear()
        return True

    def _read(self) -> None:
        recvmsg = self.sock.recvmsg
        cache, local = self._cmsgs, self.local
        batch = []
        for _ in range(RECV_BATCH):
            try:
                data, ancdata, _flags, addr = recvmsg(MAX_DATAGRAM + 1, pktinfo.ANCBUF)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno in (errno.EBADF, errno.ENOTSOCK):
                    break
                self._stats["recv_errors"] += 1
                continue
            if len(data) > MAX_DATAGRAM:
                self._stats["truncated"] += 1
            else:
                if ancdata:  # what self._remember does, inline
                    anc = cache.get(ancdata[-1])
                    local[addr] = self._learn(ancdata) if anc is None else anc
                batch.append((data, addr))
        if batch:
            self._rotate()
            self._deliver(batch)


def channel_class(sock: socket.socket, plain: type, with_pktinfo: type) -> type:
    """``with_pktinfo`` for a socket that wants local addresses tracked
    (:func:`greencoap.pktinfo.wanted`), else ``plain``."""
    if pktinfo.wanted(sock):
        return with_pktinfo
    return plain


class EpollBackend(DatagramBackend):
    """Readiness-based backend on ``select.epoll`` (the portable fallback)."""

    name = "epoll"

    def __init__(self, hub: Any) -> None:
        self.hub = hub
        self._ep = select.epoll()
        self._channels: dict[int, Channel] = {}
        self._dirty: list[Channel] = []
        self._blocked: set[int] = set()
        self._wfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._ep.register(self._wfd, select.EPOLLIN)

    def open_channel(self, sock: socket.socket, on_batch: Callable) -> Channel:
        """Register a non-blocking UDP socket; datagrams go to ``on_batch``."""
        sock.setblocking(False)
        ch = channel_class(sock, Channel, PktinfoChannel)(self, sock, on_batch)
        self._channels[ch.fileno] = ch
        self._ep.register(ch.fileno, select.EPOLLIN)
        return ch

    def _remove(self, ch: Channel) -> None:
        if self._channels.get(ch.fileno) is ch:
            if ch._out:
                ch._flush()  # what was accepted still leaves (e.g. final notifications)
            del self._channels[ch.fileno]
            self._blocked.discard(ch.fileno)
            try:
                self._ep.unregister(ch.fileno)
            except (OSError, ValueError):
                pass

    def poll(self, timeout: float | None) -> None:
        """Flush queued sends, wait up to ``timeout`` s, dispatch arrivals."""
        if self._dirty:
            self._flush()
        try:
            events = self._ep.poll(-1 if timeout is None else timeout, 256)
        except InterruptedError:
            return
        channels = self._channels
        for fd, ev in events:
            ch = channels.get(fd)
            if ch is None:
                if fd == self._wfd:
                    try:
                        os.eventfd_read(self._wfd)
                    except BlockingIOError:
                        pass
                continue
            try:
                if ev & select.EPOLLOUT and ch._flush():
                    self._blocked.discard(fd)
                    self._ep.modify(fd, select.EPOLLIN)
                if ev & (select.EPOLLIN | select.EPOLLERR):
                    ch._read()
            except Exception:  # noqa: BLE001 - one socket's bug must not cost the others
                self.hub.handle_error(ch.on_batch)

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        for ch in dirty:
            if ch.closed or ch.fileno in self._blocked:
                continue
            try:
                if not ch._flush():
                    self._blocked.add(ch.fileno)
                    self._ep.modify(ch.fileno, select.EPOLLIN | select.EPOLLOUT)
            except Exception:  # noqa: BLE001
                self.hub.handle_error(ch._flush)

    def close(self) -> None:
        for ch in list(self._channels.values()):
            ch.close()
        self._ep.close()
        os.close(self._wfd)
