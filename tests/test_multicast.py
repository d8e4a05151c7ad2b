"""Multicast (RFC 7252 §8): three greencoap servers and a libcoap server,
each in a network namespace of its own on a bridge of the test's own
(tests/helpers/mcast_lab.py, run under ``unshare --net``), asked by
greencoap's client, its command line and libcoap's client; on each hub.
Plus the checks that need no network."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from greencoap import Client, UriError
from greencoap.multicast import interface_index, is_multicast, unicast_peer

from .conftest import require_or_skip

LAB = Path(__file__).resolve().parent / "helpers" / "mcast_lab.py"

pytestmark = pytest.mark.timeout(180)


def lab_or_skip() -> None:
    tools = all(shutil.which(t) for t in ("unshare", "nsenter", "ip", "coap-server-notls"))
    require_or_skip(tools and os.geteuid() == 0, "root with unshare, nsenter, ip and libcoap")


@pytest.fixture(params=["uring", "epoll"], scope="module")
def lab(request):
    lab_or_skip()
    env = dict(os.environ, GREENCOAP_HUB=request.param)
    p = subprocess.run(
        ["unshare", "--net", sys.executable, str(LAB)],
        capture_output=True,
        text=True,
        timeout=150,
        env=env,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


NODES = {"192.0.2.11": "node-1", "192.0.2.12": "node-2", "192.0.2.13": "node-3"}


def test_every_server_of_the_group_answers_as_non_after_a_leisure(lab):
    answers = lab["v4_hello"]
    assert {host: text for host, text, _, _ in answers} == NODES
    assert all(mtype == "NON" for *_, mtype in answers)
    times = [t for _, _, t, _ in answers]
    assert max(times) < 0.3 + 1.0  # within the servers' leisure (0.3 s), and slack for load
    assert max(times) - min(times) > 0.005  # spread over the leisure, not all at once


def test_ipv6_link_local_group_with_a_zone(lab):
    answers = lab["v6_hello"]
    assert sorted(text for _, text in answers) == sorted(NODES.values())
    assert all(host.startswith(("fe80:", "2001:db8:")) for host, _ in answers)


def test_errors_to_a_group_are_not_answered(lab):
    assert lab["only_on_1"] == [["192.0.2.11", "here"]]  # the others' 4.04s stay silent
    assert lab["nowhere"] == []
    stats = lab["server_stats"]
    assert [s["multicast_suppressed"] for s in stats] == [1, 2, 2]
    assert all(s["rst_sent"] == 0 for s in stats)


def test_discovery_of_every_device_on_the_link(lab):
    found = set(lab["discovered"])
    for host in NODES:
        assert f"coap://{host}/hello" in found
    assert "coap://192.0.2.11/only-on-1" in found
    assert any(t.startswith("coap://192.0.2.14/") for t in found)  # the libcoap server
    cli = lab["cli"]
    assert cli["rc"] == 0 and "Traceback" not in cli["stderr"]
    for host in [*NODES, "192.0.2.14"]:
        assert f"coap://{host}/" in cli["stdout"]


def test_the_multicast_example(lab):
    ex = lab["example"]
    assert ex["rc"] == 0, ex["stderr"]
    lines = ex["stdout"].splitlines()
    assert lines[-1] in ("3 devices answered within 1.5 s", "4 devices answered within 1.5 s")
    assert "192.0.2.11: /hello /only-on-1" in lines and "192.0.2.12: /hello" in lines
    nobody = lab["example_nobody"]
    assert nobody["rc"] == 2
    assert nobody["stderr"].strip() == "no CoAP server answered coap://224.0.1.99 within 0.5 s"


def test_libcoap_client_to_the_group(lab):
    out = lab["libcoap_client"]
    assert out["rc"] == 0
    for text in NODES.values():
        assert text in out["stdout"]


def test_addresses_and_usage_errors(hub):
    assert (
        is_multicast("224.0.1.187") and is_multicast("ff02::fd%eth0") and is_multicast("ff05::fd")
    )
    assert not is_multicast("192.0.2.1") and not is_multicast("::1") and not is_multicast("name")
    assert interface_index(None) == 0 and interface_index(3) == 3 and interface_index("lo") >= 1
    with pytest.raises(UriError, match="no network interface"):
        interface_index("no-such-if0")
    assert unicast_peer(("192.0.2.5", 5683), 10) == ("::ffff:192.0.2.5", 5683, 0, 0)
    with Client(timeout=1) as c:
        with pytest.raises(UriError, match="not a multicast group"):
            list(c.multicast("GET", "coap://127.0.0.1/x"))
        with pytest.raises(UriError, match="coap:// only"):
            list(c.multicast("GET", "coaps://224.0.1.187/x"))
        with pytest.raises(ValueError):
            list(c.multicast("GET", "coap://224.0.1.187/x", timeout=-1))
