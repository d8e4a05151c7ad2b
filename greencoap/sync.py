"""Synchronisation primitives for greenlets: Event, AsyncResult, Queue (layer 3).

All of them park waiting greenlets on the hub (never the OS thread) and take
a ``timeout`` on every blocking call.  They are for greenlets of one hub; to
hand work in from another OS thread use ``get_hub().run_callback_threadsafe``.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from .hub import _UNSET, Waiter, _make_timeout, get_hub

__all__ = ["Event", "AsyncResult", "Queue", "Empty", "Full"]


class Event:
    """A flag greenlets can wait for; ``set()`` wakes all of them."""

    def __init__(self) -> None:
        self._flag = False
        self._waiters: list[Waiter] = []

    def is_set(self) -> bool:
        return self._flag

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

    def get(self, timeout: float | None = None) -> Any:
        """Return the value or raise the exception; a timeout error if not ready in time."""
        if not self._event.wait(timeout):
            raise _make_timeout(timeout)
        if self.exception is not None:
            raise self.exception
        return self.value


class Empty(Exception):
    """``Queue.get`` found nothing within its timeout (or ``block=False``)."""


class Full(Exception):
    """``Queue.put`` found no room within its timeout (or ``block=False``)."""


class Queue:
    """A FIFO between greenlets; ``maxsize=0`` means unbounded."""

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
        while self.full():
            if not block:
                raise Full
            w = Waiter(get_hub())
            self._putters.append(w)
            try:
                if w.get(timeout) is _UNSET:
                    raise Full
            finally:
                if w in self._putters:
                    self._putters.remove(w)
        self._items.append(item)
        self._wake(self._getters)

    def put_nowait(self, item: Any) -> None:
        self.put(item, block=False)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Pop the oldest item; when empty, park until one comes (or raise :class:`Empty`)."""
        while not self._items:
            if not block:
                raise Empty
            w = Waiter(get_hub())
            self._getters.append(w)
            try:
                if w.get(timeout) is _UNSET:
                    raise Empty
            finally:
                if w in self._getters:
                    self._getters.remove(w)
        item = self._items.popleft()
        self._wake(self._putters)
        return item

    def get_nowait(self) -> Any:
        return self.get(block=False)

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
