"""Observe (RFC 7641), client side: the notification freshness rule (layer 2).

§3.4: a notification is newer than the last one accepted when its Observe
sequence number is ahead in 24-bit serial-number arithmetic, or when more
than 128 seconds have passed since the last one (the numbers may have
wrapped or the server rebooted).  Older, reordered notifications are dropped.
The engine only keeps the registration's exchange alive; this filter runs
where the notifications are consumed.
"""

from __future__ import annotations

__all__ = ["FreshnessFilter", "is_fresh"]

_HALF = 1 << 23
_STALE_AFTER = 128.0


def is_fresh(v1: int, t1: float, v2: int, t2: float) -> bool:
    """Is notification (V2 at T2) newer than the last accepted one (V1 at T1)? §3.4."""
    return (v1 < v2 and v2 - v1 < _HALF) or (v1 > v2 and v1 - v2 > _HALF) or t2 > t1 + _STALE_AFTER


class FreshnessFilter:
    """Remembers the last accepted Observe value per observation; drops stale ones."""

    __slots__ = ("last_seq", "last_time", "dropped")

    def __init__(self) -> None:
        self.last_seq: int | None = None
        self.last_time = 0.0
        self.dropped = 0

    def accept(self, seq: int | None, now: float) -> bool:
        """True if a notification with Observe value ``seq`` received at ``now`` is fresh."""
        if seq is None:
            return True  # a final response (no Observe option) always counts
        if self.last_seq is not None and not is_fresh(self.last_seq, self.last_time, seq, now):
            self.dropped += 1
            return False
        self.last_seq = seq
        self.last_time = now
        return True
