"""Handshake message reassembly and flight packing (layer 2; RFC 6347 §4.2.3
fragmentation, §4.2.2 message_seq ordering, §4.1.1 datagrams up to the PMTU).

* :class:`HandshakeBuffer` collects the fragments of incoming handshake
  messages — in any order, duplicated or overlapping — and releases whole
  messages strictly in ``message_seq`` order.  Messages already processed are
  reported as old (they may be a retransmitted flight that calls for
  retransmitting ours); a few future ones are buffered, later ones dropped.
* :func:`layout_flight` decides once how a flight is cut into records and
  packed into datagrams of at most ``mtu`` bytes; the session seals those
  records afresh (new record sequence numbers) every time it sends the flight.
"""

from __future__ import annotations

from .messages import HANDSHAKE_HEADER_LENGTH, encode_header
from .record import AEAD_OVERHEAD, HANDSHAKE, HEADER_LENGTH

# add() outcomes
ACCEPTED = 0  # stored (maybe completing a message)
OLD = 1  # message_seq already processed
TOO_FAR = 2  # message_seq beyond the buffering window: dropped
CONFLICT = 3  # disagrees with earlier fragments of the same message: dropped


class _Partial:
    """One incoming message being reassembled."""

    __slots__ = ("msg_type", "epoch", "body", "ranges")

    def __init__(self, msg_type: int, length: int, epoch: int) -> None:
        self.msg_type = msg_type
        self.epoch = epoch
        self.body = bytearray(length)
        self.ranges: list[tuple[int, int]] = []  # received [start, end) spans, merged, sorted

    def add(self, offset: int, data: bytes) -> None:
        end = offset + len(data)
        self.body[offset:end] = data
        merged: list[tuple[int, int]] = []
        for a, b in sorted((*self.ranges, (offset, end))):
            if merged and a <= merged[-1][1]:
                if b > merged[-1][1]:
                    merged[-1] = (merged[-1][0], b)
            else:
                merged.append((a, b))
        self.ranges = merged

    def complete(self) -> bool:
        n = len(self.body)
        return n == 0 or self.ranges == [(0, n)]


Message = tuple[int, int, bytes, int]  # (msg_type, message_seq, body, epoch)


class HandshakeBuffer:
    """Reassembles incoming handshake messages and hands them out in order.

    ``next_seq`` is the message_seq expected next; None means "take the first
    message that arrives" (a server session learns the client's numbering from
    its ClientHello).
    """

    WINDOW = 8  # future messages buffered beyond next_seq

    def __init__(self, next_seq: int | None = 0) -> None:
        self.next_seq = next_seq
        self._partial: dict[int, _Partial] = {}

    def reset(self, next_seq: int | None) -> None:
        """Forget everything and expect ``next_seq`` next."""
        self.next_seq = next_seq
        self._partial.clear()

    def add(
        self, msg_type: int, length: int, seq: int, offset: int, data: bytes, epoch: int
    ) -> int:
        """Store one fragment; the result says whether it was taken."""
        if self.next_seq is None:
            self.next_seq = seq
        if seq < self.next_seq:
            return OLD
        if seq >= self.next_seq + self.WINDOW:
            return TOO_FAR
        p = self._partial.get(seq)
        if p is None:
            p = self._partial[seq] = _Partial(msg_type, length, epoch)
        elif p.msg_type != msg_type or len(p.body) != length or p.epoch != epoch:
            return CONFLICT
        p.add(offset, data)
        return ACCEPTED

    def pop(self) -> Message | None:
        """The next message in order when it is complete, else None."""
        seq = self.next_seq
        if seq is None:
            return None
        p = self._partial.get(seq)
        if p is None or not p.complete():
            return None
        del self._partial[seq]
        self.next_seq = seq + 1
        return p.msg_type, seq, bytes(p.body), p.epoch


# One outgoing flight item: (content_type, epoch, payload) where the payload of
# a handshake item is (msg_type, message_seq, body) and of others raw bytes.
FlightItem = tuple[int, int, object]
# One record of a laid-out flight: (content_type, epoch, plaintext).
PlainRecord = tuple[int, int, bytes]

MIN_FRAGMENT = 64  # start a new datagram rather than send a smaller fragment


def record_overhead(epoch: int) -> int:
    """Bytes a record adds around its plaintext at ``epoch``."""
    return HEADER_LENGTH + (AEAD_OVERHEAD if epoch else 0)


def layout_flight(items: list[FlightItem], mtu: int) -> list[list[PlainRecord]]:
    """Cut a flight into records (fragmenting handshake messages) packed into
    datagrams of at most ``mtu`` bytes once sealed."""
    datagrams: list[list[PlainRecord]] = []
    current: list[PlainRecord] = []
    room = mtu

    def flush() -> None:
        nonlocal current, room
        if current:
            datagrams.append(current)
        current, room = [], mtu

    for ctype, epoch, payload in items:
        overhead = record_overhead(epoch)
        if ctype != HANDSHAKE:
            assert isinstance(payload, bytes)
            if overhead + len(payload) > room:
                flush()
            current.append((ctype, epoch, payload))
            room -= overhead + len(payload)
            continue
        msg_type, seq, body = payload  # type: ignore[misc]
        length = len(body)
        offset = 0
        while True:
            avail = room - overhead - HANDSHAKE_HEADER_LENGTH
            left = length - offset
            if left <= avail:
                n = left
            elif avail < min(MIN_FRAGMENT, left) and current:
                flush()
                continue
            else:
                n = max(avail, 1)  # an absurdly small mtu still makes progress
            frag = encode_header(msg_type, length, seq, offset, n) + body[offset : offset + n]
            current.append((HANDSHAKE, epoch, frag))
            room -= overhead + len(frag)
            offset += n
            if offset >= length:
                break
            flush()
    flush()
    return datagrams
