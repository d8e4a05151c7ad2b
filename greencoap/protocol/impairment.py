"""A simulated bad network for one endpoint (layer 2, no I/O): datagram
loss in either direction and being offline.

Device fleets (:mod:`greencoap.fleet`) use it for fault injection; tests
may use it to try retransmission against a lossy link.  An endpoint with an
:class:`Impairment` passes each batch it receives through :meth:`inbound`
and each batch it sends through :meth:`outbound`; what they leave out is
lost as if on the wire (the message layer retransmits as it would).
Counters are in :attr:`Impairment.stats`.
"""

from __future__ import annotations

import random

__all__ = ["Impairment"]


class Impairment:
    """Lose ``loss_in`` of received and ``loss_out`` of sent datagrams (0..1);
    while :attr:`offline`, lose all of both."""

    __slots__ = ("loss_in", "loss_out", "offline", "rng", "stats")

    def __init__(
        self,
        loss_in: float = 0.0,
        loss_out: float = 0.0,
        *,
        offline: bool = False,
        rng: random.Random | None = None,
    ) -> None:
        for name, rate in (("loss_in", loss_in), ("loss_out", loss_out)):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} is a fraction between 0 and 1, not {rate}")
        self.loss_in = loss_in
        self.loss_out = loss_out
        self.offline = offline
        self.rng = rng or random.Random()
        self.stats = {"lost_in": 0, "lost_out": 0}

    @property
    def active(self) -> bool:
        """True when it loses anything at all."""
        return self.offline or self.loss_in > 0.0 or self.loss_out > 0.0

    def inbound(self, batch: list) -> list:
        """The part of a received batch that gets through."""
        return self._filter(batch, self.loss_in, "lost_in")

    def outbound(self, batch: list) -> list:
        """The part of a batch to send that gets through."""
        return self._filter(batch, self.loss_out, "lost_out")

    def _filter(self, batch: list, rate: float, counter: str) -> list:
        if self.offline or rate >= 1.0:
            self.stats[counter] += len(batch)
            return []
        if rate <= 0.0:
            return batch
        rnd = self.rng.random
        kept = [item for item in batch if rnd() >= rate]
        self.stats[counter] += len(batch) - len(kept)
        return kept
