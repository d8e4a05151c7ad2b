"""Block-wise transfers, client side, as sans-I/O state machines (layer 2; RFC 7959).

* :class:`Block2Assembler` reassembles a response body from Block2 blocks
  (§2.4): it checks that blocks arrive in order, that the ETag stays the same
  across blocks (§2.4: a changed representation must not be mixed) and that
  the body stays under a size cap (honouring Size2 early), and says which
  block to ask for next.
* :class:`Block1Uploader` cuts a request body into Block1 blocks (§2.5) and
  follows the server: 2.31 Continue moves on, a smaller SZX in the server's
  Block1 renegotiates the block size (§2.5, late negotiation), 4.13 Request
  Entity Too Large carrying a Block1 with a smaller size restarts with those
  blocks (§2.9.3; Size1 alone limits the whole body, so that 4.13 is final),
  and any other response is the final one.

Neither touches the network: the client feeds them responses and sends the
requests they describe.
"""

from __future__ import annotations

from ..codes import Code
from ..errors import CoapError
from ..message import Message
from ..options import Block, size_to_szx

__all__ = [
    "BlockwiseError",
    "BodyTooLargeError",
    "RepresentationChangedError",
    "Block2Assembler",
    "Block1Uploader",
    "szx_for",
]


class BlockwiseError(CoapError):
    """A block-wise transfer broke: blocks out of order, ETag changed, bad SZX…"""


class BodyTooLargeError(BlockwiseError):
    """The (announced or received) body exceeds the configured maximum."""


class RepresentationChangedError(BlockwiseError):
    """A later block carried another ETag: the resource changed mid-transfer."""


def szx_for(block_size: int) -> int:
    """SZX for a block size of 16…1024 bytes (a power of two)."""
    return size_to_szx(block_size)


class Block2Assembler:
    """Collects the blocks of one response body (RFC 7959 §2.4)."""

    def __init__(self, max_body_size: int) -> None:
        self.max_body_size = max_body_size
        self.body = bytearray()
        self.etag: bytes | None = None
        self.szx: int | None = None
        self.blocks = 0

    def feed(self, response: Message) -> Block | None:
        """Add one response; return the Block2 value to request next, or None when complete.

        Raises :class:`BlockwiseError` for an out-of-order block or a changed
        ETag and :class:`BodyTooLargeError` past ``max_body_size``.
        """
        block = response.block2
        payload = response.payload
        if block is None:
            if self.blocks:
                raise BlockwiseError("a block-wise response continued without a Block2 option")
            self._append(payload)
            return None
        size2 = response.size2
        if size2 is not None and size2 > self.max_body_size:
            raise BodyTooLargeError(
                f"the server announces {size2} bytes (Size2), over max_body_size "
                f"{self.max_body_size}"
            )
        etag = response.etag
        if self.blocks == 0:
            self.etag = etag
        elif etag != self.etag:
            raise RepresentationChangedError(
                "the resource changed during a block-wise transfer (ETag)"
            )
        if block.offset != len(self.body):
            raise BlockwiseError(
                f"block {block.num} (offset {block.offset}) does not follow the "
                f"{len(self.body)} bytes received"
            )
        if block.more and len(payload) != block.size:
            raise BlockwiseError(
                f"block {block.num} carries {len(payload)} bytes, not its size {block.size}"
            )
        self._append(payload)
        self.blocks += 1
        if not block.more:
            return None
        # keep the server's (possibly smaller) size; the next block starts where we are
        self.szx = block.szx
        return Block(len(self.body) // block.size, False, block.szx)

    def _append(self, payload: bytes) -> None:
        if len(self.body) + len(payload) > self.max_body_size:
            raise BodyTooLargeError(f"the response body exceeds max_body_size {self.max_body_size}")
        self.body += payload


class Block1Uploader:
    """Sends one request body block by block (RFC 7959 §2.5)."""

    def __init__(self, body: bytes, szx: int) -> None:
        if not 0 <= szx <= 6:
            raise ValueError("SZX must be 0..6")
        self.body = body
        self.szx = szx
        self.offset = 0
        self.restarts = 0

    @property
    def size(self) -> int:
        return 1 << (self.szx + 4)

    def current(self) -> tuple[Block, bytes]:
        """The Block1 value and payload of the block to send now."""
        size = self.size
        chunk = self.body[self.offset : self.offset + size]
        more = self.offset + size < len(self.body)
        return Block(self.offset // size, more, self.szx), chunk

    def feed(self, response: Message) -> bool:
        """Process the server's answer to the current block.

        Returns True when another block must be sent (call :meth:`current`),
        False when ``response`` is the final response of the upload.
        """
        code = response.code
        ack = response.block1
        if code == Code.CONTINUE:
            if ack is None:
                raise BlockwiseError("2.31 Continue without a Block1 option")
            sent = self.current()[0]
            if ack.num != sent.num and not (ack.szx < sent.szx):
                raise BlockwiseError(f"2.31 for block {ack.num}, but block {sent.num} was sent")
            self.offset += self.size
            if ack.szx < self.szx:  # late negotiation: continue with smaller blocks
                self.szx = ack.szx
            if self.offset >= len(self.body):
                raise BlockwiseError("2.31 Continue after the last block")
            return True
        if (
            code == Code.REQUEST_ENTITY_TOO_LARGE
            and ack is not None
            and ack.szx < self.szx
            and self.restarts < 6
        ):
            # §2.9.3: the server can take blocks of this size: start over with them
            self.szx = ack.szx
            self.offset = 0
            self.restarts += 1
            return True
        return False
