"""The greenlet hub: run loop, timers, parking and greenlets (layer 3).

Theory of operation
-------------------
Each OS thread has at most one :class:`Hub`.  The hub is a greenlet whose
``run`` is the event loop; user code runs in other greenlets (the thread's
main greenlet included).  A greenlet that must wait *parks*: it records how it
wants to be resumed (a :class:`Waiter`) and switches to the hub.  Only the hub
resumes parked greenlets, from one of three places:

* the callback queue (``run_callback``) — work scheduled for "soon";
* the timer heap (``call_later`` / ``call_at``) — deadlines, timeouts, sleeps;
* the I/O backend — received datagrams are delivered in batches to the
  endpoint that owns the socket, which resumes whichever greenlet waits.

One loop turn: run the callbacks, fire the expired timers, then let the
backend flush queued sends and wait for I/O until the next timer is due.  The
backend is chosen once per hub (io_uring, epoll, or gevent's own loop) and is
named by ``get_hub().backend``.

Timeouts follow gevent: a :class:`Timeout` is a ``BaseException`` thrown into
the parked greenlet and matched by identity, so a nested timeout never catches
an outer one; ``timeout=None`` costs nothing.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import sys
import threading
import traceback
from collections import deque
from collections.abc import Callable, Iterable
from functools import partial
from time import monotonic
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .backends import IoBackend

import greenlet as _greenlet_mod

getcurrent = _greenlet_mod.getcurrent
RawGreenlet = _greenlet_mod.greenlet
GreenletExit = _greenlet_mod.GreenletExit

__all__ = [
    "Hub",
    "get_hub",
    "Greenlet",
    "GreenletExit",
    "spawn",
    "sleep",
    "joinall",
    "Timeout",
    "Waiter",
    "LoopExit",
    "BlockingSwitchOutError",
]


_log = logging.getLogger("greencoap.hub")

#: Exceptions that are not errors but requests to stop: wherever they land
#: (a worker, an observer's greenlet, a backend's dispatch) they are thrown
#: into the thread's main greenlet, as gevent does.
SYSTEM_ERRORS = (KeyboardInterrupt, SystemExit)
#: :meth:`HubBase.handle_error` logs at most this many tracebacks ...
ERROR_LOG_BURST = 10
#: ... per this many seconds (the others are counted, not printed).
ERROR_LOG_WINDOW = 10.0


class LogThrottle:
    """At most ``burst`` log records per ``window`` seconds; the others are
    counted and mentioned by the next record let through.  For errors that
    input can trigger at will (a handler failing on every request of a
    flood): the log stays readable and cheap."""

    __slots__ = ("burst", "window", "_window_end", "_logged", "_suppressed")

    def __init__(self, burst: int = ERROR_LOG_BURST, window: float = ERROR_LOG_WINDOW) -> None:
        self.burst = burst
        self.window = window
        self._window_end = 0.0
        self._logged = 0
        self._suppressed = 0

    def allow(self, now: float) -> str | None:
        """None when this record is to be dropped; else a note to append to
        it (``""``, or how many were dropped before it)."""
        if now >= self._window_end:
            self._window_end = now + self.window
            self._logged = 0
        if self._logged >= self.burst:
            self._suppressed += 1
            return None
        self._logged += 1
        more, self._suppressed = self._suppressed, 0
        return f" ({more} similar errors not shown)" if more else ""


def _describe(where: Any) -> str:
    """A short name for the place an error was caught (a function, usually)."""
    name = getattr(where, "__qualname__", None)
    if name is None:
        return repr(where)
    owner = getattr(where, "__self__", None)
    return f"{name} of {owner!r}" if owner is not None else name


def raise_in_main(hub: Any, exc: BaseException) -> None:
    """Deliver ``exc`` (a signal's KeyboardInterrupt, a SystemExit) to the main
    greenlet of ``hub``'s thread, from wherever it was caught."""
    main = hub.greenlet.parent
    if main is None or getcurrent() is main:
        raise exc
    main.throw(exc)


class LoopExit(Exception):
    """Raised in a parked greenlet when nothing could ever wake it (a deadlock)."""


class BlockingSwitchOutError(RuntimeError):
    """A blocking call was made from the hub itself (e.g. inside a timer callback)."""


_UNSET = object()


class Timer:
    """A scheduled callback; ``cancel()`` makes it a no-op (lazy heap removal).

    The hub's heap holds ``(deadline, seq, timer)`` tuples, so that ordering
    is tuple comparison in C (``seq`` is unique: timers are never compared).
    """

    __slots__ = ("deadline", "seq", "callback", "args", "cancelled")

    def __init__(self, deadline: float, seq: int, callback: Callable, args: tuple) -> None:
        self.deadline = deadline
        self.seq = seq
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        """Prevent the callback from running; safe to call more than once."""
        self.cancelled = True
        self.callback = None  # drop references early
        self.args = ()


class DeadlineTimer:
    """One hub timer following an engine's next deadline.

    :meth:`arm` only ever moves it earlier (a later deadline is left to the
    callback, which re-arms for whatever is due next); when it fires,
    ``callback()`` runs in the hub.
    """

    __slots__ = ("hub", "callback", "at", "_timer")

    def __init__(self, hub: Any, callback: Callable[[], None]) -> None:
        self.hub = hub
        self.callback = callback
        self.at = float("inf")  # when it fires next (inf: not armed)
        self._timer: Any = None

    def arm(self, deadline: float) -> None:
        """Fire at ``deadline`` if that is earlier than the current one."""
        if deadline < self.at:
            if self._timer is not None:
                self._timer.cancel()
            self.at = deadline
            self._timer = self.hub.call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self.at = float("inf")
        self.callback()

    def cancel(self) -> None:
        """Disarm."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.at = float("inf")


class HubBase:
    """What every hub offers, whichever loop runs underneath.

    ``greenlet`` is the greenlet that runs the loop: parked greenlets switch
    to it, and only code running in it resumes them.  Subclasses provide
    ``run_callback``, ``run_callback_threadsafe``, ``call_later``, ``call_at``
    and ``io`` (the datagram backend).
    """

    greenlet: Any
    backend: str
    io: Any

    def _init_common(self) -> None:
        self.thread_ident = os_thread_ident()
        self._thread_jobs = 0
        self._executor = None
        self._workers: list = []
        self.closed = False
        #: users that keep the hub alive with nothing scheduled (a hub thread
        #: waiting for calls from other threads): no LoopExit while non-zero
        self.keepalive = 0
        #: exceptions caught by :meth:`handle_error` (each one a bug somewhere)
        self.errors = 0
        self.last_error: BaseException | None = None
        self._error_log = LogThrottle()

    now = staticmethod(monotonic)

    def switch_out(self) -> Any:
        """Park the current greenlet until the hub resumes it; return the value."""
        if getcurrent() is self.greenlet:
            raise BlockingSwitchOutError("cannot block inside the hub (timer or I/O callback)")
        return self.greenlet.switch()

    # -- threads -------------------------------------------------------
    def run_in_thread(
        self, fn: Callable, *args: Any, timeout: float | None = None, executor: Any = None
    ) -> Any:
        """Run a blocking ``fn(*args)`` in a worker OS thread; park until it returns.

        Used for things that have no non-blocking form, such as
        ``getaddrinfo``: the hub keeps serving other greenlets meanwhile.
        Raises :class:`Timeout` when ``timeout`` seconds pass first (the
        thread's work is not interrupted; its result is dropped).  ``executor``
        (a ``concurrent.futures`` executor) runs it instead of the hub's own
        pool of 4 threads.
        """
        if executor is None:
            if self._executor is None:
                from concurrent.futures import ThreadPoolExecutor

                self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="greencoap")
            executor = self._executor
        waiter = Waiter(self)
        self._thread_jobs += 1

        def done(fut):
            self.run_callback_threadsafe(_thread_done, self, waiter, fut)

        executor.submit(fn, *args).add_done_callback(done)
        result = waiter.get(timeout)
        if result is _UNSET:
            raise Timeout(timeout)
        exc = result.exception()
        if exc is not None:
            raise exc
        return result.result()

    def call_from_thread(self, fn: Callable, *args: Any, timeout: float | None = None) -> Any:
        """Run ``fn(*args)`` in a new greenlet of this hub, from another OS
        thread, and block that thread (only) until it returns or raises; the
        result or exception is the caller's.  Called from this hub's own
        thread it simply calls ``fn``.  ``timeout`` bounds the wait
        (:class:`Timeout`: e.g. the hub's thread is not running its hub);
        ``fn`` keeps its own timeouts.  This is how greencoap objects bound
        to one hub (a client's sockets, an observation) serve every thread.
        """
        if os_thread_ident() == self.thread_ident:
            return fn(*args)
        out = _Outcome()

        def run() -> None:
            try:
                out.value = fn(*args)
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                out.error = e
            finally:
                out.lock.release()

        self.run_callback_threadsafe(spawn, run)
        if not out.lock.acquire(timeout=-1 if timeout is None else timeout):
            raise Timeout(timeout)
        if out.error is not None:
            raise out.error
        return out.value

    # -- worker pool ---------------------------------------------------
    def run_in_worker(self, fn: Callable, *args: Any) -> None:
        """Run ``fn(*args)`` on a parked, reusable worker greenlet.

        This is the hot-path alternative to :func:`spawn`: no greenlet is
        created per call once the pool is warm.  Exceptions are reported (not
        swallowed) and the worker goes back to the pool.  Called from the hub
        (typically from an I/O callback); called from any other greenlet it is
        deferred to the hub's next turn (a worker returns to the hub, never
        to its caller).
        """
        if getcurrent() is not self.greenlet:
            self.run_callback(self.run_in_worker, fn, *args)
            return
        workers = self._workers
        w = workers.pop() if workers else RawGreenlet(partial(_worker_loop, self), self.greenlet)
        w.switch(fn, args)

    def handle_error(self, where: Any, exc: BaseException | None = None) -> None:
        """Report an exception caught in the hub (a callback, a timer, a
        backend's dispatch, an endpoint's receive path); never fatal.

        ``KeyboardInterrupt`` and ``SystemExit`` are not errors: they are
        thrown into the thread's main greenlet, wherever they landed.  Any
        other exception is counted in :attr:`errors` and logged on the
        ``greencoap.hub`` logger with its traceback, at most
        :data:`ERROR_LOG_BURST` tracebacks per :data:`ERROR_LOG_WINDOW`
        seconds (the rest are counted and summarised in the next message), so
        that a bug hit by every datagram of a flood cannot flood the log.
        """
        if exc is None:
            exc = sys.exc_info()[1]
        if isinstance(exc, SYSTEM_ERRORS):
            raise_in_main(self, exc)
            return
        self.errors += 1
        self.last_error = exc
        note = self._error_log.allow(monotonic())
        if note is None:
            return
        _log.error(
            "greencoap hub: error in %s%s",
            _describe(where),
            note,
            exc_info=(type(exc), exc, exc.__traceback__),
        )

    def destroy(self) -> None:
        """Close the backend and forget this hub (the thread may create a new one)."""
        if self.closed:
            return
        self.closed = True
        self.io.close()
        if self._executor is not None:
            self._executor.shutdown(wait=False)
        if getattr(_local, "hub", None) is self:
            _local.hub = None


#: How long the main thread's hub may block before it looks for signals again.
SIGNAL_CHECK_INTERVAL = 1.0


class Hub(RawGreenlet, HubBase):
    """The native per-thread event loop greenlet.

    ``backend`` is the name of the I/O backend (``"uring"`` or ``"epoll"``);
    ``io`` is the backend object itself.
    """

    def __init__(self, backend: str | None = None) -> None:
        root = getcurrent()
        while root.parent is not None:
            root = root.parent
        super().__init__(parent=root)
        self.greenlet = self
        self._init_common()
        self._callbacks: deque = deque()
        self._timers: list[tuple[float, int, Timer]] = []
        self._timer_seq = 0
        self._threadsafe: deque = deque()
        self._threadsafe_lock = os_lock()
        from .backends import create_backend  # backends sit beside the hub

        self.io: IoBackend = create_backend(self, backend)
        self.backend: str = self.io.name
        #: the main thread never waits longer than this: a signal that lands
        #: just before the backend blocks (after Python last checked for one)
        #: has its handler run within this bound, not at the next far timer
        self.max_wait: float | None = (
            SIGNAL_CHECK_INTERVAL if threading.current_thread() is threading.main_thread() else None
        )

    # -- scheduling ----------------------------------------------------
    def run_callback(self, fn: Callable, *args: Any) -> None:
        """Run ``fn(*args)`` in the hub on its next turn (hub thread only)."""
        self._callbacks.append((fn, args))

    def run_callback_threadsafe(self, fn: Callable, *args: Any) -> None:
        """Hand ``fn(*args)`` to the hub from any OS thread and wake it."""
        with self._threadsafe_lock:
            self._threadsafe.append((fn, args))
        self.io.wakeup()

    def call_at(self, deadline: float, fn: Callable, *args: Any) -> Timer:
        """Run ``fn(*args)`` in the hub at monotonic time ``deadline``."""
        seq = self._timer_seq = self._timer_seq + 1
        t = Timer(deadline, seq, fn, args)
        heapq.heappush(self._timers, (deadline, seq, t))
        return t

    def call_later(self, delay: float, fn: Callable, *args: Any) -> Timer:
        """Run ``fn(*args)`` in the hub after ``delay`` seconds."""
        seq = self._timer_seq = self._timer_seq + 1
        deadline = monotonic() + delay
        t = Timer(deadline, seq, fn, args)
        heapq.heappush(self._timers, (deadline, seq, t))
        return t

    # -- the loop ------------------------------------------------------
    def run(self) -> None:  # the hub greenlet's body
        while True:
            try:
                self._loop()
            except (KeyboardInterrupt, SystemExit) as e:
                # a signal arrived while the hub ran: deliver it to the main greenlet
                self.parent.throw(e)

    def _loop(self) -> None:
        callbacks = self._callbacks
        timers = self._timers
        io = self.io
        heappop = heapq.heappop
        while True:
            if self._threadsafe:
                with self._threadsafe_lock:
                    callbacks.extend(self._threadsafe)
                    self._threadsafe.clear()
            n = len(callbacks)
            while n:
                n -= 1
                fn, args = callbacks.popleft()
                try:
                    fn(*args)
                except BaseException:  # noqa: BLE001 - report, keep the loop alive
                    self.handle_error(fn)
            if timers:
                now = monotonic()
                while timers and timers[0][0] <= now:
                    t = heappop(timers)[2]
                    if t.cancelled:
                        continue
                    fn, args = t.callback, t.args
                    t.cancelled = True
                    try:
                        fn(*args)
                    except BaseException:  # noqa: BLE001
                        self.handle_error(fn)
                while timers and timers[0][2].cancelled:
                    heappop(timers)
            if callbacks or self._threadsafe:
                timeout = 0.0
            elif timers:
                timeout = max(0.0, timers[0][0] - monotonic())
            elif io.has_work() or self._thread_jobs or self.keepalive:
                timeout = None
            else:
                # Nothing can ever wake the greenlet that switched to us.
                self.parent.throw(LoopExit("no greenlet, timer or socket can wake this wait"))
                continue
            cap = self.max_wait
            if cap is not None and (timeout is None or timeout > cap):
                timeout = cap
            try:
                io.poll(timeout)
            except Exception:  # noqa: BLE001 - report, keep the loop alive
                self.handle_error(io.poll)


def _thread_done(hub: HubBase, waiter: Waiter, fut: Any) -> None:
    hub._thread_jobs -= 1
    waiter.switch(fut)


def _worker_loop(hub: HubBase, fn: Callable, args: tuple) -> None:
    workers = hub._workers
    me = getcurrent()
    while True:
        try:
            fn(*args)
        except GreenletExit:
            pass
        except BaseException:  # noqa: BLE001 - report, keep the worker
            hub.handle_error(fn)
        fn = args = None
        if len(workers) < 4096:
            workers.append(me)
            fn, args = hub.greenlet.switch()
        else:
            return


def os_thread_local() -> Any:
    """A thread-local that is per OS thread even after gevent monkey-patching."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("threading"):
        return monkey.get_original("_thread", "_local")()
    return threading.local()


def os_lock() -> Any:
    """A lock between OS threads even after gevent monkey-patching."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("threading"):
        return monkey.get_original("_thread", "allocate_lock")()
    return threading.Lock()


_thread_numbers = itertools.count(1)
_thread_number = os_thread_local()


def os_thread_ident() -> int:
    """A number for the calling OS thread, never given to another thread of
    this process (the OS reuses a dead thread's ``get_ident()`` for the next
    one: a client made in a thread that exited would take a new thread for
    its home), the same after gevent monkey-patching (which makes
    ``threading.get_ident`` name the greenlet)."""
    try:
        return _thread_number.n
    except AttributeError:
        n = _thread_number.n = next(_thread_numbers)
        return n


def _start_os_thread(fn: Callable, *args: Any) -> None:
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("_thread"):
        monkey.get_original("_thread", "start_new_thread")(fn, args)
    else:
        import _thread

        _thread.start_new_thread(fn, args)


class _Outcome:
    """A result handed from a hub's greenlet to a waiting OS thread."""

    __slots__ = ("lock", "value", "error")

    def __init__(self) -> None:
        self.lock = os_lock()
        self.lock.acquire()
        self.value: Any = None
        self.error: BaseException | None = None


class HubThread:
    """A hub running in an OS thread of its own, for calls from other threads.

    Legacy code calls greencoap from OS threads that never run a hub (web
    handlers, worker pools): their calls are carried out here, on this
    thread's hub, by :meth:`call`, which blocks only the calling thread.
    The thread is a daemon (interpreter exit never waits for it) and ends
    with :meth:`stop`.  May be used from any thread.
    """

    def __init__(self, name: str = "greencoap-hub") -> None:
        self.name = name
        self.hub: Any = None
        self.ident = 0
        self._stopping: Any = None
        started = _Outcome()
        _start_os_thread(self._main, started)
        started.lock.acquire()  # the hub exists and waits for calls
        if started.error is not None:
            raise started.error

    def _main(self, started: _Outcome) -> None:
        from .sync import Event  # beside the hub, imported when first used

        try:
            self.hub = hub = get_hub()
            self.ident = os_thread_ident()
            self._stopping = Event()
            hub.keepalive += 1
        except BaseException as e:  # noqa: BLE001 - reported to the starting thread
            started.error = e
            started.lock.release()
            return
        started.lock.release()
        try:
            self._stopping.wait()
        finally:
            hub.keepalive -= 1
            hub.destroy()

    def call(self, fn: Callable, *args: Any, timeout: float | None = None) -> Any:
        """Run ``fn(*args)`` on this thread's hub (see :meth:`HubBase.call_from_thread`)."""
        if self.hub is None or self.hub.closed:
            from .errors import ClientClosedError

            raise ClientClosedError(f"the hub thread {self.name} has stopped")
        return self.hub.call_from_thread(fn, *args, timeout=timeout)

    def stop(self) -> None:
        """End the thread (its hub is destroyed); safe to call more than once."""
        hub, stopping = self.hub, self._stopping
        if hub is not None and not hub.closed and stopping is not None:
            hub.run_callback_threadsafe(stopping.set)


_shared: HubThread | None = None
_shared_users = 0
_shared_lock = os_lock()


def acquire_hub_thread() -> HubThread:
    """The process's shared :class:`HubThread`, started on first use; each
    caller holds it until :func:`release_hub_thread`."""
    global _shared, _shared_users
    with _shared_lock:
        if _shared is None or _shared.hub is None or _shared.hub.closed:
            _shared = HubThread("greencoap-hub")
        _shared_users += 1
        return _shared


def release_hub_thread(thread: HubThread) -> None:
    """One user less of the shared hub thread; the last one stops it."""
    global _shared, _shared_users
    with _shared_lock:
        if thread is not _shared:
            thread.stop()
            return
        _shared_users -= 1
        if _shared_users <= 0:
            _shared_users = 0
            _shared = None
            thread.stop()


_local = os_thread_local()


def get_hub(backend: str | None = None) -> HubBase:
    """Return this thread's hub, creating it on first use.

    The backend is chosen by ``backend``, else ``$GREENCOAP_HUB``
    (``uring|epoll|gevent``), else automatically: gevent's when gevent's hub
    runs in this thread, else io_uring when usable, else epoll.
    """
    hub = getattr(_local, "hub", None)
    if hub is None or hub.closed:
        if backend is None:
            backend = os.environ.get("GREENCOAP_HUB") or None
        hub = _local.hub = _create_hub(backend)
    return hub


def _create_hub(backend: str | None) -> Any:
    from .backends import wants_gevent

    if wants_gevent(backend):
        from .gevent_hub import GeventHub

        return GeventHub()
    return Hub(backend)


class Waiter:
    """One-shot parking spot for a single greenlet.

    ``get(timeout)`` parks the calling greenlet; ``switch(value)`` or
    ``throw(exc)`` (from the hub, or any greenlet: it is then scheduled)
    resumes it.  A value that arrives before ``get`` is kept.  ``get`` returns
    the module's ``_UNSET`` sentinel when its timeout expires.
    """

    __slots__ = ("hub", "greenlet", "value", "exc")

    def __init__(self, hub: Any = None) -> None:
        self.hub = hub or get_hub()
        self.greenlet = None
        self.value = _UNSET
        self.exc = None

    def switch(self, value: Any = None) -> None:
        """Deliver ``value`` to the waiting greenlet (or keep it for later)."""
        g = self.greenlet
        if g is None:
            if self.value is _UNSET and self.exc is None:
                self.value = value
            return
        if getcurrent() is not self.hub.greenlet:
            self.hub.run_callback(self.switch, value)
            return
        self.greenlet = None
        g.switch(value)

    def throw(self, exc: BaseException) -> None:
        """Raise ``exc`` in the waiting greenlet (or keep it for ``get``)."""
        g = self.greenlet
        if g is None:
            if self.value is _UNSET and self.exc is None:
                self.exc = exc
            return
        if getcurrent() is not self.hub.greenlet:
            self.hub.run_callback(self.throw, exc)
            return
        self.greenlet = None
        g.throw(exc)

    @property
    def ready(self) -> bool:
        return self.value is not _UNSET or self.exc is not None

    def get(self, timeout: float | None = None) -> Any:
        """Park until a value arrives; ``_UNSET`` on timeout."""
        if self.value is not _UNSET:
            return self.value
        if self.exc is not None:
            raise self.exc
        hub = self.hub
        self.greenlet = getcurrent()
        timer = None if timeout is None else hub.call_later(timeout, self._expire)
        try:
            return hub.switch_out()
        finally:
            self.greenlet = None
            if timer is not None:
                timer.cancel()

    def _expire(self) -> None:
        g = self.greenlet
        if g is not None:
            self.greenlet = None
            g.switch(_UNSET)


class Timeout(BaseException):
    """Raise in the current greenlet if a block takes longer than ``seconds``.

    ``with Timeout(2): ...`` raises this very ``Timeout`` instance after 2 s;
    ``Timeout(2, SomeError("..."))`` raises that exception instead, and
    ``Timeout(2, False)`` silently leaves the block.  ``seconds=None`` never
    fires and costs nothing.  Matched by identity: an outer timeout is never
    caught by an inner ``except Timeout`` that checks ``is``.
    """

    def __init__(self, seconds: float | None = None, exception: Any = None) -> None:
        super().__init__(seconds)
        self.seconds = seconds
        self.exception = exception
        self._timer = None
        self._greenlet = None

    @classmethod
    def start_new(cls, seconds: float | None = None, exception: Any = None) -> Timeout:
        """Create a timeout and arm it at once (as gevent's)."""
        return cls(seconds, exception).start()

    def start(self) -> Timeout:
        """Arm the timer for the current greenlet."""
        if self.seconds is not None:
            self._greenlet = getcurrent()
            self._timer = get_hub().call_later(self.seconds, self._fire)
        return self

    def _fire(self) -> None:
        g = self._greenlet
        self._timer = None
        if g is None or g.dead:
            return
        exc = self if self.exception in (None, False) else self.exception
        g.throw(exc)

    @property
    def pending(self) -> bool:
        return self._timer is not None

    def cancel(self) -> None:
        """Disarm the timer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._greenlet = None

    close = cancel

    def __enter__(self) -> Timeout:
        return self.start()

    def __exit__(self, typ, value, tb) -> bool:  # noqa: ANN001
        self.cancel()
        return value is self and self.exception is False

    def __str__(self) -> str:
        return f"{self.seconds} seconds" if self.seconds is not None else "Timeout"


class Greenlet(RawGreenlet):
    """A greenlet with a result: ``join``, ``get``, ``kill``, ``link``.

    Created by :func:`spawn`.  ``value`` holds the return value and
    ``exception`` the exception it died with (None while running or on
    success).  An exception that nothing asked for (no ``get``, ``join`` or
    link) is printed with its traceback, never swallowed silently.
    """

    def __init__(self, run: Callable, *args: Any, **kwargs: Any) -> None:
        hub = get_hub()
        super().__init__(parent=hub.greenlet)
        self._hub = hub
        self._func = run
        self._args = args
        self._kwargs = kwargs
        self.value: Any = None
        self.exception: BaseException | None = None
        self._links: list = []
        self._done = False
        self._started = False

    def start(self) -> None:
        """Schedule the greenlet to run on the hub's next turn."""
        if not self._started:
            self._started = True
            self._hub.run_callback(self._start)

    def _start(self) -> None:
        if not self._done:
            self.switch()

    def run(self) -> None:  # noqa: D102 - greenlet entry
        try:
            self.value = self._func(*self._args, **self._kwargs)
        except GreenletExit as e:
            self.value = e
        except SYSTEM_ERRORS as e:
            # a signal (Ctrl-C) or sys.exit() that landed while this greenlet
            # ran is the program's, not this greenlet's: it goes on to the
            # main greenlet (through the hub, which this greenlet returns to)
            self.exception = e
            raise
        except BaseException as e:  # noqa: BLE001
            self.exception = e
            if not self._links:
                sys.stderr.write(f"greencoap: {self!r} failed\n")
                traceback.print_exc()
        finally:
            self._func = self._args = self._kwargs = None
            self._done = True
            links, self._links = self._links, []
            for fn in links:
                self._hub.run_callback(fn, self)

    def successful(self) -> bool:
        """True when the greenlet finished without an exception (as gevent's)."""
        return self._done and self.exception is None

    @property
    def started(self) -> bool:
        """True once :meth:`start` was called."""
        return self._started

    def ready(self) -> bool:
        """True once the greenlet has finished (returned, raised or was killed)."""
        return self._done

    def link(self, callback: Callable[[Greenlet], Any]) -> None:
        """Call ``callback(self)`` in the hub when the greenlet finishes."""
        if self._done:
            self._hub.run_callback(callback, self)
        else:
            self._links.append(callback)

    def unlink(self, callback: Callable) -> None:
        try:
            self._links.remove(callback)
        except ValueError:
            pass

    def join(self, timeout: float | None = None) -> bool:
        """Wait until finished; return False if ``timeout`` expired first."""
        if self._done:
            return True
        w = Waiter(self._hub)
        self.link(w.switch)
        try:
            return w.get(timeout) is not _UNSET
        finally:
            self.unlink(w.switch)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Return the value or re-raise the exception, waiting at most
        ``timeout`` seconds (``block=False``: not at all); raises
        :class:`Timeout` when it is not finished by then (as gevent's)."""
        if not self.join(timeout if block else 0.0):
            raise Timeout(timeout if block else 0.0)
        if self.exception is not None:
            raise self.exception
        return self.value

    def kill(
        self,
        exception: Any = GreenletExit,
        block: bool = True,
        timeout: float | None = None,
    ) -> None:
        """Raise ``exception`` in the greenlet; by default wait until it is dead."""
        if self._done:
            return
        if not self._started or not bool(self):
            # never ran: finish it without running the function
            self._done = True
            self._started = True
            self.value = exception() if isinstance(exception, type) else exception
            links, self._links = self._links, []
            for fn in links:
                self._hub.run_callback(fn, self)
            return
        self._hub.run_callback(self._throw_in, exception)
        if block:
            self.join(timeout)

    def _throw_in(self, exception: Any) -> None:
        if not self.dead:
            self.throw(exception)

    def __repr__(self) -> str:
        name = getattr(self._func, "__name__", None) or "done"
        return f"<Greenlet {name} at {id(self):#x}>"


def spawn(fn: Callable, *args: Any, **kwargs: Any) -> Greenlet:
    """Start ``fn(*args, **kwargs)`` in a new greenlet and return it."""
    g = Greenlet(fn, *args, **kwargs)
    g.start()
    return g


def sleep(seconds: float = 0) -> None:
    """Park the current greenlet for ``seconds``; ``sleep(0)`` just yields."""
    hub = get_hub()
    g = getcurrent()
    if seconds <= 0:
        hub.run_callback(g.switch)
        hub.switch_out()
        return
    t = hub.call_later(seconds, g.switch)
    try:
        hub.switch_out()
    finally:
        t.cancel()  # interrupted (Timeout, kill): the timer must not wake a later wait


def joinall(
    greenlets: Iterable[Greenlet], timeout: float | None = None, raise_error: bool = False
) -> list[Greenlet]:
    """Wait for all ``greenlets``; return those that finished within ``timeout``."""
    greenlets = list(greenlets)
    deadline = None if timeout is None else monotonic() + timeout
    done = []
    for g in greenlets:
        remaining = None if deadline is None else max(0.0, deadline - monotonic())
        if g.ready() or (remaining != 0.0 and g.join(remaining)):
            done.append(g)
            if raise_error and g.exception is not None:
                raise g.exception
    return done
