"""Synchronisation primitives for greenlets: Event, AsyncResult, Queue (layer 3).

All of them park waiting greenlets on the hub (never the OS thread) and take
a ``timeout`` on every blocking call.  They are for greenlets of one hub; to
hand work in from another OS thread use ``get_hub().run_callback_threadsafe``.
"""

from __future__ import annotations

import queue as _stdlib_queue
from collections import deque
from time import monotonic
from typing import Any

from .hub import Timeout, Waiter, get_hub

__all__ = ["Event", "AsyncResult", "Queue", "Empty", "Full"]


class Event:
    """A flag greenlets can wait for; ``set()`` wakes all of them."""

    def __init__(self) -> None:
        self._flag = False
        self._waiters: list[Waiter] = []

    def is_set(self) -> bool:
        return self._flag

    ready = is_set

    def set(self) -> None:
        """Set the flag and wake every waiting greenlet."""
        self._flag = True
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            w.hub.run_callback(w.switch, True)

    def clear(self) -> None:
        self._flag = False

    def wait(self, timeout: float | None = None) -> bool:
        """Park until set; return the flag (False when ``timeout`` expired)."""
        if self._flag:
            return True
        w = Waiter(get_hub())
        self._waiters.append(w)
        try:
            w.get(timeout)
        finally:
            if w in self._waiters:
                self._waiters.remove(w)
        return self._flag

    def statistics(self) -> dict:
        return {"set": self._flag, "waiters": len(self._waiters)}


class AsyncResult:
    """A value or exception delivered once, waited for by any number of greenlets."""

    def __init__(self) -> None:
        self._event = Event()
        self.value: Any = None
        self.exception: BaseException | None = None

    def ready(self) -> bool:
        return self._event.is_set()

    def set(self, value: Any = None) -> None:
        self.value = value
        self._event.set()

    def set_exception(self, exc: BaseException) -> None:
        self.exception = exc
        self._event.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)

    def successful(self) -> bool:
        """True when a value (not an exception) was set."""
        return self._event.is_set() and self.exception is None

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Return the value or raise the exception; raises :class:`Timeout`
        when nothing was set within ``timeout`` seconds (``block=False``: at
        once), as gevent's does."""
        if not self._event.wait(timeout if block else 0.0):
            raise Timeout(timeout if block else 0.0)
        if self.exception is not None:
            raise self.exception
        return self.value


def _discard(waiters: deque, w: Waiter) -> bool:
    """Take ``w`` out of ``waiters``; False when it was not there (it was woken)."""
    try:
        waiters.remove(w)
    except ValueError:
        return False
    return True


class Empty(_stdlib_queue.Empty):
    """``Queue.get`` found nothing within its timeout (or ``block=False``).

    A subclass of the standard library's ``queue.Empty``, which is what
    gevent raises too."""


class Full(_stdlib_queue.Full):
    """``Queue.put`` found no room within its timeout (or ``block=False``)."""


class Queue:
    """A FIFO between greenlets; ``maxsize=0`` means unbounded.

    ``timeout`` bounds the whole wait of a ``get``/``put``, however many
    times it is woken.  A waiter that was woken for an item (or for room) but
    gave up before it ran (its timeout fired, it was killed) passes the
    wake-up on to the next waiter, so an item never sits in the queue while a
    getter waits for it.
    """

    def __init__(self, maxsize: int = 0) -> None:
        self.maxsize = maxsize
        self._items: deque = deque()
        self._getters: deque[Waiter] = deque()
        self._putters: deque[Waiter] = deque()

    def qsize(self) -> int:
        return len(self._items)

    __len__ = qsize

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return self.maxsize > 0 and len(self._items) >= self.maxsize

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Append ``item``; when full, park until room (or raise :class:`Full`)."""
        if self.full():
            if not block:
                raise Full
            self._wait(self._putters, self.full, timeout, Full)
        self._items.append(item)
        self._wake(self._getters)

    def put_nowait(self, item: Any) -> None:
        self.put(item, block=False)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Pop the oldest item; when empty, park until one comes (or raise :class:`Empty`)."""
        if not self._items:
            if not block:
                raise Empty
            self._wait(self._getters, self.empty, timeout, Empty)
        item = self._items.popleft()
        self._wake(self._putters)
        return item

    def get_nowait(self) -> Any:
        return self.get(block=False)

    def peek(self, block: bool = True, timeout: float | None = None) -> Any:
        """The oldest item without removing it (waits like :meth:`get`)."""
        if not self._items:
            if not block:
                raise Empty
            self._wait(self._getters, self.empty, timeout, Empty)
            self._wake(self._getters)  # the item is still there for the next getter
        return self._items[0]

    def _wait(self, waiters: deque, blocked: Any, timeout: float | None, error: type) -> None:
        """Park in ``waiters`` until ``blocked()`` is false; ``error`` when
        ``timeout`` seconds (in all) pass first."""
        hub = get_hub()
        deadline = None if timeout is None else monotonic() + timeout
        while blocked():
            left = None
            if deadline is not None:
                left = deadline - monotonic()
                if left <= 0:
                    raise error
            w = Waiter(hub)
            waiters.append(w)
            try:
                w.get(left)
            except BaseException:
                # killed, or an outer Timeout: if it had been chosen (woken),
                # what it was woken for passes to the next one in line
                if not _discard(waiters, w) and not blocked():
                    self._wake(waiters)
                raise
            _discard(waiters, w)  # its own timeout fired while it was still queued

    @staticmethod
    def _wake(waiters: deque) -> None:
        if waiters:
            w = waiters.popleft()
            w.hub.run_callback(w.switch, True)

    def statistics(self) -> dict:
        return {
            "size": len(self._items),
            "getters": len(self._getters),
            "putters": len(self._putters),
        }
