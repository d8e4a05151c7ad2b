"""Observe (RFC 7641) for users: an observation is a plain iterator (layer 4).

    with client.observe("coap://host/counter") as obs:
        for response in obs:          # blocks this greenlet only
            print(response.text)
            if done:
                break                 # leaving the block deregisters

The first item is the registration's response.  Notifications are queued as
they arrive (in the hub) after the §3.4 freshness rule dropped reordered
ones; a block-wise notification is fetched whole before it is yielded.
Iteration ends after a final response (one without an Observe option, such
as a 4.04, or a server that does not support Observe) and raises when the
registration fails.  ``obs.iter(timeout=...)`` bounds the wait for each item.

Freshness across time (§3.3.1): a representation is fresh for its Max-Age
(60 s without the option).  When that passes with no newer notification,
the observation re-registers by itself (a GET with Observe=0 and the same
token), so a server that lost it (it restarted) starts notifying again and
the iteration goes on without the user doing anything; the re-registration's
response is the next item.  ``max_reregistrations`` re-registrations in a
row that get no answer end the iteration with :class:`RequestTimeoutError`.
"""

from __future__ import annotations

from collections.abc import Iterator
from time import monotonic
from typing import TYPE_CHECKING, Any

from .codes import Code, Type, is_success
from .errors import RequestTimeoutError, ResetError
from .hub import Timeout, os_thread_ident, spawn
from .message import DEFAULT_MAX_AGE, Message
from .options import OptionNumber
from .protocol.blockwise import RepresentationChangedError
from .protocol.exchange import RequestExchange
from .protocol.observe import FreshnessFilter
from .response import Response
from .sync import Empty, Queue

if TYPE_CHECKING:
    from .client import Client

_FINAL = object()

#: Seconds past a representation's Max-Age before the observation
#: re-registers (and between re-registration attempts).
REREGISTER_SLACK = 2.0


class Observation:
    """One Observe registration; iterate it for the responses (see the module docstring)."""

    def __init__(
        self,
        client: Client,
        uri: str,
        *,
        timeout: float | None = None,
        confirmable: bool = True,
        options: list[tuple[int, bytes]] | None = None,
        reregister: bool = True,
        max_reregistrations: int = 3,
    ) -> None:
        self.client = client
        self.uri = uri
        self.timeout = client.timeout if timeout is None else timeout
        self.confirmable = confirmable
        self.extra_options = list(options or [])
        self.freshness = FreshnessFilter()
        self._queue: Queue = Queue()
        self._ex: RequestExchange | None = None
        self._peer: tuple | None = None
        self._ep: Any = None
        self._opts: list = []
        self._started = False
        self.cancelled = False
        self.notifications = 0
        #: notifications dropped because their representation changed while
        #: their blocks were fetched (a newer notification follows)
        self.torn = 0
        self.reregister = reregister
        self.max_reregistrations = max_reregistrations
        #: re-registrations made (§3.3.1), and how many in a row failed
        self.reregistrations = 0
        self._failed = 0
        self._expiry: Any = None  # the hub timer for the Max-Age of the last item
        #: the hub that runs this observation (its socket's), once started
        self._hub: Any = None

    # -- registration ----------------------------------------------------
    def _start(self) -> Response:
        client = self.client
        u, uri_opts = client._parse(self.uri)
        self._ep, self._peer = ep, peer = client.connect(u, self.timeout)
        self._hub = ep.hub
        self._opts = list(uri_opts) + self.extra_options
        msg = Message(
            Type.CON if self.confirmable else Type.NON,
            Code.GET,
            0,
            b"",
            self._opts + [(OptionNumber.OBSERVE, b"")],
        )
        self._ex = ex = ep.observe(msg, peer, self.timeout, self._on_notification)
        first: Message = ex.result
        echo = first.opt(OptionNumber.ECHO) if first.code == Code.UNAUTHORIZED else None
        if echo is not None:
            # RFC 9175 §2.4: the server wants to know we are at this address
            # before it sends notifications; register again with its Echo value
            msg = Message(msg.mtype, Code.GET, 0, b"", msg.options + [(OptionNumber.ECHO, echo)])
            self._ex = ex = ep.observe(msg, peer, self.timeout, self._on_notification)
            first = ex.result
        if ex.observing:
            self.freshness.accept(first.observe, monotonic())
            self._arm_expiry(first)
        self._started = True
        return self._whole(first)

    # -- freshness across time (§3.3.1) -----------------------------------------
    def _arm_expiry(self, msg: Message) -> None:
        """Re-register when ``msg``'s Max-Age passes without a newer item."""
        if not self.reregister:
            return
        if self._expiry is not None:
            self._expiry.cancel()
        max_age = msg.max_age
        wait = (DEFAULT_MAX_AGE if max_age is None else max_age) + REREGISTER_SLACK
        self._expiry = self._ep.hub.call_later(wait, self._expired)

    def _expired(self) -> None:
        self._expiry = None
        if not self.cancelled and self._ex is not None and self._ex.observing:
            spawn(self._reregister)

    def _reregister(self) -> None:
        """A GET with Observe=0 and the same token (on its own greenlet); after
        a failure, again a little later, up to ``max_reregistrations``."""
        if self.cancelled or self._ex is None:
            return
        token = self._ex.token
        msg = Message(
            Type.CON if self.confirmable else Type.NON,
            Code.GET,
            0,
            token,
            self._opts + [(OptionNumber.OBSERVE, b"")],
        )
        self.reregistrations += 1
        try:
            ex = self._ep.observe(msg, self._peer, self.timeout, self._on_notification, True)
        except (RequestTimeoutError, ResetError) as e:
            self._failed += 1
            if self._failed >= self.max_reregistrations:
                self._queue.put(
                    RequestTimeoutError(
                        f"observation of {self.uri} lost: {self._failed} re-registrations "
                        f"in a row got no answer ({e})"
                    )
                )
            elif not self.cancelled:
                self._expiry = self._ep.hub.call_later(REREGISTER_SLACK, self._retry)
            return
        self._failed = 0
        if self.cancelled:
            return
        self._ex = ex
        self.freshness = FreshnessFilter()  # a restarted server counts from anew
        first: Message = ex.result
        self.freshness.accept(first.observe if ex.observing else None, monotonic())
        self._queue.put(first)
        if ex.observing:
            self._arm_expiry(first)
        else:
            self._queue.put(_FINAL)  # the server keeps no observation any more

    def _retry(self) -> None:
        self._expiry = None
        if not self.cancelled:
            spawn(self._reregister)

    def _on_notification(self, msg: Message) -> None:
        """In the hub: queue a fresh notification for the iterating greenlet
        (or the error that ended the observation, e.g. a failed DTLS session)."""
        if isinstance(msg, Exception):
            self._queue.put(msg)
            return
        if self.freshness.accept(msg.observe if is_success(msg.code) else None, monotonic()):
            self._queue.put(msg)
            if self._ex is not None and not self._ex.observing:
                self._queue.put(_FINAL)
                if self._expiry is not None:
                    self._expiry.cancel()
                    self._expiry = None
            else:
                self._arm_expiry(msg)

    def _whole(self, msg: Message) -> Response | None:
        """The response for ``msg``, with the rest of a block-wise body fetched;
        None when the resource changed while its blocks were fetched and the
        observation goes on (RFC 7959 §3.4: the torn state is dropped, the
        change's own notification follows)."""
        if msg.block2 is not None and msg.block2.more:
            client = self.client
            try:
                msg = client._fetch_rest(
                    self._ep, Type.CON, Code.GET, self._opts, msg, self._peer, self.timeout
                )
            except RepresentationChangedError:
                if not self.active:
                    raise  # a final response: no newer notification will follow
                self.torn += 1
                return None
        return Response.from_message(msg, self._peer)

    # -- iteration ---------------------------------------------------------
    @property
    def active(self) -> bool:
        """True while the server keeps sending notifications for this registration."""
        return self._ex is not None and self._ex.observing

    def __iter__(self) -> Iterator[Response]:
        return self.iter()

    def iter(self, timeout: float | None = None) -> Iterator[Response]:
        """Yield the registration's response, then each notification.

        ``timeout`` bounds the wait for every next item
        (:class:`RequestTimeoutError` when it passes); ``None`` waits as long
        as the observation lasts.
        """
        if not self._started:
            first = self._run(self._start, timeout=self.timeout)
            registered = self.active
            if first is not None:  # None: torn by a change, whose notification follows
                yield first
            if not registered:  # a final answer: the server keeps no observation
                return
        while not self.cancelled:
            item = self._run(self._next_item, timeout, timeout=timeout)
            if item is _FINAL:
                return
            if isinstance(item, Exception):
                raise item
            whole = self._run(self._whole, item, timeout=self.timeout)
            if whole is not None:
                self.notifications += 1
                yield whole

    def _next_item(self, timeout: float | None) -> Any:
        try:
            return self._queue.get(timeout=timeout)
        except Empty:
            raise RequestTimeoutError(
                f"no notification from {self.uri} within {timeout:.3g} s"
            ) from None

    def _run(self, fn: Any, *args: Any, timeout: float | None) -> Any:
        """Call ``fn`` where this observation lives: directly on its hub's
        thread, else carried over to it (an observation is usable from any
        thread; one started from a thread that is not the client's home
        lives on the client's hub thread)."""
        hub = self._hub
        if hub is None:  # not started yet: its side is chosen by the first call
            client = self.client
            if os_thread_ident() == client._home or client._on_remote():
                return fn(*args)
            return client._elsewhere(fn, *args, timeout=timeout)
        if os_thread_ident() == hub.thread_ident:
            return fn(*args)
        wait = None if timeout is None else timeout + 10.0
        try:
            return hub.call_from_thread(fn, *args, timeout=wait)
        except Timeout:
            raise RequestTimeoutError(
                f"the hub of the observation of {self.uri} did not run within {wait:.3g} s"
            ) from None

    # -- ending --------------------------------------------------------------
    def cancel(self, timeout: float | None = None) -> Response | None:
        """Deregister actively: a GET with Observe=1 and the same token (§3.6).

        Returns the server's answer to the deregistration (None if the
        observation had already ended).  Later notifications get RST.
        Callable from any thread.
        """
        if self._hub is None:
            self.cancelled = True
            return None
        wait = self.timeout if timeout is None else timeout
        return self._run(self._cancel, timeout, timeout=wait)

    def close_locally(self) -> None:
        """End the observation here only, sending nothing (the server is told
        otherwise, e.g. by an RST; a later notification gets RST anyway)."""
        if self._hub is None:
            self.cancelled = True
            return
        self._run(self._forget, timeout=self.timeout)

    def _forget(self) -> None:
        self.cancelled = True
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self._queue.put(_FINAL)
        if self._ex is not None and self._ex.observing:
            self._ep.forget(self._ex)

    def _cancel(self, timeout: float | None = None) -> Response | None:
        ex = self._ex
        self.cancelled = True
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self._queue.put(_FINAL)
        if ex is None or not ex.observing:
            return None
        ep = self._ep
        ep.forget(ex)
        msg = Message(
            Type.CON,
            Code.GET,
            0,
            ex.token,
            self._opts + [(OptionNumber.OBSERVE, b"\x01")],
        )
        try:
            reply = ep.request(msg, self._peer, self.timeout if timeout is None else timeout)
        except RequestTimeoutError:
            return None
        return Response.from_message(reply, self._peer)

    def close(self) -> None:
        """Stop observing (deregisters when the server still sends)."""
        if not self.cancelled:
            try:
                self.cancel(timeout=min(self.timeout, 5.0))
            except Exception:  # noqa: BLE001 - closing must not raise
                pass

    def __enter__(self) -> Observation:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "active" if self.active else ("cancelled" if self.cancelled else "idle")
        return f"<Observation {self.uri} {state} notifications={self.notifications}>"
