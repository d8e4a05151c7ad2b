"""Fixtures of the plugtest suite: the greencoap plugtest server (in process
on the test's hub, or as a process that can be crashed and restarted), the
aiocoap peer and libcoap's server (one process per module, reset between
tests), and the peers' binaries.

Settings are short so that the whole suite runs in about a minute: states
of the observable resources every :data:`OBS_PERIOD` s, ``/separate``
answering after :data:`SEPARATE_TIME` s with the empty ACK after
:data:`SEPARATE_DELAY` s, and the servers' CON retransmissions starting at
:data:`ACK_TIMEOUT` s (so that an observer switched off is given up within
two seconds; TD_COAP_OBS_05 uses 2 retransmissions, about one).
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..conftest import free_port, require_or_skip, wait_udp_ready, which_or_skip
from .server import PlugtestServer

OBS_PERIOD = 0.05
MAX_AGE = 1
SEPARATE_TIME = 0.15
SEPARATE_DELAY = 0.05
ACK_TIMEOUT = 0.1
MAX_RETRANSMIT = 3

#: the settings every in-process plugtest server gets unless a test says otherwise
PLUG_SETTINGS = {
    "obs_period": OBS_PERIOD,
    "max_age": MAX_AGE,
    "separate_time": SEPARATE_TIME,
    "separate_delay": SEPARATE_DELAY,
    "ack_timeout": ACK_TIMEOUT,
    "max_retransmit": MAX_RETRANSMIT,
}

ROOT = Path(__file__).resolve().parents[2]
AIOCOAP_PEER = Path(__file__).with_name("aiocoap_peer.py")


@pytest.fixture
def make_plug(hub):
    """``make_plug(**settings)``: a started in-process plugtest server on this
    test's hub (stopped at teardown); settings override :data:`PLUG_SETTINGS`."""
    made = []

    def make(**overrides):
        srv = PlugtestServer("127.0.0.1", 0, **{**PLUG_SETTINGS, **overrides}).start()
        made.append(srv)
        return srv

    yield make
    for srv in made:
        srv.stop()


@pytest.fixture
def plug(make_plug):
    """The greencoap plugtest server with the suite's settings."""
    return make_plug()


class Process:
    """A server process on a fixed port that can be crashed (SIGKILL: no
    goodbye, all state lost) and started again on the same port."""

    def __init__(self, args: list[str], port: int, env: dict | None = None) -> None:
        self.args = args
        self.port = port
        self.env = env
        self.p: subprocess.Popen | None = None
        self.log = b""

    @property
    def uri(self) -> str:
        return f"coap://127.0.0.1:{self.port}"

    def start(self) -> Process:
        self.p = subprocess.Popen(
            self.args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=self.env,
            cwd=ROOT,
        )
        try:
            wait_udp_ready(self.port)
        except RuntimeError:
            self.stop()
            raise RuntimeError(f"{self.args} did not start: {self.log!r}") from None
        return self

    def crash(self) -> None:
        """SIGKILL by PID and reap."""
        p = self.p
        if p is not None and p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            self.log += p.communicate()[1] or b""

    def stop(self) -> None:
        """SIGTERM by PID (SIGKILL after 5 s) and reap."""
        p = self.p
        if p is None:
            return
        if p.poll() is None:
            os.kill(p.pid, signal.SIGTERM)
            try:
                self.log += p.communicate(timeout=5)[1] or b""
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                self.log += p.communicate()[1] or b""
        elif p.stderr is not None and not p.stderr.closed:
            self.log += p.stderr.read() or b""
            p.stderr.close()


@pytest.fixture
def plug_process(hub):
    """The greencoap plugtest server as a process (``python -m
    tests.plugtest.server``) on this test's backend, for TDs where the
    server reboots and loses its observers (TD_COAP_OBS_04)."""
    port = free_port()
    args = [sys.executable, "-m", "tests.plugtest.server", "--port", str(port)]
    args += ["--obs-period", str(OBS_PERIOD), "--max-age", str(MAX_AGE)]
    env = dict(os.environ, GREENCOAP_HUB=hub.backend, PYTHONPATH=str(ROOT))
    proc = Process(args, port, env)
    try:
        yield proc
    finally:
        proc.stop()


# -- peers ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def coap_client_bin():
    return which_or_skip("coap-client-notls")


@pytest.fixture(scope="session")
def aiocoap():
    try:
        import aiocoap
    except ImportError:
        aiocoap = None
    require_or_skip(aiocoap is not None, "aiocoap")
    return aiocoap


def aiocoap_peer_args(port: int) -> list[str]:
    return [
        sys.executable,
        str(AIOCOAP_PEER),
        "--port",
        str(port),
        "--obs-period",
        str(OBS_PERIOD),
        "--max-age",
        str(MAX_AGE),
        "--separate-time",
        str(SEPARATE_TIME),
        "--ack-timeout",
        str(ACK_TIMEOUT),
        "--max-retransmit",
        str(MAX_RETRANSMIT),
    ]


def reset_peer(port: int) -> None:
    """POST /reset to the aiocoap peer (its resources back to their first state)."""
    from greencoap import Code, Message, Type

    # a fresh MID and token each time: the kernel may hand this socket the
    # source port of an earlier reset, and a repeated (peer, MID) would be
    # answered from the peer's deduplication cache without resetting anything
    mid = random.randrange(1, 0x10000)
    token = random.randbytes(4)
    msg = Message(Type.CON, Code.POST, mid, token, [(11, b"reset")]).encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)
        for _ in range(10):
            s.sendto(msg, ("127.0.0.1", port))
            try:
                reply = Message.decode(s.recvfrom(2048)[0])
            except TimeoutError:
                continue
            if reply.mid == mid and reply.token == token and reply.code == Code.CHANGED:
                return
    raise RuntimeError("the aiocoap peer did not reset")


@pytest.fixture(scope="module")
def aiocoap_peer_process(aiocoap):
    """The aiocoap plugtest peer, one process per module."""
    port = free_port()
    proc = Process(aiocoap_peer_args(port), port)
    try:
        yield proc.start()
    finally:
        proc.stop()


@pytest.fixture
def aiocoap_peer(aiocoap_peer_process):
    """The module's aiocoap peer with its resources reset for this test."""
    reset_peer(aiocoap_peer_process.port)
    return aiocoap_peer_process


@pytest.fixture
def aiocoap_peer_fresh(aiocoap):
    """An aiocoap peer of this test's own (it will be crashed and restarted)."""
    port = free_port()
    proc = Process(aiocoap_peer_args(port), port)
    try:
        yield proc
    finally:
        proc.stop()


def libcoap_server_args(port: int, *extra: str) -> list[str]:
    binary = which_or_skip("coap-server-notls")
    return [binary, "-A", "127.0.0.1", "-p", str(port), "-d", "50", *extra]


@pytest.fixture(scope="module")
def libcoap_server_process():
    """libcoap's ``coap-server-notls -d 50`` (PUT creates resources), one per module."""
    port = free_port()
    proc = Process(libcoap_server_args(port), port)
    try:
        yield proc.start()
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def libcoap_server_non():
    """libcoap's server with ``-N``: NON notifications (every fifth one CON)."""
    port = free_port()
    proc = Process(libcoap_server_args(port, "-N"), port)
    try:
        yield proc.start()
    finally:
        proc.stop()


@pytest.fixture
def libcoap_server_fresh():
    """A libcoap server of this test's own (it will be crashed and restarted)."""
    port = free_port()
    proc = Process(libcoap_server_args(port), port)
    try:
        yield proc
    finally:
        proc.stop()


def wait_until(pred, timeout: float = 3.0, step: float = 0.01) -> bool:
    """Poll ``pred()`` with greencoap's sleep (the hub serves meanwhile)."""
    from greencoap import sleep

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        sleep(step)
    return bool(pred())
