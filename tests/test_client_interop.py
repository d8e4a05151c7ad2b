"""The complete client against real peers: block-wise, Observe, separate
responses, discovery, and a lossy network — on both native hubs and in gevent."""

from __future__ import annotations

import hashlib
import time

import pytest

import greencoap
from greencoap import Client, Code, Link, RequestTimeoutError
from greencoap.protocol.blockwise import BodyTooLargeError

from .conftest import hub_for
from .lossy import LossyRelay

pytest_plugins = ["tests.peers.fixtures"]

PATTERN = b"0123456789abcdef"


@pytest.fixture(params=("uring", "epoll", "gevent"))
def hub(request):
    """Client tests run on both native backends and inside gevent's hub."""
    yield from hub_for(request.param)


# -- libcoap coap-server-notls -d 20 -------------------------------------------


def test_libcoap_put_then_get_large_body_block_wise(hub, libcoap_server):
    body = bytes(range(256)) * 160  # 40 KiB: Block1 up, Block2 down
    with Client(timeout=20) as c:
        r = c.put(libcoap_server.uri + "/big", payload=body)
        assert r.code in (Code.CREATED, Code.CHANGED)
        assert c.stats["requests_sent"] >= 40  # it really went block by block
        got = c.get(libcoap_server.uri + "/big")
        assert got.code == Code.CONTENT and got.payload == body
        small = c.get(libcoap_server.uri + "/big", block_size=64)  # early negotiation
        assert small.payload == body


def test_libcoap_observe_time(hub, libcoap_server):
    with Client(timeout=5) as c:
        with c.observe(libcoap_server.uri + "/time") as obs:
            items = []
            for r in obs.iter(timeout=5):
                items.append(r)
                if len(items) == 3:
                    break
            assert all(r.code == Code.CONTENT and r.text for r in items)
            seqs = [r.message.observe for r in items]
            assert seqs == sorted(seqs) and len(set(seqs)) == 3
        assert not obs.active and obs.cancelled  # leaving the block deregistered
        assert c.endpoint.layer.pending() == 0


def test_libcoap_discovery(hub, libcoap_server):
    with Client(timeout=5) as c:
        links = c.discover(libcoap_server.uri)
        by_target = {link.target: link for link in links}
        time_link = by_target[libcoap_server.uri + "/time"]
        assert isinstance(time_link, Link) and time_link.obs and "ticks" in time_link.rt
        assert [link.target for link in c.discover(libcoap_server.uri, rt="tick*")] == [
            libcoap_server.uri + "/time"
        ]
        assert c.discover(libcoap_server.uri, rt="nothing-like-this") == []


def test_ping(hub, libcoap_server):
    with Client(timeout=2) as c:
        assert 0 <= c.ping(libcoap_server.uri) < 1


# -- an aiocoap server ---------------------------------------------------------


def test_aiocoap_block2_of_120_kb(hub, aiocoap_server):
    with Client(timeout=30) as c:
        r = c.get(aiocoap_server.uri + "/big")
        assert r.code == Code.CONTENT and len(r.payload) == 120_000
        assert r.payload == (PATTERN * 7500)
        with pytest.raises(BodyTooLargeError):
            Client(timeout=30, max_body_size=50_000).get(aiocoap_server.uri + "/big")


def test_aiocoap_block1_upload_of_60_kb(hub, aiocoap_server):
    body = bytes((i * 7) & 0xFF for i in range(60_000))
    with Client(timeout=30) as c:
        r = c.put(aiocoap_server.uri + "/upload", payload=body)
        assert r.code == Code.CHANGED
        assert r.text == f"{len(body)}:{hashlib.sha256(body).hexdigest()}"
        assert c.get(aiocoap_server.uri + "/upload").payload == body


def test_concurrent_uploads_do_not_mix(hub, aiocoap_server):
    a, b = b"A" * 5000, b"B" * 7000
    with Client(timeout=30) as c:
        ga = greencoap.spawn(c.post, aiocoap_server.uri + "/upload", payload=a)
        gb = greencoap.spawn(c.post, aiocoap_server.uri + "/upload", payload=b)
        greencoap.joinall([ga, gb], timeout=30)
        assert ga.value.text == f"5000:{hashlib.sha256(a).hexdigest()}"
        assert gb.value.text == f"7000:{hashlib.sha256(b).hexdigest()}"


def test_aiocoap_observe_and_cancel(hub, aiocoap_server):
    with Client(timeout=5) as c:
        obs = c.observe(aiocoap_server.uri + "/counter")
        values = []
        for r in obs.iter(timeout=3):
            values.append(int(r.text))
            if len(values) == 4:
                break
        assert values == sorted(values) and len(set(values)) == 4
        reply = obs.cancel()
        assert reply is not None and reply.ok and reply.message.observe is None
        assert not obs.active
        greencoap.sleep(0.5)  # notifications after the cancel would be RST, not queued
        assert c.endpoint.layer.pending() == 0


def test_many_observations_share_one_socket(hub, aiocoap_server):
    with Client(timeout=5) as c:

        def watch():
            n = 0
            with c.observe(aiocoap_server.uri + "/counter") as obs:
                for _ in obs.iter(timeout=3):
                    n += 1
                    if n == 3:
                        return n

        gs = [greencoap.spawn(watch) for _ in range(20)]
        greencoap.joinall(gs, timeout=15)
        assert [g.value for g in gs] == [3] * 20


def test_aiocoap_separate_response(hub, aiocoap_server):
    with Client(timeout=5) as c:
        t0 = time.monotonic()
        r = c.get(aiocoap_server.uri + "/separate")
        assert r.ok and time.monotonic() - t0 >= 0.9
        assert r.mtype == greencoap.Type.CON  # it came separately, and we ACKed it
        assert c.stats["retransmissions"] == 0  # the empty ACK stopped them
        with pytest.raises(RequestTimeoutError):
            c.get(aiocoap_server.uri + "/separate?d=3", timeout=1)
        assert c.endpoint.layer.pending() == 0


def test_discovery_against_aiocoap(hub, aiocoap_server):
    with Client(timeout=5) as c:
        targets = {link.target for link in c.discover(aiocoap_server.uri)}
        assert aiocoap_server.uri + "/counter" in targets
        (counter,) = c.discover(aiocoap_server.uri, href="/counter")
        assert counter.obs


# -- a lossy network -------------------------------------------------------------


def test_200_con_requests_through_20_percent_loss(hub, server):
    with LossyRelay(("127.0.0.1", server.port), loss=0.2, seed=7) as relay:
        relay.start()
        # each attempt gets through both ways with p = 0.64: 11 attempts make a
        # failure (0.36**11 per request) negligible
        with Client(timeout=90, ack_timeout=0.02, max_retransmit=10) as c:
            gs = [
                greencoap.spawn(c.post, relay.uri + "/echo", payload=str(i).encode())
                for i in range(200)
            ]
            greencoap.joinall(gs, timeout=100)
            assert all(g.successful() for g in gs), [g.exception for g in gs if g.exception][:3]
            assert [g.value.payload for g in gs] == [str(i).encode() for i in range(200)]
            assert c.stats["retransmissions"] > 20  # the loss was real
        stats = relay.snapshot()
    assert stats["c2s"]["dropped"] > 0 and stats["s2c"]["dropped"] > 0


def test_observation_keeps_delivering_through_loss(hub, aiocoap_server):
    with LossyRelay(("127.0.0.1", aiocoap_server.port), loss=0.2, seed=3) as relay:
        relay.start()
        with Client(timeout=10, ack_timeout=0.1, max_retransmit=8) as c:
            got = []
            with c.observe(relay.uri + "/counter") as obs:
                for r in obs.iter(timeout=5):
                    got.append(int(r.text))
                    if len(got) == 6:
                        break
            assert got == sorted(got) and len(set(got)) == 6


def test_large_post_with_large_answer(hub, aiocoap_server):
    body = bytes(range(256)) * 20  # 5,120 bytes up (Block1) and back (Block2)
    with Client(timeout=20) as c:
        r = c.post(aiocoap_server.uri + "/echo", payload=body)
        assert r.code == Code.CONTENT and r.payload == body


def test_echo_challenge_is_answered_once(hub, aiocoap_server):
    with Client(timeout=5) as c:
        r = c.get(aiocoap_server.uri + "/fresh")
        assert r.ok and r.text == "fresh"
        assert c.stats["requests_sent"] == 2  # the challenge, then the answer


def test_block_wise_notifications_are_fetched_whole(hub, aiocoap_server):
    with Client(timeout=10) as c, c.observe(aiocoap_server.uri + "/bigcounter") as obs:
        seen = []
        for r in obs.iter(timeout=5):
            assert len(r.payload) == 2400 and r.payload[:6] * 400 == r.payload
            seen.append(int(r.payload[:6]))
            if len(seen) == 3:
                break
        assert seen == sorted(seen) and len(set(seen)) == 3
