"""A server bound to a wildcard address answers from the address each request
was sent to (IP_PKTINFO / IPV6_PKTINFO, greencoap/pktinfo.py), on every hub.

Binding ``::`` or ``0.0.0.0`` is not allowed on the shared network, so the
wildcard servers run in a private network namespace (``unshare --net``, as
root): tests/helpers/pktinfo_check.py there asks them ``GET /hello`` from
plain sockets ``connect()``-ed to each local address and reports where the
answers came from.  Without a namespace the tests skip, or fail when
``GREENCOAP_REQUIRE_PEERS=1``.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from greencoap import pktinfo

from .conftest import require_or_skip, uring_usable

HELPER = Path(__file__).resolve().parent / "helpers" / "pktinfo_check.py"
# lo in the namespace also gets 10.9.9.9 and fd00::2 (the helper deletes them)
NETNS = (
    "ip link set lo up && ip addr add 10.9.9.9/32 dev lo"
    ' && ip -6 addr add fd00::2/128 dev lo nodad && exec "$0" "$@"'
)


@functools.cache
def netns_problem() -> str | None:
    """None when ``unshare --net`` works here, else why not."""
    try:
        r = subprocess.run(
            ["unshare", "--net", "sh", "-c", NETNS.replace('exec "$0" "$@"', "true")],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    return None if r.returncode == 0 else (r.stderr.strip() or f"exit {r.returncode}")


def in_netns(hub: str, timeout: float, **env: str) -> dict:
    """Run the helper in a fresh network namespace on ``hub``; its JSON report."""
    if hub == "uring":
        reason = uring_usable()
        require_or_skip(reason is None, f"io_uring backend ({reason})", "GREENCOAP_REQUIRE_URING")
    problem = netns_problem()
    require_or_skip(problem is None, f"a private network namespace (unshare --net: {problem})")
    full = {k: v for k, v in os.environ.items() if not k.startswith("GREENCOAP_")}
    full.update(GREENCOAP_HUB=hub, **env)
    r = subprocess.run(
        ["unshare", "--net", "sh", "-c", NETNS, sys.executable, str(HELPER), str(timeout)],
        capture_output=True,
        text=True,
        timeout=30,
        env=full,
    )
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["backend"] == hub and "error" not in report, report
    return report


ASKED = {  # case → the address the request was sent to
    "dual_v4_127.0.0.2": "127.0.0.2",  # IPv4 on the dual-stack socket (IPv4-mapped)
    "dual_v4_127.0.0.1": "127.0.0.1",
    "dual_v6_fd00::2": "fd00::2",  # asked from ::1
    "dual_v6_::1": "::1",
    "v4_127.0.0.2": "127.0.0.2",  # the 0.0.0.0 server
    "v4_127.0.0.1": "127.0.0.1",
}


@pytest.mark.parametrize("hub", ["uring", "epoll", "gevent"])
def test_wildcard_server_answers_from_the_address_asked(hub):
    report = in_netns(hub, 1.0)
    for case, target in ASKED.items():
        assert report[case] == [target, "2.05"], (case, report)
    assert report["channel"].endswith("PktinfoChannel")
    # the address a peer wrote to is deleted: the server's next datagram to it
    # is sent again without that source, and arrives (from the kernel's pick)
    assert report["fallback_v6"] == ["fd00::2", "::1", "50000001"], report
    assert report["fallback_v4"] == ["10.9.9.9", "127.0.0.1", "50000001"], report
    for side in ("dual", "v4"):
        assert report["stats"][side]["send_errors"] == 0, report
    if hub == "uring":
        assert report["stats"]["ring"]["pktinfo_fallbacks"] == 2, report


@pytest.mark.parametrize("hub", ["uring", "epoll"])
def test_without_pktinfo_the_answer_comes_from_the_wrong_address(hub):
    """What the feature fixes (and proof that the test above can fail): with
    ``GREENCOAP_PKTINFO=0`` the kernel answers 127.0.0.2 and fd00::2 from
    127.0.0.1 and ::1, and the connected sockets drop those answers."""
    report = in_netns(hub, 0.3, GREENCOAP_PKTINFO="0")
    assert report["channel"] == "Channel"
    for case, target in ASKED.items():
        if target in ("127.0.0.1", "::1"):
            assert report[case] == [target, "2.05"], (case, report)
        else:
            assert report[case] is None, (case, report)


def test_specific_address_and_client_sockets_do_not_use_pktinfo(any_hub):
    """Sockets bound to 127.0.0.1 / ::1, and a client's default socket (bound
    to ``::`` on an ephemeral port), keep the plain calls: no cmsg cost."""
    from greencoap import Client
    from greencoap.demo import build_router
    from greencoap.server import Server

    servers = [Server(build_router(), host=h, port=0).start() for h in ("127.0.0.1", "::1")]
    try:
        for srv in servers:
            ch, sock = srv.endpoint.channel, srv.endpoint.sock
            assert "Pktinfo" not in type(ch).__name__
            assert sock.getsockopt(socket.IPPROTO_IP, pktinfo.IP_PKTINFO) == 0
            host = "127.0.0.1" if sock.family == socket.AF_INET else "[::1]"
            with Client(timeout=5) as c:
                assert c.get(f"coap://{host}:{srv.port}/hello").payload == b"Hello, world!"
                assert c.endpoint.address[0] in ("::", "0.0.0.0")
                assert "Pktinfo" not in type(c.endpoint.channel).__name__
                assert not c.endpoint.sock.getsockopt(socket.IPPROTO_IPV6, pktinfo.IPV6_RECVPKTINFO)
    finally:
        for srv in servers:
            srv.stop()


def test_local_address_helpers():
    v4mapped = bytes(10) + b"\xff\xff" + bytes([127, 0, 0, 2])
    ip = (
        socket.IPPROTO_IP,
        pktinfo.IP_PKTINFO,
        struct.pack("=I4s4s", 1, b"\x0a\0\0\x05", b"\xff\xff\xff\xff"),
    )
    v6 = (socket.IPPROTO_IPV6, pktinfo.IPV6_PKTINFO, v4mapped + struct.pack("=I", 1))
    # IP_PKTINFO's ipi_spec_dst wins (a broadcast's answer leaves from 10.0.0.5)
    assert pktinfo.local_from_cmsgs([v6, ip]) == b"\x0a\0\0\x05"
    assert pktinfo.local_from_cmsgs([v6]) == bytes([127, 0, 0, 2])  # unmapped
    ll = socket.inet_pton(socket.AF_INET6, "fd00::2")
    assert (
        pktinfo.local_from_cmsgs([(socket.IPPROTO_IPV6, pktinfo.IPV6_PKTINFO, ll + bytes(4))]) == ll
    )
    assert pktinfo.local_from_cmsgs([]) == b""
    for bad in (
        b"\xe0\0\0\xbb",
        b"\xff\xff\xff\xff",
        bytes(4),
        bytes(16),
        socket.inet_pton(socket.AF_INET6, "ff02::fd"),
        b"",
    ):
        assert not pktinfo.usable(bad)
        assert pktinfo.send_cmsgs(bad) == ()
        assert pktinfo.send_record(bad) == pktinfo.NO_RECORD
    assert pktinfo.send_cmsgs(b"\x7f\0\0\x02") == [
        (socket.IPPROTO_IP, pktinfo.IP_PKTINFO, struct.pack("=I4s4s", 0, b"\x7f\0\0\x02", bytes(4)))
    ]
    assert pktinfo.send_cmsgs(ll) == [(socket.IPPROTO_IPV6, pktinfo.IPV6_PKTINFO, ll + bytes(4))]
    assert pktinfo.send_record(ll) == struct.pack("=I", 6) + ll
    assert len(pktinfo.send_record(b"\x7f\0\0\x02")) == len(pktinfo.NO_RECORD) == 20
