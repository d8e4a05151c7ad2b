"""The CoAP message layer as a sans-I/O engine (layer 2; RFC 7252 §4).

Theory of operation
-------------------
:class:`MessageLayer` owns everything RFC 7252 §4 says about messages for
one endpoint (one UDP socket), for both roles:

* **Outgoing requests** (client role) become :class:`~.exchange.RequestExchange`
  exchanges, one per request, indexed by ``(peer, token)`` for responses and ``(peer, mid)``
  for ACK/RST.  A CON is retransmitted with ACK_TIMEOUT × random(1,
  ACK_RANDOM_FACTOR), doubling, up to MAX_RETRANSMIT times (§4.8); an empty
  ACK stops retransmission and the exchange waits for the separate response.
  At most ``nstart`` exchanges per peer are in flight (§4.7); the rest wait in
  FIFO order and are sent as earlier ones finish: they never fail for it.
* **Incoming requests** (server role) are deduplicated per ``(peer, mid)``
  for EXCHANGE_LIFETIME (CON) / NON_LIFETIME (NON) in a bounded cache: a
  duplicate is answered from the cached response bytes, or with an empty ACK
  while the first copy is still being handled (§4.5).
* **Everything else**: a ping (empty CON) gets RST; an unexpected CON
  response gets RST; a malformed CON gets RST and a malformed NON is
  dropped (§4.2, §4.3); each such event is counted in ``stats``.

The engine never reads a clock, never sleeps and never touches a socket:
``receive(data, peer, now)`` and ``expire(now)`` are fed by the endpoint,
datagrams to send are appended to ``outbox`` as ``(bytes, peer)`` pairs for
the endpoint to drain, and ``next_deadline()`` says when ``expire`` must be
called next.  Randomness (MIDs, tokens, jitter) comes from an injected RNG.
Peers are opaque hashable keys (the endpoint uses ``(host, port)``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._ext import speedups
from ..codes import Type, is_success
from ..errors import MessageFormatError
from ..message import Message
from ..message import encode as encode_message
from ..options import OptionNumber

if TYPE_CHECKING:
    from random import Random
from .dedup import DedupCache, DedupEntry
from .events import (
    Acknowledged,
    Event,
    NotificationReceived,
    RequestReceived,
    ResetReceived,
    ResponseReceived,
    TimedOut,
)
from .exchange import (
    ACKED,
    DONE,
    OBSERVING,
    QUEUED,
    SENT,
    Exchange,
    Outcome,
    ReplyExchange,
    RequestExchange,
)
from .limits import TokenBuckets
from .timers import NOT_SCHEDULED, TimerWheel

_c = speedups()
#: respond()'s and receive()'s common cases in C (None: pure Python; see
#: _speedups.respond and _speedups.receive_request)
_respond_c = None if _c is None else _c.respond
_receive_c = None if _c is None else _c.receive_request
del _c

CON, NON, ACK, RST = Type.CON, Type.NON, Type.ACK, Type.RST
_OBSERVE = int(OptionNumber.OBSERVE)
INF = float("inf")


@dataclass(frozen=True)
class TransmissionParameters:
    """RFC 7252 §4.8 transmission parameters (the RFC's defaults, except
    ``nstart``: 1024 requests in flight per peer rather than 1, so that many
    greenlets sharing a client are not serialised; ``nstart=1`` is strict
    §4.7)."""

    ack_timeout: float = 2.0
    ack_random_factor: float = 1.5
    max_retransmit: int = 4
    nstart: int = 1024
    default_leisure: float = 5.0
    probing_rate: float = 1.0
    max_latency: float = 100.0
    processing_delay: float | None = None

    def __post_init__(self) -> None:
        if self.ack_timeout <= 0 or self.ack_random_factor < 1 or self.max_retransmit < 0:
            raise ValueError("ack_timeout > 0, ack_random_factor >= 1, max_retransmit >= 0")
        if self.nstart < 1:
            raise ValueError("nstart must be at least 1")

    @property
    def max_transmit_span(self) -> float:
        """§4.8.2: time from first transmission to the last retransmission."""
        return self.ack_timeout * (2**self.max_retransmit - 1) * self.ack_random_factor

    @property
    def max_transmit_wait(self) -> float:
        """§4.8.2: time from first transmission until the sender gives up."""
        return self.ack_timeout * (2 ** (self.max_retransmit + 1) - 1) * self.ack_random_factor

    @property
    def exchange_lifetime(self) -> float:
        """§4.8.2: how long a MID must not be reused / a CON is deduplicated."""
        pd = self.ack_timeout if self.processing_delay is None else self.processing_delay
        return self.max_transmit_span + 2 * self.max_latency + pd

    @property
    def non_lifetime(self) -> float:
        """§4.8.2: how long a NON is deduplicated."""
        return self.max_transmit_span + self.max_latency


RESET = Outcome.RESET  # kept names: Exchange.outcome when the peer answered with RST
TIMEOUT = Outcome.TIMEOUT  # and when no answer came in time
# the hot path's outcomes as module constants: on Python 3.11 every
# ``Enum.MEMBER`` lookup goes through the enum metaclass's __getattr__ hook
# (about 0.13 µs, 15 times a plain global's)
_RESPONSE, _ACKNOWLEDGED = Outcome.RESPONSE, Outcome.ACKNOWLEDGED
_new = tuple.__new__  # events are named tuples, built without their Python __new__


class MessageLayer:
    """RFC 7252 §4 for one endpoint, both roles; see the module docstring."""

    def __init__(
        self,
        params: TransmissionParameters | None = None,
        *,
        rng: Random,
        token_length: int = 4,
        dedup_capacity: int = 65536,
        dedup_peer_share: float = 0.25,
        rst_rate: float = 100.0,
        rst_burst: float = 200.0,
        non_notify_window: float = 30.0,
        non_notify_cap: int = 4096,
    ) -> None:
        self.params = params or TransmissionParameters()
        self.rng = rng  # MIDs, tokens and jitter: injected, never made here
        self._random = self.rng.random
        if not 0 <= token_length <= 8:
            raise ValueError("token_length must be 0..8")
        self.token_length = token_length
        #: per-peer MID counters (least recently used first), at most ``mid_peers``
        self._mids: dict[Any, int] = {}
        self.mid_peers = 65536
        self.outbox: list[tuple[bytes, Any]] = []
        self._rst_buckets = TokenBuckets(rst_rate, rst_burst, max_peers=4096)
        #: how long (s) and for how many an RST to a NON notification is matched
        self.non_notify_window = non_notify_window
        self.non_notify_cap = non_notify_cap
        self._non_notes: deque[Exchange] = deque()
        # client role
        self._by_token: dict[tuple, Exchange] = {}
        self._by_mid: dict[tuple, Exchange] = {}
        self._inflight: dict[Any, int] = {}
        self._queued: dict[Any, deque] = {}
        # timers: millisecond buckets of exchanges (one live entry per exchange,
        # older entries are skipped lazily) and a heap of the bucket keys
        self._timers = TimerWheel()
        #: the earliest time scheduled since the driver last looked (it resets
        #: this to inf): lets the driver re-arm its one timer only when needed
        self.new_due = float("inf")
        p = self.params
        self._con_lifetime = p.exchange_lifetime  # the parameters are frozen
        self._non_lifetime = p.non_lifetime
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "requests_sent",
                "retransmissions",
                "responses_received",
                "timeouts",
                "resets_received",
                "requests_received",
                "duplicates",
                "malformed",
                "rst_sent",
                "rst_suppressed",
                "pings",
                "unexpected",
                "dedup_evicted",
                "dedup_peer_full",
                "mid_reused",
                "notifications",
                "separate_acks",
                "notifications_sent",
                "notifications_replaced",
                "separate_responses",
                "responses_acked",
            ),
            0,
        )
        #: server role: the received CONs/NONs and their answers (§4.5)
        self.dedup = DedupCache(
            self._con_lifetime,
            self._non_lifetime,
            capacity=dedup_capacity,
            peer_share=dedup_peer_share,
            stats=self.stats,
        )

    # -- identifiers ---------------------------------------------------
    def next_mid(self, peer: Any) -> int:
        """A fresh message ID for ``peer`` (§4.4: not reused with the same
        peer within EXCHANGE_LIFETIME).  Each peer has its own counter from a
        random start, so a busy endpoint's traffic to others does not wrap a
        quiet peer's MIDs; the counters of the least recently used peers go
        beyond ``mid_peers`` (a returning one starts afresh at random)."""
        mids = self._mids
        mid = mids.pop(peer, None)
        if mid is None:
            mid = self.rng.randrange(0x10000)
            if len(mids) >= self.mid_peers:
                del mids[next(iter(mids))]
        mids[peer] = (mid + 1) & 0xFFFF
        return mid

    # -- client role ---------------------------------------------------
    def request(
        self,
        msg: Message,
        peer: Any,
        now: float,
        timeout: float,
        observe: bool = False,
        replace: bool = False,
        mid: int | None = None,
    ) -> RequestExchange:
        """Start an exchange for request ``msg`` (its token and MID are assigned here).

        The exchange is sent at once (its datagram appended to ``outbox``) or
        queued behind ``nstart`` others to the same peer.  It ends, at the
        latest, ``timeout`` seconds from ``now``.  With ``observe`` (a GET or
        FETCH carrying Observe=0), a 2.xx answer with an Observe option turns
        it into an OBSERVING exchange that stays registered by token: each
        later message with its token is a :class:`NotificationReceived`, until a final
        one (no Observe option, or not 2.xx) or :meth:`cancel`.  With
        ``replace``, ``msg`` may reuse the token of an OBSERVING exchange: a
        re-registration (RFC 7641 §3.3.1), which ends that exchange silently
        and takes its place.  ``mid`` sends it with that message ID instead of
        a fresh one.
        """
        by_token = self._by_token
        token = msg.token
        n = self.token_length
        if msg.code == 0:  # a ping (empty CON): no token; matched by MID only
            token = object()
            key = (peer, token)
        elif not token and n:
            getrandbits = self.rng.getrandbits
            key = (peer, getrandbits(8 * n).to_bytes(n, "big"))
            while key in by_token:
                key = (peer, getrandbits(8 * n).to_bytes(n, "big"))
            msg.token = token = key[1]
        else:
            key = (peer, token)
            old = by_token.get(key)
            if old is not None:
                if not (replace and old.state is OBSERVING):
                    raise ValueError(f"token {token.hex()} already in use with {peer}")
                self._finish(old, now, Outcome.REPLACED)  # a re-registration takes the token over
        ex = RequestExchange(peer, token, msg.mtype == CON, now + timeout, observe)
        if mid is not None:
            ex.mid = mid  # the caller's own MID (legacy code sets one), kept when sent
        by_token[key] = ex
        ex.datagram = msg  # encoded when sent
        n = self._inflight.get(peer, 0)
        if n < self.params.nstart:
            self._inflight[peer] = n + 1
            self._transmit(ex, now)
        else:
            self._schedule(ex, ex.deadline)
            self._queued.setdefault(peer, deque()).append(ex)
        return ex

    def _transmit(self, ex: Exchange, now: float) -> None:
        msg = ex.datagram
        mid = ex.mid
        if mid < 0:
            mid = self.next_mid(ex.peer)
        msg.mid = ex.mid = mid
        ex.datagram = data = encode_message(msg)
        ex.state = SENT
        ex.sent_at = now
        self._by_mid[(ex.peer, mid)] = ex
        if ex.__class__ is RequestExchange:
            self.stats["requests_sent"] += 1
        if ex.con:
            p = self.params
            ex.interval = i = p.ack_timeout * (1 + self._random() * (p.ack_random_factor - 1))
            ex.next_retransmit = nr = now + i
            self._schedule(ex, nr if nr < ex.deadline else ex.deadline)
        else:
            self._schedule(ex, ex.deadline)
        self.outbox.append((data, ex.peer))

    def cancel(
        self,
        ex: Exchange,
        now: float,
        outcome: Outcome = Outcome.CANCELLED,
        error: BaseException | None = None,
    ) -> None:
        """End ``ex`` with ``outcome`` (its caller gave up; the endpoint
        closed): no more retransmissions, no state left."""
        if ex.state is not DONE:
            self._finish(ex, now, outcome, None, error)

    def cancel_peer(
        self, peer: Any, now: float, error: BaseException
    ) -> list[tuple[RequestExchange, bool]]:
        """End every request to ``peer`` as FAILED with ``error`` (its
        transport failed); returns them with whether each was an active
        observation.  Queued ones go first, so that none of them starts in a
        freed NSTART slot."""
        doomed = [e for e in self._by_token.values() if e.peer == peer]
        doomed.sort(key=lambda e: e.state is not QUEUED)
        out = []
        for ex in doomed:
            out.append((ex, ex.state is OBSERVING))
            self.cancel(ex, now, Outcome.FAILED, error)
        return out

    def cancel_all(self, now: float, outcome: Outcome = Outcome.CLOSED) -> list[RequestExchange]:
        """End every request of ours with ``outcome`` (the endpoint closes); returns them."""
        doomed = list(self._by_token.values())
        doomed.sort(key=lambda e: e.state is not QUEUED)
        for ex in doomed:
            self.cancel(ex, now, outcome)
        return doomed

    def _finish(
        self,
        ex: Exchange,
        now: float,
        outcome: Outcome,
        result: Message | None = None,
        error: BaseException | None = None,
    ) -> None:
        """End ``ex``: DONE with ``outcome`` (and its response or error), out
        of every table; a request's NSTART slot goes to the next in line."""
        self._timers.cancel(ex)  # no timer any more
        ex.outcome = outcome
        if result is not None:
            ex.result = result
        ex.error = error
        state = ex.state
        ex.state = DONE
        if ex.__class__ is ReplyExchange:  # a response of ours: only its MID is registered
            if self._by_mid.get((ex.peer, ex.mid)) is ex:
                del self._by_mid[(ex.peer, ex.mid)]
            return
        if state is OBSERVING:  # its slot and MID were released at registration
            self._by_token.pop((ex.peer, ex.token), None)
            return
        was_started = state is not QUEUED
        ex.next_retransmit = INF
        peer = ex.peer
        self._by_token.pop((peer, ex.token), None)
        if ex.mid >= 0 and self._by_mid.get((peer, ex.mid)) is ex:
            del self._by_mid[(peer, ex.mid)]
        if not was_started:
            q = self._queued.get(peer)
            if q is not None:
                try:
                    q.remove(ex)
                except ValueError:
                    pass
                if not q:
                    del self._queued[peer]
            return
        self._release_slot(peer, now)

    def _release_slot(self, peer: Any, now: float) -> None:
        """An exchange with ``peer`` stopped counting against NSTART: send the next."""
        q = self._queued.get(peer)
        if q:
            nxt = q.popleft()
            if not q:
                del self._queued[peer]
            self._transmit(nxt, now)
        else:
            n = self._inflight[peer] - 1
            if n:
                self._inflight[peer] = n
            else:
                del self._inflight[peer]

    def _schedule(self, ex: Exchange, when: float) -> None:
        """Make ``when`` the exchange's one live timer (see :mod:`.timers`)."""
        if when < self.new_due:
            self.new_due = when
        self._timers.schedule(ex, when)

    def next_deadline(self) -> float | None:
        """When ``expire`` must next be called (None: nothing pending)."""
        first = self._timers.next_due()
        d = self.dedup.next_expiry()
        if d is not None and (first is None or d < first):
            first = d
        return first

    def expire(self, now: float) -> list[TimedOut]:
        """Retransmit what is due, end exchanges past their deadline, age the dedup cache."""
        events = []
        # an exchange started by one that finished here may be due already:
        # look again until nothing more is due
        while due := self._timers.pop_due(now):
            for ex in due:
                if ex.state is DONE or ex.due_key != NOT_SCHEDULED:
                    continue  # finished, or rescheduled by an earlier one of this turn
                if ex.deadline <= now:
                    if not ex.con and ex.__class__ is ReplyExchange:
                        # a NON notification's RST window closed
                        self._finish(ex, now, TIMEOUT)
                        continue
                    self.stats["timeouts"] += 1
                    self._finish(ex, now, TIMEOUT)
                    events.append(_new(TimedOut, (ex,)))
                elif ex.state is SENT and ex.con and ex.next_retransmit <= now:
                    if ex.retransmits < self.params.max_retransmit:
                        ex.retransmits += 1
                        ex.interval *= 2
                        ex.next_retransmit = nr = now + ex.interval
                        self.stats["retransmissions"] += 1
                        self.outbox.append((ex.datagram, ex.peer))
                        self._schedule(ex, nr if nr < ex.deadline else ex.deadline)
                    else:
                        # §4.2: the timeout fired with the counter at MAX_RETRANSMIT:
                        # give up (at MAX_TRANSMIT_WAIT from the first transmission)
                        self.stats["timeouts"] += 1
                        self._finish(ex, now, TIMEOUT)
                        events.append(_new(TimedOut, (ex,)))
                else:  # ACKed (no more retransmissions) or queued: wait for the deadline
                    self._schedule(ex, ex.deadline)
        notes = self._non_notes
        while notes and notes[0].state is DONE:
            notes.popleft()
        self.dedup.expire(now)
        return events

    def pending(self) -> int:
        """Number of client exchanges not yet finished (for leak checks)."""
        return len(self._by_token)

    def table_sizes(self) -> dict[str, int]:
        """Sizes of every internal table (all 0 for an idle endpoint whose
        deduplication entries expired: no leaks)."""
        return {
            "by_token": len(self._by_token),
            "by_mid": len(self._by_mid),
            "inflight": len(self._inflight),
            "queued": len(self._queued),
            "deadlines": self._timers.live(),
            **self.dedup.table_sizes(),
            "non_notifications": len(self._non_notes),
        }

    # -- receiving ----------------------------------------------------
    def receive(self, data: bytes, peer: Any, now: float) -> Event | None:
        """Process one datagram; return an event (:mod:`.events`) or None (see
        :meth:`receive_py`; a request's common case in C when built)."""
        if _receive_c is not None:
            got = _receive_c(self.dedup, data, peer, now, RequestReceived)
            if got is not None:
                if got.__class__ is RequestReceived:
                    return self._new_request(got)
                return self._copy(got[0], peer, got[1])
        return self.receive_py(data, peer, now)

    def receive_py(self, data: bytes, peer: Any, now: float) -> Event | None:
        """Process one datagram; return an event (:mod:`.events`) or None.

        :class:`RequestReceived` for a new request; :class:`ResponseReceived`,
        :class:`NotificationReceived`, :class:`Acknowledged` or
        :class:`ResetReceived` for an exchange of ours.  Datagrams to answer with (ACK, RST, cached
        responses) are appended to ``outbox``.
        """
        try:
            msg = Message.decode(data)
        except MessageFormatError:
            self.stats["malformed"] += 1
            # §4.2/§4.3: reject a malformed CON with RST if we can read its header
            if len(data) >= 4 and data[0] >> 4 == 0b0100:  # version 1, CON
                self._rst(int.from_bytes(data[2:4], "big"), peer, now)
            return None
        code = msg.code
        mtype = msg.mtype
        if 1 <= code < 32:  # a request
            if mtype >= ACK:
                self.stats["malformed"] += 1  # §4.2/§4.3: requests travel in CON/NON only
                if mtype == ACK:
                    self._rst(msg.mid, peer, now)
                return None
            return self._incoming_request(msg, peer, now)
        if code == 0:  # empty message
            if mtype == CON:
                self.stats["pings"] += 1
                self._rst(msg.mid, peer, now)
                return None
            if mtype == NON:
                self.stats["malformed"] += 1
                return None
            ex = self._by_mid.get((peer, msg.mid))
            if ex is None or ex.state is DONE:
                self.stats["unexpected"] += 1  # an ACK or RST for nothing of ours
                return None
            if mtype == RST:
                self.stats["resets_received"] += 1
                self._finish(ex, now, RESET)
                return _new(ResetReceived, (ex,))
            if ex.__class__ is ReplyExchange:  # our CON response or notification was ACKed
                self.stats["responses_acked"] += 1
                self._finish(ex, now, _ACKNOWLEDGED)
                return _new(Acknowledged, (ex,))
            # empty ACK: separate response follows (§5.2.2)
            if ex.state is SENT:
                ex.state = ACKED
                ex.next_retransmit = float("inf")
            return None
        if code < 64:
            self.stats["malformed"] += 1  # reserved classes 1.xx
            if mtype == CON:
                self._rst(msg.mid, peer, now)
            return None
        # a response
        ex = self._by_token.get((peer, msg.token))
        if mtype == ACK:
            if ex is None or ex.mid != msg.mid:
                by_mid = self._by_mid.get((peer, msg.mid))
                if by_mid is not None and by_mid.token != msg.token:
                    # §5.3.2: a piggybacked response must echo the token
                    self.stats["unexpected"] += 1
                    return None
            if ex is None:
                self.stats["unexpected"] += 1
                return None
        elif mtype == CON:
            # a separate response (a reused MID with another token is a new one:
            # a server sharing one MID counter among its peers wrapped)
            entry = self._admit(peer, msg.mid, True, now, msg.token)
            if entry is not None:
                # §4.5: a retransmitted separate response (our ACK was lost): ACK again
                self.stats["duplicates"] += 1
                if entry.response is not None:
                    self.outbox.append((entry.response, peer))
                return None
            if ex is None:
                self.stats["unexpected"] += 1
                self.dedup.drop(peer, msg.mid)
                self._rst(msg.mid, peer, now)
                return None
            self.dedup.get(peer, msg.mid).response = ack = empty_ack(msg.mid)
            self.outbox.append((ack, peer))
        elif mtype == NON:
            if ex is None:
                self.stats["unexpected"] += 1
                if msg.has_option(_OBSERVE):
                    self._rst(msg.mid, peer, now)  # RFC 7641 §3.6: a notification we don't want
                return None
        else:  # RST with a code: malformed (§4.3 says RST is empty)
            self.stats["malformed"] += 1
            return None
        if ex.state is OBSERVING:
            if mtype == ACK:  # RFC 7641: notifications come as CON or NON; a stray ACK
                self.stats["unexpected"] += 1  # (e.g. the registration's, again) is ignored
                return None
            self.stats["notifications"] += 1
            if not (is_success(code) and msg.has_option(_OBSERVE)):
                self._finish(ex, now, _RESPONSE, msg)  # a final one ends the observation
            return _new(NotificationReceived, (ex, msg))
        self.stats["responses_received"] += 1
        if ex.observe and is_success(code) and msg.has_option(_OBSERVE):
            self._registered(ex, msg, now)
        else:
            self._finish(ex, now, _RESPONSE, msg)
        return _new(ResponseReceived, (ex,))

    def _registered(self, ex: RequestExchange, msg: Message, now: float) -> None:
        """An Observe registration succeeded: keep the token, release the rest."""
        peer = ex.peer
        ex.result = msg
        ex.state = OBSERVING
        self._timers.cancel(ex)  # its timer goes
        ex.next_retransmit = INF
        if self._by_mid.get((peer, ex.mid)) is ex:
            del self._by_mid[(peer, ex.mid)]
        self._release_slot(peer, now)

    def _incoming_request(self, msg: Message, peer: Any, now: float) -> RequestReceived | None:
        # a reused MID with another token (the peer's MIDs wrapped within
        # EXCHANGE_LIFETIME) is a new request, not a copy of the old one
        entry = self.dedup.admit(peer, msg.mid, msg.mtype == CON, now, msg.token)
        if entry is None:  # new: remembered from now on
            return self._new_request(_new(RequestReceived, (msg, peer)))
        return self._copy(msg, peer, entry)

    def _new_request(self, event: RequestReceived) -> RequestReceived:
        """A new request, admitted into the dedup cache: count it."""
        dedup = self.dedup
        if dedup.next_due < self.new_due:
            self.new_due = dedup.next_due  # the endpoint's timer must come earlier
        self.stats["requests_received"] += 1
        return event

    def _copy(self, msg: Message, peer: Any, entry: DedupEntry) -> None:
        """A copy of a request still remembered (``entry``): its cached
        response again, an empty ACK while it is handled, or a note to send
        it the response when ready."""
        self.stats["duplicates"] += 1
        if entry.response is not None:
            self.outbox.append((entry.response, peer))
        elif entry.running:
            if msg.mtype == CON:
                self._ack(msg.mid, peer)  # still being handled: stop the retransmissions
        elif entry.dups < 2:
            entry.dups += 1  # not started yet: it gets the response when ready
        return None

    def _admit(self, peer: Any, mid: int, con: bool, now: float, token: bytes) -> DedupEntry | None:
        """Deduplicate (§4.5): the entry ``mid`` is a copy of, or None (new, remembered)."""
        dedup = self.dedup
        entry = dedup.admit(peer, mid, con, now, token)
        if dedup.next_due < self.new_due:
            self.new_due = dedup.next_due
        return entry

    def forget_request(self, request: Message, peer: Any) -> None:
        """Stop deduplicating ``request`` (it was never handled: a bug above
        dropped it), so that its retransmission is taken as new."""
        entry = self.dedup.get(peer, request.mid)
        if entry is not None and entry.response is None and not entry.running:
            self.dedup.drop(peer, request.mid)

    def started(self, request: Message, peer: Any) -> None:
        """The request is now being handled: a duplicate of it gets an empty ACK."""
        entry = self.dedup.get(peer, request.mid)
        if entry is not None:
            entry.running = True

    def acknowledge(self, request: Message, peer: Any) -> None:
        """Send an empty ACK for a CON request whose handler is slow (§5.2.2).

        Its response will then go as a separate CON (see :meth:`respond`);
        duplicates of the request meanwhile get the empty ACK again.
        """
        if request.mtype != CON:
            return
        entry = self.dedup.get(peer, request.mid)
        if entry is None or entry.response is not None:
            return
        entry.separated = True
        entry.response = ack = empty_ack(request.mid)
        self.outbox.append((ack, peer))
        self.stats["separate_acks"] += 1

    def notify(self, peer: Any, msg: Message, confirmable: bool, now: float) -> ReplyExchange:
        """Send a notification (RFC 7641, server role) with its own MID.

        A CON is retransmitted until ACKed; its exchange ends with an
        :class:`Acknowledged` event, or with :class:`TimedOut` or
        :class:`ResetReceived` when the observer is gone.  A NON is remembered for a while (at most
        ``non_notify_window`` seconds, and the last ``non_notify_cap`` NON
        notifications of the endpoint) so that an RST to it (the client
        rejecting it, §3.6) comes back as :class:`ResetReceived`: that state stays
        bounded however fast notifications go.  The caller sets
        ``exchange.waiter`` to receive those events.
        """
        msg.mtype = CON if confirmable else NON
        if confirmable:
            life = self.params.max_transmit_wait
        else:
            life = min(self.params.non_lifetime, self.non_notify_window)
        ex = ReplyExchange(peer, msg.token, confirmable, now + life)
        ex.datagram = msg
        self._transmit(ex, now)
        self.stats["notifications_sent"] += 1
        if not confirmable:
            notes = self._non_notes
            notes.append(ex)
            if len(notes) > self.non_notify_cap:
                old = notes.popleft()
                if old.state is not DONE:
                    self._finish(old, now, TIMEOUT)  # its RST window closes early
        return ex

    def replace_notification(self, ex: ReplyExchange, msg: Message, now: float) -> None:
        """Put a newer notification in place of the CON notification ``ex``
        still being retransmitted (RFC 7641 §4.5.2: one CON notification in
        flight per observer, carrying the current state).  It keeps ``ex``'s
        retransmission schedule and gets a new MID (a receiver that saw the
        older one must not take the newer for a duplicate); the older MID's
        late ACK no longer counts."""
        if ex.state is DONE or not ex.con or ex.__class__ is not ReplyExchange:
            raise ValueError("only a CON notification still in flight can be replaced")
        peer = ex.peer
        if self._by_mid.get((peer, ex.mid)) is ex:
            del self._by_mid[(peer, ex.mid)]
        mid = self.next_mid(peer)
        msg.mtype = CON
        msg.mid = ex.mid = mid
        ex.datagram = encode_message(msg)
        self._by_mid[(peer, mid)] = ex
        self.stats["notifications_replaced"] += 1

    def respond(self, request: Message, peer: Any, response: Message, now: float) -> bytes:
        """Encode ``response`` to ``request`` (see :meth:`respond_py`; the common
        case in C when built)."""
        if _respond_c is not None:
            data = _respond_c(self.dedup, self.outbox, request, peer, response, self.next_mid)
            if data is not None:
                return data
        return self.respond_py(request, peer, response, now)

    def respond_py(self, request: Message, peer: Any, response: Message, now: float) -> bytes:
        """Encode ``response`` to ``request``: piggybacked on the ACK for a CON,
        as a NON for a NON.  The bytes go to ``outbox`` (then a copy for each
        duplicate that arrived before the request was handled), are cached
        for later duplicates, and are returned (for inspection).

        When the request was already acknowledged empty (:meth:`acknowledge`),
        the response becomes a CON of its own, retransmitted until ACKed: its
        first transmission goes to ``outbox`` and ``b""`` is returned.
        """
        response.token = request.token
        entry = self.dedup.get(peer, request.mid)
        if entry is not None and entry.separated:
            response.mtype = CON
            ex = ReplyExchange(peer, request.token, True, now + self.params.max_transmit_wait)
            ex.datagram = response
            self._transmit(ex, now)
            self.stats["separate_responses"] += 1
            return b""
        if request.mtype == CON:
            response.mtype = ACK
            response.mid = request.mid
        else:
            response.mtype = NON
            response.mid = self.next_mid(peer)
        data = response.encode()
        outbox = self.outbox
        outbox.append((data, peer))
        if entry is not None:
            entry.response = data
            for _ in range(entry.dups):  # copies that came before it was handled
                outbox.append((data, peer))
        return data

    def _ack(self, mid: int, peer: Any) -> None:
        self.outbox.append((empty_ack(mid), peer))

    def _rst(self, mid: int, peer: Any, now: float) -> None:
        """Queue an RST for ``mid`` to ``peer``, unless that peer used up its
        RST budget: a reflector (a UDP echo service, a spoofed source) must not
        be able to ping-pong with us, so RSTs to one peer are held to
        ``rst_rate`` per second (``rst_burst`` at most); the rest are counted
        as ``rst_suppressed``."""
        if not self._rst_buckets.allow(peer, now):
            self.stats["rst_suppressed"] += 1
            return
        self.stats["rst_sent"] += 1
        self.outbox.append((bytes((0x70, 0, mid >> 8, mid & 0xFF)), peer))


def empty_ack(mid: int) -> bytes:
    """The 4 bytes of an empty ACK for ``mid``."""
    return bytes((0x60, 0, mid >> 8, mid & 0xFF))


__all__ = [
    "TransmissionParameters",
    "MessageLayer",
    "Exchange",
    "RequestExchange",
    "ReplyExchange",
    "Outcome",
    "RESET",
    "TIMEOUT",
    "QUEUED",
    "SENT",
    "ACKED",
    "OBSERVING",
    "DONE",
    "empty_ack",
]
