"""Multi-process serving: N worker processes share one port (layer 4).

``Server(..., workers=N).serve_forever()`` forks N children.  Each binds the
same address with SO_REUSEPORT (the kernel spreads datagrams across them by
peer address), creates its own hub after the fork, and serves.  The parent
only supervises: SIGINT or SIGTERM is passed to every child as SIGTERM, and
each child shuts down gracefully (new requests ignored, running handlers
given up to ``grace`` seconds, observations ended with 5.03) and exits 0.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .server import Server

GRACE = 5.0


def _free_port(host: str) -> int:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind((host, 0))
        return s.getsockname()[1]


def _child(server: Server, index: int) -> None:
    from .hub import get_hub

    os.environ["GREENCOAP_WORKER"] = str(index)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides
    server.workers = 1
    server.start()
    hub = get_hub()
    signal.signal(signal.SIGTERM, lambda *_: hub.run_callback_threadsafe(_spawn_shutdown, server))
    server.serve_forever()


def _spawn_shutdown(server: Server) -> None:
    from .hub import spawn

    spawn(server.shutdown, GRACE)


def serve_workers(server: Server, timeout: float | None = None) -> None:
    """Fork ``server.workers`` children serving the same port; wait for them."""
    n = server.workers
    if server._port == 0:
        server._port = _free_port(server.host)
    pids: list[int] = []
    for i in range(n):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _child(server, i)
            except BaseException:  # noqa: BLE001 - report, then leave the child
                import traceback

                traceback.print_exc()
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        pids.append(pid)

    def forward(signum: int, frame: object) -> None:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    old = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        remaining = set(pids)
        while remaining:
            if deadline is not None and time.monotonic() >= deadline:
                forward(signal.SIGTERM, None)
                deadline = None
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid:
                remaining.discard(pid)
            else:
                time.sleep(0.05)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
