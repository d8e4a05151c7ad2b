"""Run by tests/test_pktinfo.py inside a private network namespace, whose lo
also carries 10.9.9.9 and fd00::2: greencoap servers bound to ``::`` and
``0.0.0.0`` (on ``$GREENCOAP_HUB``) are asked ``GET /hello`` by plain sockets
``connect()``-ed to each local address, and say where the answer came from.

    python pktinfo_check.py TIMEOUT   → one JSON object on stdout

Each case is ``[source host, response code]`` or ``null`` when nothing came
back within TIMEOUT seconds (a connected socket drops a reply from another
address).  ``fallback_*``: the server learnt that a peer writes to
10.9.9.9 / fd00::2, the address is deleted, and a datagram the server then
sends that peer must still arrive (sent again without the stale source).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading

import greencoap
from greencoap.demo import build_router
from greencoap.server import Server

GET_HELLO = bytes([0x41, 0x01, 0x12, 0x34, 0x99, 0xB5]) + b"hello"  # CON GET /hello, token 99


def ask(family: int, target: tuple, timeout: float, bind: tuple | None = None) -> list | None:
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        if bind:
            s.bind(bind)
        s.connect(target)
        s.settimeout(timeout)
        s.send(GET_HELLO)
        try:
            data, src = s.recvfrom(2048)
        except TimeoutError:
            return None
        return [src[0], f"{data[1] >> 5}.{data[1] & 31:02d}"]


def fallback(family: int, server: Server, target: tuple, bind: tuple, cidr: str, hub) -> list:
    """Learn ``target`` for a peer, delete it, then make the server send to the peer."""
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind(bind)
        s.settimeout(2)
        s.sendto(GET_HELLO, target)
        _, first = s.recvfrom(2048)
        subprocess.run(["ip", "addr", "del", cidr, "dev", "lo"], check=True)
        peer = next(p for p in server.endpoint.channel.local if p[1] == s.getsockname()[1])
        hub.run_callback_threadsafe(server.endpoint.send_raw, b"\x50\x00\x00\x01", peer)
        data, src = s.recvfrom(2048)  # empty NON: the server's datagram
        return [first[0], src[0], data.hex()]


def main() -> None:
    timeout = float(sys.argv[1])
    hub = greencoap.get_hub()
    router = build_router()
    dual = Server(router, host="::", port=0).start()
    v4 = Server(router, host="0.0.0.0", port=0).start()
    out: dict = {"backend": hub.backend}

    def cases() -> None:
        try:
            p, q = dual.port, v4.port
            out["dual_v4_127.0.0.2"] = ask(socket.AF_INET, ("127.0.0.2", p), timeout)
            out["dual_v4_127.0.0.1"] = ask(socket.AF_INET, ("127.0.0.1", p), timeout)
            out["dual_v6_fd00::2"] = ask(socket.AF_INET6, ("fd00::2", p), timeout, ("::1", 0))
            out["dual_v6_::1"] = ask(socket.AF_INET6, ("::1", p), timeout)
            out["v4_127.0.0.2"] = ask(socket.AF_INET, ("127.0.0.2", q), timeout)
            out["v4_127.0.0.1"] = ask(socket.AF_INET, ("127.0.0.1", q), timeout)
            if timeout >= 1:  # only with pktinfo on (else the first reply is lost)
                out["fallback_v6"] = fallback(
                    socket.AF_INET6, dual, ("fd00::2", p), ("::1", 0), "fd00::2/128", hub
                )
                out["fallback_v4"] = fallback(
                    socket.AF_INET, v4, ("10.9.9.9", q), ("127.0.0.1", 0), "10.9.9.9/32", hub
                )
        except Exception as e:  # noqa: BLE001 - reported to the test
            out["error"] = repr(e)

    t = threading.Thread(target=cases)
    t.start()
    while t.is_alive():
        greencoap.sleep(0.005)
    out["stats"] = {"dual": dual.endpoint.channel.stats, "v4": v4.endpoint.channel.stats}
    if hasattr(hub.io, "statistics"):
        out["stats"]["ring"] = hub.io.statistics()
    out["channel"] = type(dual.endpoint.channel).__name__
    dual.stop()
    v4.stop()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
