"""What the plugtest runners see on the wire.

- :class:`RawPeer`: a plain UDP socket that speaks CoAP datagram by datagram
  (run it in a thread with :func:`raw_session`, so that the test's hub keeps
  serving the in-process server);
- :class:`Tap`: a :class:`~tests.lossy.LossyRelay` between a peer and a
  server that records every datagram (and drops some: seeded loss in both
  directions, a predicate, or everything while ``blackhole`` is set);
- :func:`parse_coap_client` and :class:`CoapClient`: libcoap's
  ``coap-client -v 7`` run as a subprocess and its output turned into the
  messages it sent and received (libcoap's own view of the wire);
- :func:`run_async`: an asyncio coroutine (an aiocoap client) in a thread.

Every subprocess started here is stopped by its PID in a ``finally``.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from greencoap import Code, Message, Type

from ..lossy import C2S, S2C, LossyRelay

__all__ = [
    "C2S",
    "S2C",
    "CoapClient",
    "LcMsg",
    "RawPeer",
    "Tap",
    "coap_client",
    "parse_coap_client",
    "raw_session",
    "run_async",
    "uri_options",
]

URI_PATH, URI_QUERY = 11, 15


def uri_options(path: str) -> list[tuple[int, bytes]]:
    """Uri-Path and Uri-Query options for ``"/a/b?x=1&y"``."""
    path, _, query = path.partition("?")
    opts = [(URI_PATH, seg.encode()) for seg in path.strip("/").split("/") if seg]
    opts += [(URI_QUERY, q.encode()) for q in query.split("&") if q]
    return opts


# -- raw datagrams -------------------------------------------------------------


class RawPeer:
    """A CoAP endpoint made of one UDP socket, for scripts that check every byte.

    ``request()`` builds and sends a request (MIDs count up from a random
    start unless given); ``recv()`` returns the next message (decoded),
    ``expect()`` the next one matching a MID and/or token (ACKing CON
    notifications on the way when ``ack`` is set).  ``received`` keeps all.
    """

    def __init__(
        self, port: int, host: str = "127.0.0.1", timeout: float = 3.0, bind_port: int = 0
    ) -> None:
        self.dest = (host, port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", bind_port))
        self.timeout = timeout
        self.mid = random.randrange(0x10000)
        self.received: list[Message] = []
        self.sent: list[Message] = []

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()

    def next_mid(self) -> int:
        self.mid = (self.mid + 1) & 0xFFFF
        return self.mid

    def send(self, msg: Message) -> Message:
        self.sock.sendto(msg.encode(), self.dest)
        self.sent.append(msg)
        return msg

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendto(data, self.dest)

    def request(
        self,
        code: int,
        path: str,
        *,
        mtype: int = Type.CON,
        token: bytes = b"",
        options: list[tuple[int, bytes]] | tuple = (),
        payload: bytes = b"",
        mid: int | None = None,
    ) -> Message:
        opts = uri_options(path) + list(options)
        mid = self.next_mid() if mid is None else mid
        return self.send(Message(mtype, code, mid, token, opts, payload))

    def recv(self, timeout: float | None = None) -> Message:
        """The next datagram, decoded; ``TimeoutError`` when none comes in time."""
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        data, _ = self.sock.recvfrom(65536)
        msg = Message.decode(data)
        self.received.append(msg)
        return msg

    def ack(self, msg: Message) -> None:
        self.send(Message(Type.ACK, Code.EMPTY, msg.mid))

    def rst(self, msg: Message) -> None:
        self.send(Message(Type.RST, Code.EMPTY, msg.mid))

    def expect(
        self,
        *,
        mid: int | None = None,
        token: bytes | None = None,
        timeout: float | None = None,
        ack: bool = True,
    ) -> Message:
        """The next message with this MID (an ACK/RST) or token (a response);
        messages that do not match are kept in ``received`` (CONs ACKed when
        ``ack``)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no message with mid={mid} token={token!r}")
            msg = self.recv(left)
            hit = (mid is None or msg.mid == mid) and (token is None or msg.token == token)
            if mid is not None and token is None and msg.mtype not in (Type.ACK, Type.RST):
                hit = False  # a MID names our message only in an ACK or RST
            if hit:
                return msg
            if ack and msg.mtype == Type.CON:
                self.ack(msg)

    def gather(self, seconds: float, *, ack: bool = True) -> list[Message]:
        """Everything that arrives within ``seconds`` (CONs ACKed when ``ack``)."""
        out = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = self.recv(left)
            except TimeoutError:
                break
            out.append(msg)
            if ack and msg.mtype == Type.CON:
                self.ack(msg)
        return out


def raw_session(hub: Any, port: int, script: Callable[[RawPeer], Any], timeout: float = 20.0):
    """Run ``script(peer)`` in a thread (the hub serves meanwhile); its
    result, or its exception (an ``AssertionError`` fails the test)."""

    def run() -> Any:
        peer = RawPeer(port)
        try:
            return script(peer)
        finally:
            peer.close()

    return hub.run_in_thread(run, timeout=timeout)


# -- a relay that records ------------------------------------------------------


@dataclass
class Seen:
    """One datagram that reached the relay."""

    t: float
    direction: str
    data: bytes
    dropped: bool

    @property
    def msg(self) -> Message:
        return Message.decode(self.data)


class Tap:
    """A :class:`LossyRelay` to ``target`` that records every datagram.

    ``loss`` drops each datagram with that probability, in both directions,
    from a ``random.Random(seed)``; ``drop(direction, message)`` (True:
    drop) is asked first; ``blackhole`` drops everything (a peer switched
    off).  ``seen`` lists :class:`Seen` in arrival order.
    """

    def __init__(
        self,
        target: tuple[str, int],
        *,
        loss: float = 0.0,
        seed: int | None = None,
        drop: Callable[[str, Message], bool] | None = None,
    ) -> None:
        self.loss = loss
        self.rng = random.Random(seed)
        self.drop = drop
        self.blackhole = False
        self.lock = threading.Lock()
        self.seen: list[Seen] = []
        self.relay = LossyRelay(target, loss=0.0, seed=seed, drop=self._hook)

    def _hook(self, direction: str, data: bytes) -> bool:
        lost = False
        if self.blackhole:
            lost = True
        else:
            try:
                msg = Message.decode(data)
            except Exception:  # noqa: BLE001 - not CoAP: forward it as is
                msg = None
            if self.drop is not None and msg is not None and self.drop(direction, msg):
                lost = True
            elif self.loss and self.rng.random() < self.loss:
                lost = True
        with self.lock:
            self.seen.append(Seen(time.monotonic(), direction, data, lost))
        return lost

    def start(self) -> Tap:
        self.relay.start()
        return self

    def stop(self) -> None:
        self.relay.stop()

    def __enter__(self) -> Tap:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def uri(self) -> str:
        return self.relay.uri

    @property
    def port(self) -> int:
        return self.relay.port

    def snapshot(self) -> list[Seen]:
        with self.lock:
            return list(self.seen)

    def messages(self, direction: str | None = None, delivered: bool = False) -> list[Message]:
        """The decoded messages seen (one way, or both), optionally only those passed on."""
        return [
            s.msg
            for s in self.snapshot()
            if (direction is None or s.direction == direction) and not (delivered and s.dropped)
        ]

    def dropped(self, direction: str) -> int:
        return sum(1 for s in self.snapshot() if s.direction == direction and s.dropped)


# -- libcoap's coap-client -------------------------------------------------------

_PDU = re.compile(
    r"^v:1 t:(?P<t>CON|NON|ACK|RST) c:(?P<c>\S+) i:(?P<i>[0-9a-f]{4}) "
    r"\{(?P<tok>[0-9a-f]*)\} \[(?P<opts>.*?)\](?: :: (?P<pl>.*))?$"
)
_WIRE = re.compile(r"\b(sent|received) \d+ bytes")


@dataclass
class LcMsg:
    """A message as libcoap's ``coap-client -v 7`` printed it."""

    direction: str  # "sent" or "received"
    type: str  # "CON", "NON", "ACK", "RST"
    code: str  # "GET", "2.05", "0.00", ...
    mid: int
    token: bytes
    options: list[tuple[str, str]]
    payload: bytes

    def opt(self, name: str) -> str | None:
        for n, v in self.options:
            if n == name:
                return v
        return None

    def opts(self, name: str) -> list[str]:
        return [v for n, v in self.options if n == name]

    @property
    def block(self) -> tuple[int, bool, int] | None:
        """Block2 (or Block1) as (num, more, size): libcoap prints ``NUM/M/SIZE``."""
        return self.block_opt("Block2")

    def block_opt(self, name: str) -> tuple[int, bool, int] | None:
        v = self.opt(name)
        if v is None:
            return None
        num, more, size = v.split("/")
        return int(num), more == "M", int(size)


def _payload(text: str | None) -> bytes:
    if not text:
        return b""
    if text.startswith("'") and text.endswith("'"):
        text = text[1:-1]
    return re.sub(r"\\x([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), text).encode(
        "latin-1", "replace"
    )


def parse_coap_client(output: str) -> list[LcMsg]:
    """The datagrams libcoap's ``coap-client -v 7`` says it sent and received,
    in order (the copies it prints as "PDU presented by app" are left out)."""
    out: list[LcMsg] = []
    pending: str | None = None
    for line in output.splitlines():
        m = _WIRE.search(line)
        if m:
            pending = m.group(1)
            continue
        p = _PDU.match(line)
        if p and pending is not None:
            opts = []
            for item in p.group("opts").split(", "):
                item = item.strip()
                if item:
                    name, _, value = item.partition(":")
                    opts.append((name, value))
            out.append(
                LcMsg(
                    pending,
                    p.group("t"),
                    p.group("c"),
                    int(p.group("i"), 16),
                    bytes.fromhex(p.group("tok")),
                    opts,
                    _payload(p.group("pl")),
                )
            )
        pending = None
    return out


@dataclass
class CoapClient:
    """One ``coap-client-notls -v 7`` run (a subprocess, stopped by PID)."""

    args: list[str]
    binary: str = "coap-client-notls"
    proc: subprocess.Popen | None = None
    output: str = ""
    body: bytes = b""
    returncode: int | None = None
    messages: list[LcMsg] = field(default_factory=list)

    def start(self) -> CoapClient:
        fd, self._body_path = tempfile.mkstemp(prefix="plugtest-coap-client-")
        os.close(fd)
        cmd = [self.binary, "-v", "7", "-o", self._body_path, *self.args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        return self

    def wait(self, timeout: float = 10.0) -> CoapClient:
        """Wait for it to end (killed by PID after ``timeout``), then parse."""
        p = self.proc
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.output = out.decode("utf-8", "replace")
        self.returncode = p.returncode
        self.messages = parse_coap_client(self.output)
        try:
            with open(self._body_path, "rb") as f:
                self.body = f.read()
        finally:
            os.unlink(self._body_path)
        return self

    def kill(self) -> None:
        """Switch it off (SIGKILL: no deregistration, nothing more sent)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)

    def sent(self) -> list[LcMsg]:
        return [m for m in self.messages if m.direction == "sent"]

    def received(self) -> list[LcMsg]:
        return [m for m in self.messages if m.direction == "received"]

    def first_request(self) -> LcMsg:
        return next(m for m in self.sent() if m.type in ("CON", "NON") and m.code != "0.00")

    def response_to(self, req: LcMsg) -> LcMsg:
        """The response to ``req``: its piggybacked ACK, else the first separate
        response (same token) that came after it."""
        i = next(k for k, m in enumerate(self.messages) if m is req)
        later = [
            m for m in self.messages[i + 1 :] if m.direction == "received" and m.code != "0.00"
        ]
        for m in later:
            if m.type == "ACK" and m.mid == req.mid:
                return m
        for m in later:
            if m.type != "ACK" and m.token == req.token:
                return m
        raise AssertionError(f"no response to {req} in:\n{self.output}")


def coap_client(hub: Any, *args: str, timeout: float = 10.0) -> CoapClient:
    """Run ``coap-client-notls -v 7 args…`` to its end in a thread (the hub serves)."""

    def run() -> CoapClient:
        c = CoapClient(list(args)).start()
        return c.wait(timeout)

    return hub.run_in_thread(run, timeout=timeout + 5)


# -- asyncio (aiocoap) in a thread ------------------------------------------------


def run_async(hub: Any, make_coro: Callable[[], Any], timeout: float = 20.0) -> Any:
    """``asyncio.run(make_coro())`` in a thread, bounded by ``timeout``."""

    def run() -> Any:
        async def bounded() -> Any:
            return await asyncio.wait_for(make_coro(), timeout)

        return asyncio.run(bounded())

    return hub.run_in_thread(run, timeout=timeout + 10)
