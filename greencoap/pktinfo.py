"""Answering from the address a datagram came to: IP_PKTINFO / IPV6_PKTINFO (layer 3).

A socket bound to a wildcard address (``::`` or ``0.0.0.0``) receives the
datagrams sent to any of the host's addresses.  Left alone, the kernel picks
the source address of a reply from the routing table, so a peer that sent to
another local address (an alias, a second interface, ``127.0.0.2``) gets the
reply from an address it never talked to: a ``connect()``-ed UDP socket drops
it, and RFC 7252 §5.3.2 says a response's source endpoint MUST be the
request's destination endpoint.

Who does what:

* ``make_udp_socket`` (a server's socket, or any bound to an explicit
  wildcard host) calls :func:`request`: ``IP_PKTINFO`` on, and
  ``IPV6_RECVPKTINFO`` too on AF_INET6 sockets (the kernel then hands an
  IPv4-mapped datagram both; ``IP_PKTINFO``'s ``ipi_spec_dst`` is preferred),
  so that each datagram carries its destination address.  A client's
  default socket (``host=None``, also bound to ``::``) does not: a client
  gains nothing from it, and on epoll ``recvmsg``/``sendmsg`` cost it ~10%.
* the backends, for a socket bound to a wildcard address with one of those
  options on (:func:`wanted`; a socket made elsewhere opts in by setting
  it), read each datagram's destination address; remember per peer the
  local address it last reached us on, in two generations of at most
  ``LIMIT`` peers each (the older is dropped when the newer fills, so a peer
  heard from among the last ``LIMIT`` others is still known); and attach
  that address to what they send the peer, as ``IP_PKTINFO``
  (``ipi_spec_dst``) or ``IPV6_PKTINFO`` (``ipi6_addr``).  Multicast,
  broadcast and unspecified destinations are not echoed (the kernel picks a
  source, as before), and a send whose source the kernel refuses (the
  address went away) is sent again without it.

Peer tuples are not touched: the endpoint and the engines never see any of
this.  Other sockets (bound to a specific address, or the client's) keep the
plain calls (``recvfrom`` / ``sendto``, or a ``recvmsg`` without control
buffer on io_uring) and pay nothing.  ``GREENCOAP_PKTINFO=0`` turns the
feature off (to compare, or to show what it fixes).
"""

from __future__ import annotations

import os
import socket
import struct

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Python < 3.12 lacks the name
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
_IPPROTO_IP, _IPPROTO_IPV6 = socket.IPPROTO_IP, socket.IPPROTO_IPV6

#: peers remembered per generation (two generations: at most twice this many)
LIMIT = 32768
#: room for the control messages of one received datagram (both kinds)
ANCBUF = socket.CMSG_SPACE(20) + socket.CMSG_SPACE(12)

_V4MAPPED = bytes(10) + b"\xff\xff"
_in_pktinfo = struct.Struct("=I4s4s")  # ipi_ifindex, ipi_spec_dst, ipi_addr
_in6_ifindex = struct.Struct("=I")  # in6_pktinfo: ipi6_addr[16], ipi6_ifindex
_record = struct.Struct("=I16s")  # for uring_core.h: 4 or 6 (0: none), address


def disabled() -> bool:
    """``GREENCOAP_PKTINFO=0``: never track local addresses."""
    return os.environ.get("GREENCOAP_PKTINFO", "") == "0"


def request(sock: socket.socket) -> bool:
    """Ask the kernel for each datagram's destination address (before or
    after ``bind``); False if it refuses or ``GREENCOAP_PKTINFO=0``."""
    if disabled():
        return False
    try:
        sock.setsockopt(_IPPROTO_IP, IP_PKTINFO, 1)
        if sock.family == socket.AF_INET6:
            sock.setsockopt(_IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
    except OSError:
        return False
    return True


def wanted(sock: socket.socket) -> bool:
    """Should the backend track local addresses for ``sock``?

    True for a UDP socket bound to ``::`` or ``0.0.0.0`` on a port, with
    ``IP_PKTINFO`` (or ``IPV6_RECVPKTINFO``) on, unless ``GREENCOAP_PKTINFO=0``.
    Then both options are on when this returns.
    """
    if disabled():
        return False
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_DGRAM:
        return False
    try:
        host, port = sock.getsockname()[:2]
        if port == 0 or host not in ("::", "0.0.0.0"):
            return False
        on = sock.getsockopt(_IPPROTO_IP, IP_PKTINFO)
        if sock.family == socket.AF_INET6:
            on = on or sock.getsockopt(_IPPROTO_IPV6, IPV6_RECVPKTINFO)
    except OSError:
        return False
    return bool(on) and request(sock)


def usable(local: bytes) -> bool:
    """Can a reply leave from ``local`` (4 or 16 bytes)?  Not from a multicast,
    broadcast or unspecified address."""
    if len(local) == 4:
        return local != b"\xff\xff\xff\xff" and local != bytes(4) and not 224 <= local[0] < 240
    return len(local) == 16 and local[0] != 0xFF and local != bytes(16)


def local_from_cmsgs(ancdata: list) -> bytes:
    """The local address (4 or 16 bytes) in ``recvmsg``'s ancillary data, or ``b""``.

    ``IP_PKTINFO``'s ``ipi_spec_dst`` wins over ``IPV6_PKTINFO``'s header
    destination: for a broadcast it is the interface's own address.
    """
    v6 = b""
    for level, kind, data in ancdata:
        if level == _IPPROTO_IP and kind == IP_PKTINFO and len(data) >= 12:
            return data[4:8]
        if level == _IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(data) >= 16:
            v6 = data[:16]
    if v6[:12] == _V4MAPPED:
        return v6[12:]
    return v6


def send_cmsgs(local: bytes) -> list | tuple:
    """``sendmsg`` ancillary data that makes a datagram leave from ``local``
    (``()`` when it cannot: the kernel picks, as without pktinfo)."""
    if not usable(local):
        return ()
    if len(local) == 4:
        # accepted on AF_INET6 sockets too, for IPv4-mapped destinations
        return [(_IPPROTO_IP, IP_PKTINFO, _in_pktinfo.pack(0, local, bytes(4)))]
    return [(_IPPROTO_IPV6, IPV6_PKTINFO, local + _in6_ifindex.pack(0))]


#: the record of "no source address" for uring_core.h
NO_RECORD = _record.pack(0, b"")


def send_record(local: bytes) -> bytes:
    """The 20-byte source-address record ``uring_core.h`` turns into a cmsg."""
    if not usable(local):
        return NO_RECORD
    return _record.pack(4 if len(local) == 4 else 6, local)
