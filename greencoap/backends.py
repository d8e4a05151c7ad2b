"""Choosing the hub's I/O backend (layer 3).

``GREENCOAP_HUB=uring|epoll|gevent`` (or ``get_hub(backend=...)``) forces a
backend; otherwise gevent's is used when gevent's hub already runs in this
thread (Locust), then io_uring when it works here, then epoll.  When io_uring
was wanted but cannot run, one warning names the reason and epoll takes over;
``GREENCOAP_REQUIRE_URING=1`` turns that into an error.
"""

from __future__ import annotations

import errno
import importlib.util
import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import socket

BACKENDS = ("uring", "epoll", "gevent")

#: The largest datagram any backend delivers; larger ones are dropped and
#: counted as ``truncated`` (CoAP over UDP keeps messages within one IP packet,
#: RFC 7252 §4.6; libcoap's receive buffer is 1,472 bytes).
MAX_DATAGRAM = 4052
_warned = False


@runtime_checkable
class DatagramChannel(Protocol):
    """One UDP socket as a backend serves it: what an endpoint relies on.

    The backend calls ``on_batch(batch, now)`` (given to
    :meth:`IoBackend.open_channel`) with ``[(data, addr), ...]`` from the
    hub; the endpoint sends with :meth:`sendto` (queued, flushed by the
    backend once per loop turn).  Optional extras an endpoint looks for with
    ``getattr``: ``limit_sources`` (early shedding), ``on_failure``,
    ``peer_timed_out``, ``table_sizes`` and ``credentials`` (DTLS).
    Implemented by ``uring_hub.Channel``, ``epoll_hub.Channel``,
    ``gevent_hub.GeventChannel`` (and their PktinfoChannel variants) and
    ``dtls_channel.DtlsChannel``.  Not thread-safe: the hub's thread only.
    """

    @property
    def stats(self) -> dict[str, int]:
        """Counters of this channel (send/receive errors, truncated, shedding)."""
        ...

    def sendto(self, data: bytes, addr: Any) -> None:
        """Queue one datagram to ``addr``."""
        ...

    def close(self) -> None:
        """Stop receiving; the socket is closed."""
        ...


@runtime_checkable
class IoBackend(Protocol):
    """A hub's I/O backend: ``uring_hub.UringBackend``, ``epoll_hub.EpollBackend``
    or ``gevent_hub.GeventBackend`` (see :func:`create_backend`).

    It opens channels for sockets and delivers what arrives to their
    ``on_batch``; :meth:`wakeup` is the one method any thread may call.  The
    native backends also :meth:`~PollingBackend.poll` (the hub's loop);
    gevent's loop drives the gevent backend itself.
    """

    name: str

    def open_channel(self, sock: socket.socket, on_batch: Callable) -> DatagramChannel:
        """Serve ``sock``: its datagrams go to ``on_batch(batch, now)``."""
        ...

    def has_work(self) -> bool:
        """True while a channel is open (something may still arrive)."""
        ...

    def wakeup(self) -> None:
        """Wake the hub's wait (thread-safe)."""
        ...

    def close(self) -> None:
        """Release the backend's resources (its channels are closed first)."""
        ...


@runtime_checkable
class PollingBackend(IoBackend, Protocol):
    """A native backend (io_uring, epoll), whose hub loop calls :meth:`poll`."""

    def poll(self, timeout: float | None) -> None:
        """Wait up to ``timeout`` s for I/O (None: until some; 0: do not block),
        deliver it, flush what the channels queued."""
        ...


class DatagramBackend:
    """What the native backends share: registered channels and an eventfd
    that any thread may write to wake the hub's wait."""

    _channels: dict
    _wfd: int

    def has_work(self) -> bool:
        """True while a socket is registered (something may still arrive)."""
        return bool(self._channels)

    def wakeup(self) -> None:
        """Wake a waiting ``poll`` (thread-safe)."""
        try:
            os.eventfd_write(self._wfd, 1)
        except OSError:
            pass


def gevent_hub_running() -> bool:
    """True when gevent owns this thread: its hub exists or it monkey-patched.

    Either way another loop in the same thread would deadlock with gevent's,
    so greencoap parks on gevent's hub instead of running its own.
    """
    if sys.modules.get("gevent") is None:
        return False
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("socket"):
        return True
    try:
        from gevent._hub_local import get_hub_if_exists
    except ImportError:  # pragma: no cover - very old gevent
        return False
    return get_hub_if_exists() is not None


def wants_gevent(name: str | None) -> bool:
    """Should this thread's hub defer to gevent's loop?"""
    if name is not None and name not in BACKENDS:
        raise ValueError(f"unknown greencoap hub backend {name!r}; use one of {BACKENDS}")
    if name == "gevent":
        return True
    return name is None and gevent_hub_running()


def require_uring() -> bool:
    """``GREENCOAP_REQUIRE_URING=1``: a missing io_uring is an error, not a warning."""
    return os.environ.get("GREENCOAP_REQUIRE_URING", "") not in ("", "0")


def build_status() -> str | None:
    """What setup.py recorded about the io_uring core when this greencoap was built:
    ``"built"``, ``"no liburing-dev at build time"``, ``"compile failed: …"``, or
    None when the install carries no build record (built by an older setup.py)."""
    try:
        from . import _build_info
    except ImportError:
        return None
    return getattr(_build_info, "uring_core", None)


def uring_unavailable_reason(e: BaseException) -> str:
    """The real reason io_uring cannot be used, from the exception that said so."""
    if importlib.util.find_spec(f"{__package__}._uring") is None:
        status = build_status()
        if status == "no liburing-dev at build time":
            return (
                "this greencoap was built without liburing-dev (liburing.h was missing at "
                "build time), so it has no compiled io_uring core; install liburing-dev "
                "and reinstall greencoap"
            )
        if status and status.startswith("compile failed"):
            detail = status.partition(":")[2].strip()
            return (
                "this greencoap has no compiled io_uring core: compiling it failed at build "
                f"time ({detail}); reinstall greencoap with a working C compiler"
            )
        if status == "built":
            return (
                "the compiled io_uring core (greencoap._uring) was built but is missing "
                "from this install; reinstall greencoap"
            )
        return (
            "this greencoap was installed without its compiled io_uring core (built "
            "without liburing-dev or without a C compiler); reinstall with liburing-dev "
            "and a compiler present"
        )
    if isinstance(e, OSError) and e.errno and "io_uring_setup" in str(e.strerror):
        detail = str(e.strerror).removeprefix("io_uring_setup failed: ")
        name = errno.errorcode.get(e.errno, f"errno {e.errno}")
        if not detail.startswith(name):
            detail = f"{name} ({detail})"
        return f"the kernel refused io_uring_setup: {detail}"
    if isinstance(e, ImportError):
        return f"the compiled io_uring core does not load: {e}"
    return str(e)


def create_backend(hub: Any, name: str | None) -> IoBackend:
    """Build the I/O backend object for ``hub``."""
    global _warned
    if name in (None, "uring"):
        try:
            from .uring_hub import UringBackend

            return UringBackend(hub)
        except (ImportError, OSError) as e:
            reason = uring_unavailable_reason(e)
            if name == "uring" or require_uring():
                raise RuntimeError(f"greencoap: io_uring backend unavailable: {reason}") from e
            if not _warned:
                _warned = True
                # one line, through logging (the last-resort handler prints it bare)
                logging.getLogger("greencoap").warning(
                    "greencoap: io_uring unavailable, using the epoll backend: %s", reason
                )
    from .epoll_hub import EpollBackend

    return EpollBackend(hub)
