"""Group communication (RFC 7252 §8, RFC 7390 basics): multicast requests
and the sockets a server listens on for them (layer 3).

* :class:`MulticastRequest` sends one NON request to a group address from a
  socket of its own and collects every response that carries its token,
  whoever sends it, until its window closes (:meth:`Client.multicast`).
* :func:`group_socket` makes a socket that receives a group's datagrams
  for a server (:class:`~greencoap.Server` ``multicast=``): bound to the
  group address and the server's port (so it gets nothing else), with the
  group joined on an interface.

Not thread-safe: a request belongs to the greenlet that iterates it.
"""

from __future__ import annotations

import os
import socket
import struct
from collections import deque
from time import monotonic
from typing import Any

from .codes import Code, Type
from .endpoint import make_udp_socket
from .errors import UriError
from .hub import Waiter, get_hub
from .message import Message

__all__ = [
    "ALL_COAP_NODES",
    "MulticastRequest",
    "ReceiveOnly",
    "group_socket",
    "interface_index",
    "is_multicast",
    "no_group_traffic",
    "unicast_peer",
]

IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)  # Linux
IPV6_MULTICAST_ALL = 29  # Linux 4.20+

#: the All-CoAP-Nodes groups (RFC 7252 §12.8): IPv4, IPv6 link-local, site-local
ALL_COAP_NODES = ("224.0.1.187", "ff02::fd", "ff05::fd")


def is_multicast(host: str) -> bool:
    """True for an IPv4 (224.0.0.0/4) or IPv6 (ff00::/8) multicast address."""
    host = host.split("%", 1)[0]
    try:
        return socket.inet_pton(socket.AF_INET, host)[0] & 0xF0 == 0xE0
    except OSError:
        pass
    try:
        return socket.inet_pton(socket.AF_INET6, host)[0] == 0xFF
    except OSError:
        return False


def interface_index(interface: str | int | None) -> int:
    """An interface index from a name (``"eth0"``), a number or None (0: the
    kernel's choice); UriError for a name the machine does not have."""
    if interface is None or interface == "":
        return 0
    if isinstance(interface, int) or str(interface).isdigit():
        return int(interface)
    try:
        return socket.if_nametoindex(interface)
    except OSError:
        raise UriError(f"no network interface {interface!r} here") from None


def _join(sock: socket.socket, group: str, ifindex: int) -> None:
    if ":" in group:
        mreq = socket.inet_pton(socket.AF_INET6, group) + struct.pack("@I", ifindex)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
    else:  # ip_mreqn: group, local address (any), interface index
        mreq = struct.pack("4s4si", socket.inet_aton(group), bytes(4), ifindex)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)


def group_socket(group: str, port: int, interface: str | int | None = None) -> socket.socket:
    """A non-blocking socket that receives ``group``'s datagrams to ``port``
    (and nothing else: it is bound to the group address), the group joined
    on ``interface`` (a name, an index, or None for the kernel's choice)."""
    ifindex = interface_index(interface)
    family = socket.AF_INET6 if ":" in group else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        addr: tuple = (group, port) if family == socket.AF_INET else (group, port, 0, ifindex)
        sock.bind(addr)
        _join(sock, group, ifindex)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def no_group_traffic(sock: socket.socket) -> None:
    """Keep the groups other sockets of this process joined away from ``sock``
    (Linux hands a wildcard-bound socket every joined group's datagrams)."""
    for level, name in (
        (socket.IPPROTO_IP, IP_MULTICAST_ALL),
        (socket.IPPROTO_IPV6, IPV6_MULTICAST_ALL),
    ):
        try:
            sock.setsockopt(level, name, 0)
        except OSError:
            pass  # not this family, or an older kernel


def unicast_peer(peer: tuple, family: int) -> tuple:
    """``peer`` (from a group socket) as an address for a socket of ``family``:
    an IPv4 peer becomes IPv4-mapped for a dual-stack IPv6 socket."""
    if family == socket.AF_INET6 and len(peer) == 2:
        return (f"::ffff:{peer[0]}", peer[1], 0, 0)
    return peer


class ReceiveOnly:
    """An endpoint impairment for a group socket: everything in, nothing out
    (its answers leave from the unicast socket; it sends no RST or ACK)."""

    __slots__ = ("stats",)

    def __init__(self) -> None:
        self.stats = {"lost_in": 0, "lost_out": 0}

    @property
    def offline(self) -> bool:
        return False

    def inbound(self, batch: list) -> list:
        return batch

    def outbound(self, batch: list) -> list:
        self.stats["lost_out"] += len(batch)
        return []


def _sender(group: str, ifindex: int, hops: int) -> socket.socket:
    """A socket to send a multicast request from (and hear the answers on)."""
    if ":" in group:
        sock = make_udp_socket("::", 0, buffer_size=None)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, hops)
        if ifindex:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
    else:
        sock = make_udp_socket("0.0.0.0", 0, buffer_size=None)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, hops)
        if ifindex:
            mreqn = struct.pack("4s4si", bytes(4), bytes(4), ifindex)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
    return sock


class MulticastRequest:
    """One NON request to a group; iterate for ``(message, peer)`` answers.

    ``group`` is the address (an IPv6 one may carry a ``%zone``), ``port``
    the servers' port, ``msg`` the request (its type is made NON, its MID
    and token chosen here).  Answers are collected from the moment of
    sending until ``timeout`` seconds later; iteration ends then.  Each
    peer's answer is taken once (a retransmitted copy is dropped).
    """

    def __init__(
        self,
        group: str,
        port: int,
        msg: Message,
        timeout: float,
        interface: str | int | None = None,
        hops: int = 1,
    ) -> None:
        host, _, zone = group.partition("%")
        ifindex = interface_index(interface if interface is not None else zone or None)
        self.hub = get_hub()
        self.timeout = timeout
        self._sock = _sender(host, ifindex, hops)
        self._answers: deque = deque()
        self._seen: set = set()
        self._waiter: Waiter | None = None
        self._channel = self.hub.io.open_channel(self._sock, self._on_batch)
        msg.mtype = Type.NON
        msg.mid = int.from_bytes(os.urandom(2), "big")
        if not msg.token:
            msg.token = os.urandom(4)
        self.token = msg.token
        dest: tuple = (host, port) if ":" not in host else (host, port, 0, ifindex)
        self._channel.sendto(msg.encode(), dest)
        self.deadline = monotonic() + timeout

    def _on_batch(self, batch: list) -> None:
        for data, addr in batch:
            try:
                m = Message.decode(data)
            except Exception:  # noqa: BLE001 - not CoAP: not an answer
                continue
            if m.token != self.token or m.code < 64:
                continue
            if m.mtype == Type.CON:  # a server may answer CON: acknowledge it
                self._channel.sendto(Message(Type.ACK, Code.EMPTY, m.mid, b"").encode(), addr)
            key = (addr[0], addr[1])
            if key in self._seen:
                continue
            self._seen.add(key)
            self._answers.append((m, addr))
            w = self._waiter
            if w is not None:
                self._waiter = None
                w.switch(None)

    def __iter__(self) -> MulticastRequest:
        return self

    def __next__(self) -> tuple[Message, Any]:
        while not self._answers:
            left = self.deadline - monotonic()
            if left <= 0 or self._sock is None:
                self.close()
                raise StopIteration
            w = self._waiter = Waiter(self.hub)
            timer = self.hub.call_later(left, w.switch, None)
            try:
                w.get()
            finally:
                timer.cancel()
                self._waiter = None
        return self._answers.popleft()

    def close(self) -> None:
        """Stop listening (also when the window closes) and release the socket."""
        if self._sock is not None:
            self._channel.close()
            self._sock.close()
            self._sock = None

    def __enter__(self) -> MulticastRequest:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
