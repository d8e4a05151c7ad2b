"""Block-wise transfers, server side, as sans-I/O state machines (layer 2; RFC 7959).

* :class:`Block1Assembler` collects request bodies that clients upload in
  Block1 blocks (RFC 7959 §2.5), one partial body per key (the server picks
  the key, e.g. peer + method + URI + Request-Tag). Each block gets an answer
  the server turns into a response:

  ============================  ============================================
  ``("continue", Block)``       2.31 Continue with that Block1 (§2.5, §2.9.1)
  ``("complete", body)``        run the handler on the whole body
  ``("incomplete", None)``      4.08 Request Entity Incomplete (§2.9.2)
  ``("too_large", max_size)``   4.13 Request Entity Too Large, Size1 = max (§2.9.3, §4)
  ``("busy", None)``            5.03 Service Unavailable: the server-wide
                                memory cap for partial uploads is reached
  ============================  ============================================

* :class:`Block2Cache` keeps response bodies rendered for a Block2 transfer
  (§2.4) so that the requests for blocks 1, 2, … are answered from the same
  representation, under the same ETag, without running the handler again
  (§2.4 recommends an ETag so that clients notice a changed representation).
* :func:`block_of` cuts one Block2 block out of a body (§2.2, §2.4).

Nothing here reads a clock: every call that depends on time takes ``now``
(seconds, any monotonic origin) and :meth:`~Block1Assembler.next_deadline`
tells the caller when to call ``expire(now)`` next. Both stores are ordered
dicts kept in last-touched order, so expiry and eviction only look at the
oldest entries.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Final

from ..options import Block, OptionNumber, encode_uint
from .blockwise import BlockwiseError, BodyTooLargeError

__all__ = [
    "Block1Assembler",
    "Block2Cache",
    "BlockwiseError",
    "BodyTooLargeError",
    "BUSY",
    "COMPLETE",
    "CONTINUE",
    "INCOMPLETE",
    "TOO_LARGE",
    "block2_options",
    "block_of",
    "follow_up_options",
]

#: the options a block-wise response gets from the server, never from the handler
BLOCK2_OWN = frozenset({int(OptionNumber.BLOCK2), int(OptionNumber.SIZE2), int(OptionNumber.ETAG)})
_OBSERVE = int(OptionNumber.OBSERVE)

CONTINUE: Final = "continue"
COMPLETE: Final = "complete"
INCOMPLETE: Final = "incomplete"
TOO_LARGE: Final = "too_large"
BUSY: Final = "busy"


class _Upload:
    """One Block1 upload in progress (the only per-key state)."""

    __slots__ = ("body", "last_offset", "szx", "touched")

    def __init__(self, szx: int, now: float) -> None:
        self.body = bytearray()
        #: offset of the last stored block; ``body[last_offset:]`` is its payload,
        #: which is how a retransmitted copy is recognised without keeping it twice
        self.last_offset = 0
        #: SZX of the last stored block; later blocks may only use it or a smaller one
        self.szx = szx
        #: ``now`` of the last block accepted; the upload expires ``upload_timeout`` later
        self.touched = now


class Block1Assembler:
    """Server side of Block1 uploads (RFC 7959 §2.5): one partial body per key.

    Blocks must arrive in order (this server stores one contiguous partial
    body per key, as §2.5 allows: "the server may ... only accept blocks in
    order"). Rules, checked in this order for each :meth:`feed`:

    1. A block whose payload does not fit its Block1 value (``more`` set and
       the payload is not exactly ``block.size`` bytes, or any payload longer
       than ``block.size``) cannot be placed: ``("incomplete", None)``, and
       the key's upload is dropped.
    2. ``size1`` (the announced total, §4) above ``max_body_size``:
       ``("too_large", max_body_size)`` before anything is stored.
    3. A retransmitted copy of the last stored block (same offset, same
       payload, ``more`` set) answers ``("continue", …)`` again and appends
       nothing. (A copy of the *final* block arrives after the upload is
       forgotten; the message layer's duplicate detection answers those.)
    4. Block 0 always (re)starts the upload: a client that starts over, for
       instance after a 4.08, is not punished for the partial body it left.
    5. A block numbered above 0 must continue the stored body exactly: its
       offset equals the bytes received so far and its SZX is the stored one
       or smaller (late negotiation, §2.5). Anything else (a gap, an overlap,
       a larger block size, no upload in progress) is ``("incomplete", None)``
       and the key's partial body is discarded (§2.9.2).
    6. A body that would grow past ``max_body_size`` is
       ``("too_large", max_body_size)`` and is discarded.
    7. A block that would be *held* (``more`` set) while pushing :attr:`memory`
       past ``memory_cap`` is ``("busy", None)`` — a 5.03 rather than a 4.13,
       because the body is acceptable, the server is just full right now. The
       key's partial body is discarded too, so that its memory goes to
       uploads that can still finish; the client starts over later.
    8. A block with ``more`` unset completes the body: ``("complete", body)``
       and the upload is forgotten. The final block is never held, so the
       memory cap does not apply to it (nor to a single-block upload).

    An upload left idle for ``upload_timeout`` seconds expires: :meth:`expire`
    drops it (and :meth:`feed` treats a stale upload as already gone).
    """

    def __init__(
        self,
        max_body_size: int = 1 << 20,
        memory_cap: int = 64 << 20,
        upload_timeout: float = 60.0,
    ) -> None:
        if max_body_size < 0 or memory_cap < 0 or upload_timeout <= 0:
            raise ValueError("max_body_size and memory_cap must be >= 0, upload_timeout > 0")
        self.max_body_size = max_body_size
        self.memory_cap = memory_cap
        self.upload_timeout = upload_timeout
        #: bytes of partial bodies held now (the sum over uploads in progress)
        self.memory = 0
        #: counters; "started" counts block 0s that began an upload (restarts too)
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "started",
                "completed",
                "incomplete",
                "too_large",
                "expired",
                "memory_refused",
                "duplicates",
                "restarted",
            ),
            0,
        )
        # key -> upload, least recently touched first
        self._uploads: OrderedDict[tuple, _Upload] = OrderedDict()

    def __len__(self) -> int:
        """Uploads in progress."""
        return len(self._uploads)

    def __contains__(self, key: object) -> bool:
        return key in self._uploads

    def feed(
        self, key: tuple, block: Block, payload: bytes, size1: int | None, now: float
    ) -> tuple[str, object]:
        """Take one Block1 block of the upload ``key``; say how to answer it.

        ``block`` is the request's Block1 value, ``payload`` its payload and
        ``size1`` its Size1 option (None when absent). Returns one of
        ``("continue", Block)``, ``("complete", bytes)``, ``("incomplete", None)``,
        ``("too_large", max_body_size)`` or ``("busy", None)``; see the class
        docstring for the rules.
        """
        size = block.size
        n = len(payload)
        upload = self._uploads.get(key)
        if upload is not None and now >= upload.touched + self.upload_timeout:
            self._drop(key, upload)
            self.stats["expired"] += 1
            upload = None

        if n > size or (block.more and n != size):
            return self._refuse(key, upload, INCOMPLETE, None)
        if size1 is not None and size1 > self.max_body_size:
            return self._refuse(key, upload, TOO_LARGE, self.max_body_size)

        offset = block.offset
        if upload is not None:
            if (
                block.more
                and offset == upload.last_offset
                and len(upload.body) - offset == n
                and memoryview(upload.body)[offset:] == payload
            ):
                self.stats["duplicates"] += 1
                upload.touched = now
                self._uploads.move_to_end(key)
                return CONTINUE, Block(block.num, True, block.szx)
            if block.num == 0:
                self._drop(key, upload)
                self.stats["restarted"] += 1
                upload = None
            elif offset != len(upload.body) or block.szx > upload.szx:
                return self._refuse(key, upload, INCOMPLETE, None)
        elif block.num != 0:
            self.stats["incomplete"] += 1
            return INCOMPLETE, None

        held = len(upload.body) if upload is not None else 0
        if held + n > self.max_body_size:
            return self._refuse(key, upload, TOO_LARGE, self.max_body_size)

        if not block.more:
            if upload is None:
                self.stats["started"] += 1
                body = bytes(payload)
            else:
                self._drop(key, upload)
                upload.body += payload
                body = bytes(upload.body)
            self.stats["completed"] += 1
            return COMPLETE, body

        if self.memory + n > self.memory_cap:
            if upload is not None:
                self._drop(key, upload)
            self.stats["memory_refused"] += 1
            return BUSY, None

        if upload is None:
            upload = self._uploads[key] = _Upload(block.szx, now)
            self.stats["started"] += 1
        else:
            self._uploads.move_to_end(key)
        upload.last_offset = offset
        upload.szx = block.szx
        upload.touched = now
        upload.body += payload
        self.memory += n
        return CONTINUE, Block(block.num, True, block.szx)

    def expire(self, now: float) -> int:
        """Drop uploads idle for ``upload_timeout`` seconds or more; return how many.

        "Or more" (not "more than") so that calling this at exactly
        :meth:`next_deadline` always makes progress.
        """
        count = 0
        timeout = self.upload_timeout
        uploads = self._uploads
        while uploads:
            key, upload = next(iter(uploads.items()))
            if now < upload.touched + timeout:  # the sum next_deadline() gives: no rounding gap
                break
            self._drop(key, upload)
            count += 1
        self.stats["expired"] += count
        return count

    def next_deadline(self) -> float | None:
        """When the oldest upload expires (None when there is none)."""
        for upload in self._uploads.values():
            return upload.touched + self.upload_timeout
        return None

    def _drop(self, key: tuple, upload: _Upload) -> None:
        del self._uploads[key]
        self.memory -= len(upload.body)

    def _refuse(
        self, key: tuple, upload: _Upload | None, verdict: str, value: object
    ) -> tuple[str, object]:
        if upload is not None:
            self._drop(key, upload)
        self.stats[verdict] += 1
        return verdict, value


def _etag_of(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=8).digest()


class _Rendered:
    """One cached response body."""

    __slots__ = ("body", "deadline", "etag", "extra")

    def __init__(self, body: bytes, etag: bytes, extra: object, deadline: float) -> None:
        self.body = body
        self.etag = etag
        self.extra = extra
        self.deadline = deadline


class Block2Cache:
    """Keeps rendered response bodies so follow-up Block2 requests don't re-run the handler (§2.4).

    The server renders a body once, :meth:`put`\\ s it under a key of its
    choosing (e.g. peer + URI + the request's cache-key options) and answers
    every block from :meth:`get`, with the ETag :meth:`put` returned. An entry
    lives ``lifetime`` seconds from its ``put`` (reads do not extend it, so a
    slow client eventually sees a fresh representation, with a new ETag if it
    changed). When the bodies held would pass ``memory_cap`` the oldest
    entries are evicted first; a body larger than ``memory_cap`` on its own is
    not stored at all (:meth:`put` still returns its ETag; :meth:`get` then
    misses and the server renders again).

    ETags are the first 8 bytes of the BLAKE2b hash of the body: distinct
    bodies get distinct ETags (up to a 2**-64 chance of collision) and an
    identical body gets the *same* ETag again, under any key. That keeps a
    Block2 transfer going when its entry expired mid-transfer and the handler
    rendered the same representation again, instead of failing the client's
    ETag check (§2.4). The ETag covers the body only, not ``extra``.
    """

    def __init__(self, lifetime: float = 60.0, memory_cap: int = 64 << 20) -> None:
        if lifetime <= 0 or memory_cap < 0:
            raise ValueError("lifetime must be > 0 and memory_cap >= 0")
        self.lifetime = lifetime
        self.memory_cap = memory_cap
        #: bytes of bodies held now
        self.memory = 0
        #: counters; "refused" counts bodies larger than ``memory_cap``, never stored
        self.stats: dict[str, int] = dict.fromkeys(
            ("stored", "hits", "misses", "expired", "evicted", "refused"), 0
        )
        # key -> entry, oldest put first (deadlines ascend as long as `now` does)
        self._entries: OrderedDict[tuple, _Rendered] = OrderedDict()

    def __len__(self) -> int:
        """Bodies held."""
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def put(
        self, key: tuple, body: bytes, extra: object, now: float, etag: bytes | None = None
    ) -> bytes:
        """Store ``body`` (and the caller's ``extra``, e.g. content format) under ``key``.

        Replaces an older entry for ``key``. Returns the body's ETag: ``etag``
        when the caller has one (the handler's own: then the body is not
        hashed), else the 8-byte hash described above.
        """
        if body.__class__ is not bytes:
            body = bytes(body)
        if etag is None:
            etag = _etag_of(body)
        old = self._entries.pop(key, None)
        if old is not None:
            self.memory -= len(old.body)
        n = len(body)
        if n > self.memory_cap:
            self.stats["refused"] += 1
            return etag
        entries = self._entries
        while entries and self.memory + n > self.memory_cap:
            _, oldest = entries.popitem(last=False)
            self.memory -= len(oldest.body)
            self.stats["evicted"] += 1
        entries[key] = _Rendered(body, etag, extra, now + self.lifetime)
        self.memory += n
        self.stats["stored"] += 1
        return etag

    def get(self, key: tuple, now: float) -> tuple[bytes, bytes, object] | None:
        """``(body, etag, extra)`` stored under ``key``, or None if absent or expired.

        Refreshes nothing: the entry's lifetime still counts from its :meth:`put`.
        """
        entry = self._entries.get(key)
        if entry is None:
            self.stats["misses"] += 1
            return None
        if now >= entry.deadline:
            del self._entries[key]
            self.memory -= len(entry.body)
            self.stats["expired"] += 1
            self.stats["misses"] += 1
            return None
        self.stats["hits"] += 1
        return entry.body, entry.etag, entry.extra

    def expire(self, now: float) -> int:
        """Drop entries whose lifetime is over (``now >= put time + lifetime``); return how many."""
        count = 0
        entries = self._entries
        while entries:
            key, entry = next(iter(entries.items()))
            if now < entry.deadline:
                break
            del entries[key]
            self.memory -= len(entry.body)
            count += 1
        self.stats["expired"] += count
        return count

    def next_deadline(self) -> float | None:
        """When the oldest entry expires (None when the cache is empty)."""
        for entry in self._entries.values():
            return entry.deadline
        return None


def block_of(body: bytes, num: int, szx: int) -> tuple[bytes, Block] | None:
    """Block ``num`` of ``body`` at block size ``2 ** (szx + 4)`` (RFC 7959 §2.2, §2.4).

    Returns the payload and the Block2 value to send with it (``more`` set
    while bytes remain after this block), or None when the block starts past
    the end of the body. An empty body has one block, block 0, with an empty
    payload and ``more`` unset; a body of exactly k blocks has blocks 0…k-1.

    RFC 7959 names no response code for a request of a block past the end;
    greencoap answers 4.02 Bad Option (RFC 7252 §5.9.2.3: the Block2 value
    cannot be honoured), so a None here means "answer 4.02".
    """
    if not 0 <= szx <= 6:
        raise ValueError(f"block SZX out of range 0..6: {szx}")
    if num < 0:
        raise ValueError(f"block number must not be negative: {num}")
    size = 1 << (szx + 4)
    start = num * size
    total = len(body)
    if start >= total and not (num == 0 and total == 0):
        return None
    end = start + size
    return body[start:end], Block(num, end < total, szx)


def block2_options(options: list, etag: bytes, block: Block, size: int) -> list:
    """The options of one block of a block-wise response: the handler's
    ``options`` without the server's own (ETag, Block2, Size2), then the
    representation's ETag, the Block2 value and the whole body's Size2
    (RFC 7959 §2.2, §4)."""
    out = [o for o in options if o[0] not in BLOCK2_OWN]
    out += [
        (int(OptionNumber.ETAG), etag),
        (int(OptionNumber.BLOCK2), block.to_bytes()),
        (int(OptionNumber.SIZE2), encode_uint(size)),
    ]
    return out


def follow_up_options(options: list) -> list:
    """The options kept with a cached body for its later blocks: those follow-up
    requests are plain GETs, so no Observe (RFC 7641 §3.1) and none of the
    server's own block-wise options."""
    return [o for o in options if o[0] not in BLOCK2_OWN and o[0] != _OBSERVE]
