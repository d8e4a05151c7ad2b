"""Registration with a CoAP Resource Directory, endpoint side (layer 2;
RFC 9176 §5.3, and the LwM2M client registration that follows it).

A :class:`Registration` is the state machine of one endpoint's registration:
it says *what* to send and *when*; the caller sends it (on the device's own
socket, so the RD sees the device's address as its base) and reports back
what came of it.  It never reads a clock or does I/O: every call takes
``now``, and randomness comes from the ``rng`` it was given.

The life of a registration:

* :meth:`Registration.start` schedules the first registration ``delay``
  seconds on (fleets spread their devices over a ramp this way, never a
  thundering herd).
* Registration: ``POST {path}?ep=NAME&lt=LT&…`` with the endpoint's links
  (``application/link-format``, or any payload and format: LwM2M uses
  ``lwm2m=1.1&b=U`` and object links such as ``</3/0>``).  A 2.01 Created
  gives the registration resource's Location; the registration then lives
  ``lifetime`` seconds on the RD.
* Refresh: a ``POST {location}`` with an empty payload (RFC 9176 §5.3.1)
  at ``refresh`` × lifetime (less a random part of ``jitter`` of that, so
  that devices registered together spread apart), well before it expires.
* A 4.04 to a refresh (the RD forgot the registration: it restarted, or the
  lifetime passed while the device was offline) registers anew at once.
* A timeout or a 5.xx retries with exponential back-off from ``retry_base``
  seconds, doubled each time up to ``retry_cap``, each with up to 50 %
  random extra; any other 4.xx to a registration is a configuration error
  (``last_error`` says which) and is retried at ``retry_cap``.  A refresh
  that keeps failing past the registration's end registers anew.
* :meth:`Registration.stop` gives the removal (``DELETE {location}``),
  when there is a registration to remove; a registration that was in
  flight and answers after the stop gives its removal from
  :meth:`on_response`.
* :meth:`Registration.reboot` forgets the registration (a device that
  restarts with new state) and registers anew after ``delay``.

One request is outstanding at a time: :meth:`poll` hands out the next
:class:`Action` when it is due and nothing is in flight; the answer is given
to :meth:`on_response` or :meth:`on_failure`.  Counters are in
:attr:`Registration.stats`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from ..codes import dotted

__all__ = [
    "CREATED",
    "Action",
    "Registration",
    "RegistrationConfig",
    "RegistrationState",
]

#: response codes (class << 5 | detail)
CREATED, DELETED, CHANGED, NOT_FOUND = 65, 66, 68, 132

LINK_FORMAT = 40

RFC_DEFAULT_LIFETIME = 90000  # RFC 9176 §5.3: 25 hours


class RegistrationState:
    """Where a :class:`Registration` is (the values of ``Registration.state``)."""

    IDLE = "idle"  #: not started, or stopped
    WAITING = "waiting"  #: a registration is scheduled
    REGISTERING = "registering"  #: a registration is in flight
    REGISTERED = "registered"  #: registered; a refresh is scheduled
    REFRESHING = "refreshing"  #: a refresh is in flight
    REMOVED = "removed"  #: stopped; the removal was handed out (or nothing to remove)


@dataclass
class RegistrationConfig:
    """What to register and how (see the module docstring).

    ``params`` are further endpoint parameters in the registration's query,
    in order (``d``, ``base``, ``et``, ``lwm2m``, ``b`` …; a value None gives
    a bare ``key``); ``update_params`` go into every refresh's query.
    """

    endpoint: str
    lifetime: int = RFC_DEFAULT_LIFETIME
    path: str = "/rd"
    params: list[tuple[str, str | None]] = field(default_factory=list)
    payload: bytes = b""
    content_format: int | None = LINK_FORMAT
    refresh: float = 0.75
    jitter: float = 0.1
    retry_base: float = 2.0
    retry_cap: float = 300.0
    update_params: list[tuple[str, str | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.endpoint:
            raise ValueError("a registration needs an endpoint name (ep)")
        if not 1 <= self.lifetime <= 0xFFFFFFFF:
            raise ValueError(f"lifetime must be 1..2**32-1 seconds, not {self.lifetime}")
        if not 0.0 < self.refresh < 1.0:
            raise ValueError("refresh is a fraction of the lifetime, between 0 and 1")
        if not 0.0 <= self.jitter < self.refresh:
            raise ValueError("jitter must be at least 0 and below refresh")
        if not self.path.startswith("/"):
            raise ValueError(f"the registration path must be absolute, not {self.path!r}")
        if self.retry_base <= 0 or self.retry_cap < self.retry_base:
            raise ValueError("retry_base must be > 0 and retry_cap >= retry_base")

    def query(self) -> list[str]:
        """The registration's Uri-Query items."""
        items = [f"ep={self.endpoint}", f"lt={self.lifetime}"]
        return items + [_item(k, v) for k, v in self.params]


def _item(key: str, value: str | None) -> str:
    return key if value is None else f"{key}={value}"


@dataclass
class Action:
    """One request for the caller to send: ``method`` (``"POST"`` or
    ``"DELETE"``) to ``path`` (the RD's registration resource, or the
    registration's location) with ``query`` items and ``payload``;
    ``kind`` is ``"register"``, ``"refresh"`` or ``"remove"``."""

    kind: str
    method: str
    path: str
    query: list[str]
    payload: bytes = b""
    content_format: int | None = None


class Registration:
    """One endpoint's registration at one RD (see the module docstring)."""

    def __init__(self, config: RegistrationConfig, rng: random.Random) -> None:
        self.config = config
        self.rng = rng
        self.state = RegistrationState.IDLE
        #: the registration resource's path on the RD (from Location-Path)
        self.location: str | None = None
        #: when the current registration ends on the RD (None: not registered)
        self.expires: float | None = None
        #: what went wrong last (a timeout, a code), for progress lines
        self.last_error: str | None = None
        self._due: float | None = None  # when poll hands out the next action
        self._in_flight: Action | None = None
        self._late: Action | None = None  # a registration in flight when stopped
        self._failures = 0  # in a row, for the back-off
        self.stats = {
            "registrations": 0,
            "refreshes": 0,
            "reregistrations": 0,
            "removals": 0,
            "failures": 0,
            "timeouts": 0,
        }

    # -- what the caller drives ---------------------------------------------------
    def start(self, now: float, delay: float = 0.0) -> None:
        """Schedule the first registration ``delay`` seconds from ``now``."""
        self.state = RegistrationState.WAITING
        self.location = self.expires = None
        self._failures = 0
        self._in_flight = self._late = None
        self._due = now + max(0.0, delay)

    @property
    def registered(self) -> bool:
        """True while the RD holds a registration (as far as we know)."""
        return self.location is not None

    @property
    def in_flight(self) -> Action | None:
        """The action sent and not answered yet."""
        return self._in_flight

    def next_time(self) -> float | None:
        """When :meth:`poll` has something to hand out (None: nothing
        scheduled, or an action is in flight)."""
        return None if self._in_flight is not None else self._due

    def poll(self, now: float) -> Action | None:
        """The action due at ``now``, marked in flight (None: nothing due)."""
        if self._in_flight is not None or self._due is None or now < self._due:
            return None
        cfg = self.config
        self._due = None
        if self.location is None:
            self.state = RegistrationState.REGISTERING
            action = Action("register", "POST", cfg.path, cfg.query(), cfg.payload)
            action.content_format = cfg.content_format
        else:
            self.state = RegistrationState.REFRESHING
            query = [_item(k, v) for k, v in cfg.update_params]
            action = Action("refresh", "POST", self.location, query)
        self._in_flight = action
        return action

    def on_response(self, code: int, location: str | None, now: float) -> Action | None:
        """The answer to the action in flight: its response ``code`` and, for
        a registration, the Location-Path it gave (``"/rd/4521"``).

        Returns a removal to send when a registration answered after
        :meth:`stop` (so that a stopped endpoint leaves nothing on the RD),
        else None."""
        action = self._in_flight
        if action is None:
            if self._late is not None and code == CREATED and location:
                self._late = None
                self.stats["removals"] += 1
                return Action("remove", "DELETE", location, [])
            self._late = None
            return None
        self._in_flight = None
        if action.kind == "register":
            if code == CREATED and location:
                self.stats["registrations"] += 1
                self.location = location
                self._registered(now)
                return None
            self._failed(now, f"registration answered {dotted(code)}", permanent=code < 160)
            if code == CREATED:
                self.last_error = "registration answered 2.01 without a Location-Path"
            return None
        if code == CHANGED or code == CREATED or code == 69:  # 2.04 (2.01/2.05 tolerated)
            self.stats["refreshes"] += 1
            self._registered(now)
            return None
        if code == NOT_FOUND:  # the RD forgot us: register anew, now
            self.stats["reregistrations"] += 1
            self.location = self.expires = None
            self.state = RegistrationState.WAITING
            self._due = now
            self._failures = 0
            return None
        self._failed(now, f"refresh answered {dotted(code)}", permanent=False)
        return None

    def on_failure(self, now: float, reason: str = "timeout") -> None:
        """The action in flight got no answer (``reason``: what happened)."""
        self._late = None
        if self._in_flight is None:
            return
        self._in_flight = None
        self.stats["timeouts"] += reason == "timeout"
        self._failed(now, reason, permanent=False)

    def stop(self, now: float) -> Action | None:
        """Stop; the removal to send (None: nothing is registered)."""
        location = self.location
        self.state = RegistrationState.REMOVED
        self._due = None
        if self._in_flight is not None and self._in_flight.kind == "register":
            self._late = self._in_flight  # its answer may still bring a location
        self._in_flight = None
        self.location = self.expires = None
        if location is None:
            return None
        self.stats["removals"] += 1
        return Action("remove", "DELETE", location, [])

    def wake(self, now: float) -> None:
        """The network is back: an action waiting out a back-off is due now."""
        if self._in_flight is None and self._due is not None and self._failures:
            self._due = min(self._due, now)

    def reboot(self, now: float, delay: float = 0.0) -> None:
        """Forget the registration (new state, new registration after ``delay``)."""
        self.start(now, delay)

    # -- internals ----------------------------------------------------------------------
    def _registered(self, now: float) -> None:
        cfg = self.config
        self.state = RegistrationState.REGISTERED
        self._failures = 0
        self.last_error = None
        self.expires = now + cfg.lifetime
        self._due = now + cfg.lifetime * (cfg.refresh - cfg.jitter * self.rng.random())

    def _failed(self, now: float, why: str, permanent: bool) -> None:
        cfg = self.config
        self.stats["failures"] += 1
        self.last_error = why
        self._failures += 1
        if permanent:
            wait = cfg.retry_cap
        else:
            wait = min(cfg.retry_cap, cfg.retry_base * 2 ** (self._failures - 1))
            wait *= 1.0 + 0.5 * self.rng.random()
        if self.location is not None and self.expires is not None and now + wait >= self.expires:
            # the registration ends before the next refresh could: register anew
            self.location = self.expires = None
        self.state = RegistrationState.REGISTERED if self.location else RegistrationState.WAITING
        self._due = now + wait

    def describe(self) -> dict[str, Any]:
        """State, location and counters (for stats and progress lines)."""
        return {
            "state": self.state,
            "location": self.location,
            "last_error": self.last_error,
            **self.stats,
        }
