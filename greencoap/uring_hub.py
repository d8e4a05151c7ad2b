"""The io_uring I/O backend (layer 3): the hub's fast path.

Same shape as :mod:`greencoap.epoll_hub` (``open_channel``, ``Channel.sendto``,
``poll``, ``wakeup``), driven by the C core in ``uring_core.h`` through cffi:

* every registered socket has a multishot ``recvmsg`` armed with a
  provided-buffer ring; it is re-armed in C when a completion arrives without
  ``IORING_CQE_F_MORE`` (buffers ran dry);
* sends are queued in Python, for all sockets together, and handed to C once
  per loop turn (``gc_send_many``: one call for every datagram of the turn,
  on whichever socket: a device fleet sends one on each of thousands), each
  becoming a ``sendmsg`` SQE;
* ``poll`` is one C call per turn: submit everything and wait with the next
  timer's deadline in a single ``io_uring_enter``, then harvest the CQEs into
  a preallocated arena that Python copies out with one ``bytes`` slice;
* another thread wakes the hub by writing an eventfd whose read is on the ring;
* a wildcard-bound socket answers each peer from the local address it wrote
  to (:mod:`greencoap.pktinfo`): its recvmsg has a control buffer parsed in
  C, its records carry the local address after the peer's, and its sends a
  source-address record that C turns into an ``IP_PKTINFO`` /
  ``IPV6_PKTINFO`` cmsg.  Other sockets pay nothing for it.

Ring setup prefers ``SINGLE_ISSUER|DEFER_TASKRUN``, then
``COOP_TASKRUN|TASKRUN_FLAG``.  If the ring cannot be created (ENOSYS, EPERM
from seccomp, ``kernel.io_uring_disabled``, RLIMIT_MEMLOCK) the constructor
raises ``OSError`` naming the reason and the hub falls back to epoll.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Callable
from typing import Any

from . import pktinfo
from ._ext import speedups
from .backends import MAX_DATAGRAM, DatagramBackend
from .protocol.limits import SHED_HOLD, SHED_PERSIST, SHED_TRIGGER

try:
    from ._uring import ffi, lib
except ImportError as e:  # built at install time; absent when liburing was missing
    raise ImportError(f"greencoap._uring is not built ({e}); install liburing-dev and reinstall")
if not hasattr(lib, "gc_sock_stats"):  # built from an older uring_core.h
    raise ImportError("greencoap._uring is older than uring_core.h; rebuild: pip install -e .")

# the C core's constants (defined there only)
NAMELEN = lib.GC_NAMELEN  # every address record: sizeof(struct sockaddr_in6)
META = lib.GC_META  # int32 fields per received record (see gc_poll)
PKTINFO = lib.GC_PKTINFO_FLAG  # in a record's slot: the local address follows the peer's
if lib.GC_LOCAL_REC != len(pktinfo.NO_RECORD):
    raise ImportError("greencoap._uring disagrees with greencoap.pktinfo; rebuild")

ENTRIES = 4096  # SQ entries (CQ gets 4x)
NBUFS = 2048  # provided receive buffers (power of two); $GREENCOAP_URING_BUFFERS overrides
MAX_RECS = 1024  # datagrams harvested per C call
ARENA = MAX_RECS * 256  # bytes of payload+address harvested per C call

_AF_INET, _AF_INET6 = socket.AF_INET, socket.AF_INET6
_inet_ntop, _inet_pton = socket.inet_ntop, socket.inet_pton
_fam = struct.Struct("=H")
_port = struct.Struct("!H")
_v6tail = struct.Struct("!I16s")
_scope = struct.Struct("=I")
_PAD4 = bytes(NAMELEN - 8)


def sockaddr_to_tuple(sa: bytes) -> tuple:
    """Raw ``sockaddr_in``/``sockaddr_in6`` bytes → the tuple Python sockets use."""
    fam = _fam.unpack_from(sa)[0]
    port = _port.unpack_from(sa, 2)[0]
    if fam == _AF_INET:
        return (_inet_ntop(_AF_INET, sa[4:8]), port)
    flow, addr = _v6tail.unpack_from(sa, 4)
    return (_inet_ntop(_AF_INET6, addr), port, flow, _scope.unpack_from(sa, 24)[0])


def tuple_to_sockaddr(addr: tuple) -> bytes:
    """A Python socket address tuple → 28 bytes of ``sockaddr_in``/``sockaddr_in6``."""
    host = addr[0]
    if len(addr) == 2 and ":" not in host:
        return _fam.pack(_AF_INET) + _port.pack(addr[1]) + _inet_pton(_AF_INET, host) + _PAD4
    flow = addr[2] if len(addr) > 2 else 0
    scope = addr[3] if len(addr) > 3 else 0
    if "%" in host:
        host, _, zone = host.partition("%")
        scope = scope or socket.if_nametoindex(zone)
    return (
        _fam.pack(_AF_INET6)
        + _port.pack(addr[1])
        + _v6tail.pack(flow, _inet_pton(_AF_INET6, host))
        + _scope.pack(scope)
    )


def pktinfo_entry(sa: bytes) -> tuple:
    """A pktinfo record's address (the peer's sockaddr padded to 28 bytes, then
    the local address) → ``(peer tuple, what to send that peer with)``."""
    head = sa[:NAMELEN]
    return (sockaddr_to_tuple(head), head + pktinfo.send_record(sa[NAMELEN:]))


def split_batch_py(arena: Any, meta: Any, n: int, addr_cache: dict) -> tuple[dict, int]:
    """The ``n`` records ``gc_poll`` described in ``meta`` (int32s: slot,
    payload offset and length, address offset and length) over ``arena``, as
    ``({slot: [(payload, peer), ...]}, misses)``: each peer looked up in
    ``addr_cache`` by its address record; one not there stands in as its raw
    bytes, counted in ``misses`` for the caller to convert.  The C twin is
    ``greencoap._speedups.split_batch`` (the same result, checked by tests)."""
    if n < 0 or n * META * 4 > memoryview(meta).nbytes:
        raise ValueError("split_batch: meta is shorter than n records")
    fields = memoryview(meta).cast("B").cast("i")[: n * META].tolist()
    arena = memoryview(arena).cast("B")
    size = len(arena)
    for i in range(0, n * META, META):
        _, poff, plen, noff, nlen = fields[i : i + 5]
        if min(poff, plen, noff, nlen) < 0 or max(poff + plen, noff + nlen) > size:
            raise ValueError("split_batch: a record points outside the arena")
    used = max(
        (
            max(fields[i + 1] + fields[i + 2], fields[i + 3] + fields[i + 4])
            for i in range(0, n * META, META)
        ),
        default=0,
    )
    blob = bytes(arena[:used])  # one copy of what the records use
    batches: dict[int, list] = {}
    misses = 0
    for i in range(0, n * META, META):
        slot, poff, plen, noff, nlen = fields[i : i + 5]
        sa = blob[noff : noff + nlen]
        addr = addr_cache.get(sa)
        if addr is None:
            addr = sa
            misses += 1
        b = batches.get(slot)
        if b is None:
            b = batches[slot] = []
        b.append((blob[poff : poff + plen], addr))
    return batches, misses


_sp = speedups()
split_batch = split_batch_py if _sp is None else _sp.split_batch
del _sp


def _remember(cache: dict, key: Any, value: Any) -> Any:
    """Store a converted address in a bounded cache (cleared when it grows past 64k)."""
    if len(cache) > 65536:
        cache.clear()
    cache[key] = value
    return value


def _buffer_count() -> int:
    """Receive buffers in the ring: ``$GREENCOAP_URING_BUFFERS`` or NBUFS."""
    text = os.environ.get("GREENCOAP_URING_BUFFERS")
    if not text:
        return NBUFS
    n = int(text)
    if n < 1 or n > 32768 or n & (n - 1):
        raise ValueError("GREENCOAP_URING_BUFFERS must be a power of two, 1..32768")
    return n


class Channel:
    """One registered UDP socket on the ring: queued sends, batched receives."""

    __slots__ = ("sock", "slot", "on_batch", "backend", "closed", "_stats")
    _pktinfo = 0

    def __init__(self, backend: UringBackend, sock: socket.socket, on_batch: Callable) -> None:
        self.backend = backend
        self.sock = sock
        self.on_batch = on_batch
        self.closed = False
        self._stats = {"send_errors": 0, "recv_errors": 0}
        slot = lib.gc_add_socket(backend._ring, sock.fileno(), self._pktinfo)
        if slot < 0:
            raise OSError(-slot, f"io_uring: cannot register socket: {os.strerror(-slot)}")
        self.slot = slot

    @property
    def stats(self) -> dict[str, int]:
        """Send/receive errors, and counters from C: ``shed_early`` (datagrams
        dropped by the source limiter), ``shed_engagements``, ``shedding`` (1
        while it is engaged), ``recv_dead`` (1 once receiving failed for good,
        e.g. the file descriptor is no socket), ``truncated`` (datagrams over
        the size limit, dropped)."""
        s = dict(self._stats)
        if not self.closed:
            out = self.backend._slot_stats
            lib.gc_sock_stats(self.backend._ring, self.slot, out)
            s["shed_early"], s["shed_engagements"], s["shedding"] = out[1], out[2], out[3]
            s["recv_dead"], s["truncated"] = out[4], out[5]
        return s

    def limit_sources(
        self,
        rate: float,
        burst: float,
        trigger: int = SHED_TRIGGER,
        persist: float = SHED_PERSIST,
        hold: float = SHED_HOLD,
    ) -> None:
        """Shed a flooding source's excess in C, before it costs Python time
        (see ``uring_core.h``); ``rate <= 0`` turns it off."""
        ring = self.backend._ring
        err = lib.gc_set_limit(ring, self.slot, rate, burst, trigger, persist, hold)
        if err < 0:
            raise OSError(-err, f"io_uring: cannot limit sources: {os.strerror(-err)}")

    def sendto(self, data: bytes, addr: Any) -> None:
        """Queue one datagram; it leaves with this loop turn's submit."""
        b = self.backend
        b._out.append(data)
        b._out_slots.append(self.slot)
        sa = b._sa_cache.get(addr)
        if sa is None:
            sa = b._sockaddr(addr)
        b._out_addrs.append(sa)

    def close(self) -> None:
        """Stop receiving (cancels the multishot recv); does not close the socket."""
        if not self.closed:
            self.closed = True
            self.backend._remove(self)


class PktinfoChannel(Channel):
    """A channel on a wildcard-bound socket: replies leave from the address
    the peer wrote to (see :mod:`greencoap.pktinfo`).

    ``local`` (and ``local_old``, the previous generation) map a peer to the
    record ``gc_send_many`` takes for it: its sockaddr, then the source
    address to send from.
    """

    __slots__ = ("local", "local_old")
    _pktinfo = 1

    def __init__(self, backend: UringBackend, sock: socket.socket, on_batch: Callable) -> None:
        super().__init__(backend, sock, on_batch)
        self.local: dict = {}
        self.local_old: dict = {}

    def sendto(self, data: bytes, addr: Any) -> None:
        """Queue one datagram, from the address ``addr`` last wrote to."""
        b = self.backend
        b._out.append(data)
        b._out_slots.append(self.slot)
        rec = self.local.get(addr) or self.local_old.get(addr)
        if rec is None:
            sa = b._sa_cache.get(addr)
            if sa is None:
                sa = b._sockaddr(addr)
            rec = sa + pktinfo.NO_RECORD
        b._out_addrs.append(rec)

    def deliver(self, batch: list) -> None:
        """Records with a local address: ``[(payload, (peer, send record)), ...]``."""
        local = self.local
        out = []
        append = out.append
        for data, (peer, rec) in batch:
            local[peer] = rec
            append((data, peer))
        if len(local) > pktinfo.LIMIT:
            self.local_old = local
            self.local = {}
        self.on_batch(out)


class UringBackend(DatagramBackend):
    """io_uring backend; raises ``OSError`` when the ring cannot be set up."""

    name = "uring"

    def __init__(self, hub: Any) -> None:
        self.hub = hub
        self._wfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        err = ffi.new("int *")
        self.nbufs = nbufs = _buffer_count()
        ring = lib.gc_new(ENTRIES, nbufs, MAX_DATAGRAM, self._wfd, err)
        if ring == ffi.NULL:
            os.close(self._wfd)
            code = -err[0]
            hint = {
                1: "EPERM: io_uring is forbidden here (seccomp profile or "
                "kernel.io_uring_disabled)",
                38: "ENOSYS: the kernel has no io_uring",
                12: "ENOMEM: RLIMIT_MEMLOCK too small for the rings (ulimit -l)",
            }.get(code, os.strerror(code))
            raise OSError(code, f"io_uring_setup failed: {hint}")
        self._ring = ring
        self.setup_flags = lib.gc_setup_flags(ring)
        self._meta = ffi.new("int32_t[]", MAX_RECS * META)
        self._meta_view = memoryview(ffi.buffer(self._meta)).cast("i")
        self._arena = ffi.new("char[]", ARENA)
        self._arena_buf = ffi.buffer(self._arena)
        self._used = ffi.new("int *")
        self._failed = ffi.new("uint8_t[]", 256)  # gc_send_many's per-datagram failures
        # a turn with one datagram (a sequential client, a quiet server) fills
        # these in place of packing arrays (measured: ~0.4 µs against ~2.5 µs)
        self._one_slot = ffi.new("int32_t[1]")
        self._one_len = ffi.new("uint32_t[1]")
        self._more = ffi.new("int *")
        self._slot_stats = ffi.new("uint64_t[]", lib.GC_SLOT_STATS)
        self._channels: dict[int, Channel] = {}
        # this turn's sends, all sockets together: payload, slot, address record
        self._out: list[bytes] = []
        self._out_slots: list[int] = []
        self._out_addrs: list[bytes] = []
        self._addr_cache: dict[bytes, tuple] = {}
        self._sa_cache: dict[tuple, bytes] = {}
        self.closed = False

    # -- address conversion (cached both ways: peers repeat) ----------------
    def _sockaddr(self, addr: tuple) -> bytes:
        return _remember(self._sa_cache, addr, tuple_to_sockaddr(addr))

    def _peer(self, sa: bytes) -> tuple:
        if len(sa) > NAMELEN:  # a pktinfo record: (peer, send record)
            return _remember(self._addr_cache, sa, pktinfo_entry(sa))
        return _remember(self._addr_cache, sa, sockaddr_to_tuple(sa))

    # -- backend interface ------------------------------------------------
    def open_channel(self, sock: socket.socket, on_batch: Callable) -> Channel:
        """Register a UDP socket; datagrams go to ``on_batch([(data, addr), ...])``."""
        if sock.type != socket.SOCK_DGRAM:
            raise ValueError(f"only datagram sockets can be registered, not {sock!r}")
        sock.setblocking(False)
        cls = PktinfoChannel if pktinfo.wanted(sock) else Channel
        ch = cls(self, sock, on_batch)
        self._channels[ch.slot] = ch
        return ch

    def _remove(self, ch: Channel) -> None:
        if self._channels.get(ch.slot) is ch:
            del self._channels[ch.slot]
            if self._out:
                self._flush()  # what was accepted still leaves
            lib.gc_remove_socket(self._ring, ch.slot)

    def _flush(self) -> None:
        """Hand this turn's sends, every socket's, to C in one call."""
        out, slots, addrs = self._out, self._out_slots, self._out_addrs
        self._out, self._out_slots, self._out_addrs = [], [], []
        n = len(out)
        failed = self._failed
        if n == 1:
            blob, sa = out[0], addrs[0]
            slot_arr, len_arr = self._one_slot, self._one_len
            slot_arr[0] = slots[0]
            len_arr[0] = len(blob)
        else:
            blob, sa = b"".join(out), b"".join(addrs)
            slot_arr = ffi.from_buffer("int32_t[]", struct.pack(f"={n}i", *slots))
            len_arr = ffi.from_buffer("uint32_t[]", struct.pack(f"={n}I", *map(len, out)))
            if len(failed) < n:
                failed = self._failed = ffi.new("uint8_t[]", max(n, 2 * len(failed)))
        bad = lib.gc_send_many(self._ring, slot_arr, blob, len_arr, sa, n, failed)
        if bad:
            channels = self._channels
            for i in range(n):
                if failed[i]:
                    ch = channels.get(slots[i])
                    if ch is not None:
                        ch._stats["send_errors"] += 1

    def poll(self, timeout: float | None) -> None:
        """Submit queued sends, wait up to ``timeout`` s, dispatch arrivals."""
        if self._out:
            try:
                self._flush()
            except Exception:  # noqa: BLE001 - report, keep the loop alive
                self.hub.handle_error(self._flush)
        tns = -1 if timeout is None else int(timeout * 1e9)
        ring = self._ring
        while True:
            n = lib.gc_poll(
                ring, tns, self._meta, MAX_RECS, self._arena, ARENA, self._used, self._more
            )
            if n < 0:
                raise OSError(-n, f"io_uring_enter failed: {os.strerror(-n)}")
            if n:
                self._dispatch(n)
            if not self._more[0]:
                return
            tns = 0

    def _dispatch(self, n: int) -> None:
        batches, misses = split_batch(self._arena_buf, self._meta_view, n, self._addr_cache)
        if misses:
            self._convert_new_peers(batches)
        channels = self._channels
        # a bug in one socket's consumer must not cost the other sockets' datagrams
        for slot, batch in batches.items():
            ch = channels.get(slot)
            try:
                if ch is not None:
                    if not ch.closed:
                        ch.on_batch(batch)
                elif slot & PKTINFO:
                    ch = channels.get(slot ^ PKTINFO)
                    if ch is not None and not ch.closed:
                        ch.deliver(batch)
            except Exception:  # noqa: BLE001
                self.hub.handle_error(ch.on_batch if ch is not None else self._dispatch)

    def _convert_new_peers(self, batches: dict[int, list]) -> None:
        """Put peers in place of the raw address records ``split_batch`` found
        in no cache (new peers); a datagram whose address cannot be read goes."""
        for batch in batches.values():
            keep = []
            for data, addr in batch:
                if addr.__class__ is bytes:
                    try:
                        addr = self._peer(addr)
                    except Exception:  # noqa: BLE001 - an address we cannot read: drop it
                        self.hub.handle_error(self._peer)
                        continue
                keep.append((data, addr))
            batch[:] = keep

    def statistics(self) -> dict[str, int]:
        """Counters kept by the C core (sends, receives, errors, re-arms, …)."""
        r = self._ring
        return {
            "sends": r.sends_total,
            "recvs": r.recvs,
            "send_errors": r.send_errors,
            "recv_errors": r.recv_errors,
            "truncated": r.truncated,
            "enobufs": r.enobufs,
            "rearms": r.rearms,
            "inflight_sends": r.inflight_sends,
            "pktinfo_fallbacks": r.pktinfo_fallbacks,
            "shed_early": r.shed,
            "sockets": r.nslots - r.nfree,
        }

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for ch in list(self._channels.values()):
            ch.close()
        lib.gc_free(self._ring)
        self._ring = ffi.NULL
        os.close(self._wfd)
