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
"""

from __future__ import annotations

from collections.abc import Iterator
from time import monotonic
from typing import TYPE_CHECKING, Any

from .codes import Code, Type
from .errors import RequestTimeoutError
from .message import Message
from .options import OptionNumber
from .protocol.messaging import OBSERVING, Exchange
from .protocol.observe import FreshnessFilter
from .response import Response
from .sync import Empty, Queue

if TYPE_CHECKING:
    from .client import Client

_FINAL = object()


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
    ) -> None:
        self.client = client
        self.uri = uri
        self.timeout = client.timeout if timeout is None else timeout
        self.confirmable = confirmable
        self.extra_options = list(options or [])
        self.freshness = FreshnessFilter()
        self._queue: Queue = Queue()
        self._ex: Exchange | None = None
        self._peer: tuple | None = None
        self._ep: Any = None
        self._opts: list = []
        self._started = False
        self.cancelled = False
        self.notifications = 0

    # -- registration ----------------------------------------------------
    def _start(self) -> Response:
        client = self.client
        u, uri_opts = client._parse(self.uri)
        self._ep, self._peer = ep, peer = client.connect(u, self.timeout)
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
        if ex.state == OBSERVING:
            self.freshness.accept(first.observe, monotonic())
        self._started = True
        return self._whole(first)

    def _on_notification(self, msg: Message) -> None:
        """In the hub: queue a fresh notification for the iterating greenlet
        (or the error that ended the observation, e.g. a failed DTLS session)."""
        if isinstance(msg, Exception):
            self._queue.put(msg)
            return
        if self.freshness.accept(msg.observe if 64 <= msg.code < 96 else None, monotonic()):
            self._queue.put(msg)
            if self._ex is not None and self._ex.state != OBSERVING:
                self._queue.put(_FINAL)

    def _whole(self, msg: Message) -> Response:
        """The response for ``msg``, with the rest of a block-wise body fetched."""
        if msg.block2 is not None and msg.block2.more:
            client = self.client
            msg = client._fetch_rest(
                self._ep, Type.CON, Code.GET, self._opts, msg, self._peer, self.timeout
            )
        return Response.from_message(msg, self._peer)

    # -- iteration ---------------------------------------------------------
    @property
    def active(self) -> bool:
        """True while the server keeps sending notifications for this registration."""
        return self._ex is not None and self._ex.state == OBSERVING

    def __iter__(self) -> Iterator[Response]:
        return self.iter()

    def iter(self, timeout: float | None = None) -> Iterator[Response]:
        """Yield the registration's response, then each notification.

        ``timeout`` bounds the wait for every next item
        (:class:`RequestTimeoutError` when it passes); ``None`` waits as long
        as the observation lasts.
        """
        if not self._started:
            first = self._start()
            registered = self.active
            yield first
            if not registered:  # a final answer: the server keeps no observation
                return
        while not self.cancelled:
            try:
                item = self._queue.get(timeout=timeout)
            except Empty:
                raise RequestTimeoutError(
                    f"no notification from {self.uri} within {timeout:.3g} s"
                ) from None
            if item is _FINAL:
                return
            if isinstance(item, Exception):
                raise item
            self.notifications += 1
            yield self._whole(item)

    # -- ending --------------------------------------------------------------
    def cancel(self, timeout: float | None = None) -> Response | None:
        """Deregister actively: a GET with Observe=1 and the same token (§3.6).

        Returns the server's answer to the deregistration (None if the
        observation had already ended).  Later notifications get RST.
        """
        ex = self._ex
        self.cancelled = True
        self._queue.put(_FINAL)
        if ex is None or ex.state != OBSERVING:
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
