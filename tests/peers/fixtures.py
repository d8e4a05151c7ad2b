"""Pytest fixtures for peer servers that greencoap's client is tested against.

``aiocoap_server`` runs ``tests/peers/aiocoap_server.py`` (see its docstring
for the resources) as a subprocess on a free 127.0.0.1 port and stops it by
PID at teardown.  Use it from a test module with::

    pytest_plugins = ["tests.peers.fixtures"]

or import the fixture by name (``from .peers.fixtures import aiocoap_server``
with ``# noqa: F401`` on the import and ``# noqa: F811`` where a test takes it
as an argument).

aiocoap missing means a skip on a developer's machine and a failure in CI
(``GREENCOAP_REQUIRE_PEERS=1``), as for the other peers in ``conftest``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from ..conftest import Proc, free_port, require_or_skip

#: The server script, run with this interpreter (aiocoap must be importable here).
SERVER_SCRIPT = Path(__file__).with_name("aiocoap_server.py")


def aiocoap_available() -> bool:
    """True when aiocoap can be imported by this interpreter (and so by the script)."""
    return importlib.util.find_spec("aiocoap") is not None


def start_aiocoap_server(log_path: Path | None = None) -> Proc:
    """Start the aiocoap peer on a free port; return the ``Proc`` once it answers a ping.

    The caller stops it with ``.stop()``, which returns what the process printed.
    ``log_path``, when given, receives aiocoap's log (WARNING and up).
    """
    require_or_skip(aiocoap_available(), "aiocoap")
    port = free_port()
    args = [sys.executable, str(SERVER_SCRIPT), "--port", str(port)]
    if log_path is not None:
        args += ["--log", str(log_path)]
    proc = Proc(args, port)
    proc.log_path = log_path
    return proc


@pytest.fixture
def aiocoap_server(tmp_path):
    """aiocoap serving ``/hello /big /upload /counter /separate /.well-known/core``.

    Yields a ``Proc`` with ``.uri`` (``"coap://127.0.0.1:P"``), ``.port``,
    ``.host`` and ``.log_path`` (aiocoap's WARNING log, in ``tmp_path``).
    Each test gets a fresh process, so ``/upload`` starts empty and
    ``/counter`` near 0.
    """
    proc = start_aiocoap_server(tmp_path / "aiocoap_server.log")
    try:
        yield proc
    finally:
        # conftest's Proc.stop() is not idempotent (a second call reads a closed
        # pipe), and a test may already have stopped the server itself.
        if proc.p.stdout is None or not proc.p.stdout.closed:
            proc.stop()
