"""When the DTLS sessions of one socket need their timers (layer 2).

A :class:`SessionSchedule` keeps the sessions' deadlines (retransmission,
idle expiry, a retained final flight) in a heap with lazy invalidation, for
both roles: the server's session table and a client channel's sessions, one
per server it talks to.  A session is pushed only when its deadline moves
earlier than the one it is scheduled for, so the application-data hot path,
which only moves the idle deadline later, costs no heap operation, and
neither the next deadline nor the due sessions are found by walking all
sessions.  An entry is stale when its session has left the table or was
pushed again since; stale entries are dropped as they surface.  Not
thread-safe: it belongs to the engine or channel that owns the table.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator, Mapping
from typing import Any

from .session import DtlsSession


class SessionSchedule:
    """The deadlines of the sessions in ``sessions`` (peer → session)."""

    def __init__(self, sessions: Mapping[Any, DtlsSession]) -> None:
        self.sessions = sessions
        self._heap: list[tuple[float, int, Any, DtlsSession]] = []
        self._tiebreak = itertools.count()

    def __len__(self) -> int:
        """Heap entries, stale ones included (a table size for ``stats``)."""
        return len(self._heap)

    def update(self, session: DtlsSession, peer: Any) -> None:
        """After ``session`` (of ``peer``) ran: schedule it if its deadline
        is now earlier than the one it is scheduled for (or it had none)."""
        deadline = session.next_deadline()
        if deadline is not None:
            scheduled = session._sched
            if scheduled is None or deadline < scheduled:
                session._sched = deadline
                heapq.heappush(self._heap, (deadline, next(self._tiebreak), peer, session))

    def due(self, now: float) -> Iterator[tuple[Any, DtlsSession]]:
        """``(peer, session)`` for each session scheduled at or before ``now``,
        earliest first, each unscheduled as it is handed out (the caller runs
        its ``expire`` and then :meth:`update`; a session whose deadline moved
        later since it was scheduled comes out early: its ``expire`` does
        nothing but the update reschedules it)."""
        heap = self._heap
        sessions = self.sessions
        while heap and heap[0][0] <= now:
            deadline, _, peer, session = heapq.heappop(heap)
            if sessions.get(peer) is not session or session._sched != deadline:
                continue  # stale
            session._sched = None
            yield peer, session

    def next_deadline(self) -> float | None:
        """When the earliest session is due, or None.  It may be early (see
        :meth:`due`); it is never late."""
        heap = self._heap
        sessions = self.sessions
        while heap:
            deadline, _, peer, session = heap[0]
            if sessions.get(peer) is session and session._sched == deadline:
                return deadline
            heapq.heappop(heap)
        return None


__all__ = ["SessionSchedule"]
