"""The hub survives what the network and user code can do (issue: a hub that
cannot die).

* A fault injected at each place under ``io.poll()`` — the backend's
  dispatch, the endpoint's receive path, the message layer, admission
  control, an Observe sink, the DTLS channel and the DTLS engine — is
  reported with its traceback, counted, and costs only the datagram that hit
  it: the server still answers and the client's call still completes (its
  CON retransmission gets through).  On io_uring, epoll and inside gevent.
* Wake-ups cannot go astray: a send that fails leaves no exchange behind
  that could later wake an unrelated wait.
* Queue timeouts bound the whole wait; a chosen waiter that leaves passes
  the item on.
* A signal that lands inside a server's observer greenlet stops the server.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import time

import pytest

import greencoap
from greencoap import Client, Code, Router, Server
from greencoap.demo import make_server
from greencoap.hub import GreenletExit, sleep, spawn
from greencoap.protocol.dtls import DtlsServer
from greencoap.sync import Empty, Queue

pytestmark = pytest.mark.timeout(60)

FAST = {"timeout": 5, "ack_timeout": 0.1, "ack_random_factor": 1.0}


class Once:
    """A callable that raises ``RuntimeError('injected fault')`` on its first
    call(s) and otherwise forwards to ``fn``."""

    def __init__(self, fn, times: int = 1):
        self.fn = fn
        self.left = times
        self.raised = 0

    def __call__(self, *args, **kwargs):
        if self.left > 0:
            self.left -= 1
            self.raised += 1
            raise RuntimeError("injected fault")
        return self.fn(*args, **kwargs)


@pytest.fixture
def srv(any_hub):
    router = Router()

    @router.get("/hello")
    def hello(request):
        return "hi"

    @router.get("/ticks")
    def ticks(request):
        n = 0
        while True:
            yield str(n)
            n += 1
            sleep(0.05)

    s = Server(router, host="127.0.0.1", port=0).start()
    s.uri = f"coap://127.0.0.1:{s.port}"
    yield s
    s.stop()


def _get_ok(uri: str) -> None:
    with Client(**FAST) as c:
        r = c.get(uri + "/hello")
        assert r.code == Code.CONTENT and r.payload == b"hi"


def _assert_reported(hub, before: int, caplog) -> None:
    assert hub.errors > before, "the fault was not counted"
    assert "injected fault" in caplog.text and "Traceback" in caplog.text


def test_fault_in_the_backends_dispatch(any_hub, srv, caplog):
    before = any_hub.errors
    ch = srv.endpoint.channel
    ch.on_batch = Once(ch.on_batch)  # what the backend hands each harvest to
    _get_ok(srv.uri)  # the first copy is lost with its batch; the retransmission is answered
    assert ch.on_batch.raised == 1
    _assert_reported(any_hub, before, caplog)
    _get_ok(srv.uri)


def test_fault_in_the_message_layer(any_hub, srv, caplog):
    before = any_hub.errors
    layer = srv.endpoint.layer
    layer.receive = Once(layer.receive)
    _get_ok(srv.uri)
    _assert_reported(any_hub, before, caplog)
    assert srv.stats["internal_errors"] == 1


def test_fault_in_one_datagram_costs_only_that_datagram(any_hub, srv, caplog):
    """Two requests in one batch: the first hits the fault, the second is
    answered at once (no retransmission needed)."""
    layer = srv.endpoint.layer
    layer.receive = Once(layer.receive)
    with Client(timeout=5, ack_timeout=30) as c:  # no retransmission within the test
        g1 = spawn(c.get, srv.uri + "/hello", timeout=0.5)
        g2 = spawn(c.get, srv.uri + "/hello", timeout=5)
        assert g2.get(timeout=5).code == Code.CONTENT
        g1.join(2)
        assert isinstance(g1.exception, greencoap.RequestTimeoutError)  # its datagram was lost
    assert srv.stats["internal_errors"] == 1


def test_fault_in_admission(any_hub, srv, caplog):
    before = any_hub.errors
    srv.endpoint.admit = Once(srv.endpoint.admit)
    _get_ok(srv.uri)  # admission failing means "serve": the request is answered at once
    _assert_reported(any_hub, before, caplog)


def test_fault_in_the_servers_request_check(any_hub, srv, caplog):
    """A per-request admission check that raises (as under load) after the
    message layer accepted the request: its retransmission is still served,
    not taken for a duplicate of a request that was never handled."""
    ep = srv.endpoint
    real = ep.admit
    check = Once(lambda msg, peer, now: None)  # None: serve it
    ep.admit = lambda load: check
    try:
        _get_ok(srv.uri)
    finally:
        ep.admit = real
    assert srv.stats["internal_errors"] >= 1


def test_fault_in_an_observe_sink(any_hub, srv, caplog):
    """The client's Observe sink raises on one notification: the observation
    goes on with the next ones."""
    before = any_hub.errors
    with Client(**FAST) as c, c.observe(srv.uri + "/ticks") as obs:
        it = obs.iter(timeout=3)
        seen = [int(next(it).text)]  # registered now
        ex = obs._ex
        ex.sink = Once(ex.sink)
        for n in it:
            seen.append(int(n.text))
            if len(seen) == 4:
                break
        assert ex.sink.raised == 1
    assert seen == sorted(seen)
    _assert_reported(any_hub, before, caplog)


def test_fault_in_a_timer_keeps_the_endpoints_timer_alive(any_hub, srv, caplog):
    """The message layer's expire() raises once: retransmissions still happen later."""
    with Client(**FAST) as c:
        layer = c.endpoint.layer
        layer.expire = Once(layer.expire)
        srv.endpoint.layer.receive = Once(srv.endpoint.layer.receive)  # lose the first copy
        r = c.get(srv.uri + "/hello")
        assert r.code == Code.CONTENT
        assert layer.expire.raised == 1


@pytest.fixture
def dtls_srv(any_hub):
    s = make_server("127.0.0.1", 0, dtls_port=0, psk={"id": b"key"}, ack_timeout=0.1).start()
    s.suri = f"coaps://127.0.0.1:{s.dtls_port}"
    yield s
    s.stop()


def test_fault_in_the_dtls_channel(any_hub, dtls_srv, caplog):
    before = any_hub.errors
    server = dtls_srv.secure_endpoint.channel.server
    server.receive = Once(server.receive)  # the channel's call into the engine
    with Client(psk=("id", "key"), **FAST) as c:
        assert c.get(dtls_srv.suri + "/hello").payload == b"Hello, world!"
    _assert_reported(any_hub, before, caplog)
    assert dtls_srv.stats["internal_errors"] >= 1


def test_dtls_engine_bugs_are_logged_with_their_traceback(any_hub, dtls_srv, caplog, monkeypatch):
    """A bug inside the engine is caught at its boundary, counted as
    ``dtls_internal_errors`` and reported with its traceback through the hub."""
    before = any_hub.errors
    once = Once(DtlsServer._receive)
    monkeypatch.setattr(DtlsServer, "_receive", lambda self, *args: once(self, *args))
    with caplog.at_level(logging.ERROR), Client(psk=("id", "key"), **FAST) as c:
        assert c.get(dtls_srv.suri + "/hello").code == Code.CONTENT
    assert dtls_srv.stats["dtls_internal_errors"] == 1
    _assert_reported(any_hub, before, caplog)
    assert "DTLS engine" in caplog.text


def test_error_reports_are_rate_limited(any_hub, caplog):
    from greencoap import hub as hubmod

    before = any_hub.errors
    for _ in range(hubmod.ERROR_LOG_BURST + 50):
        try:
            raise RuntimeError("injected fault")
        except RuntimeError:
            any_hub.handle_error("a test")
    assert any_hub.errors == before + hubmod.ERROR_LOG_BURST + 50
    assert caplog.text.count("Traceback") <= hubmod.ERROR_LOG_BURST


# -- wake-ups ----------------------------------------------------------------------


def test_a_failed_send_leaves_no_exchange_to_wake_a_later_wait(any_hub, srv, monkeypatch):
    with Client(timeout=0.5) as c:
        ep = c.endpoint
        channel_type = type(ep.channel)
        real = channel_type.sendto

        def refuse(self, data, addr):
            raise OSError("injected send failure")

        monkeypatch.setattr(channel_type, "sendto", refuse)
        with pytest.raises(OSError, match="injected send failure"):
            c.get(srv.uri + "/hello")
        monkeypatch.setattr(channel_type, "sendto", real)
        assert ep.layer.pending() == 0  # nothing left registered
        t0 = time.monotonic()
        sleep(0.8)  # past the failed call's 0.5 s timeout: nothing may cut this short
        assert time.monotonic() - t0 >= 0.79
        assert c.get(srv.uri + "/hello").code == Code.CONTENT


def test_late_failure_of_a_cancelled_exchange_wakes_nothing(any_hub, srv):
    """A wait that gave up (its greenlet was killed) is not resumed by its
    exchange's late end; the greenlet's next wait is undisturbed."""
    router_slow = srv.router

    @router_slow.get("/slow")
    def slow(request):
        sleep(0.3)
        return "late"

    with Client(timeout=5) as c:
        seen = []

        def caller():
            try:
                c.get(srv.uri + "/slow", timeout=0.1)
            except greencoap.RequestTimeoutError:
                pass
            t0 = time.monotonic()
            sleep(0.5)  # the slow response arrives during this sleep
            seen.append(time.monotonic() - t0)

        g = spawn(caller)
        g.join(3)
        assert seen and seen[0] >= 0.49


# -- queues ------------------------------------------------------------------------


def test_queue_get_timeout_bounds_the_whole_wait(any_hub):
    q = Queue()
    t0 = time.monotonic()
    g = spawn(q.get, timeout=0.3)

    def steal():  # wake the getter again and again, taking the item before it runs
        for i in range(20):
            sleep(0.05)
            q.put(i)
            q.get_nowait()

    spawn(steal)
    g.join(3)
    assert isinstance(g.exception, Empty)
    assert time.monotonic() - t0 < 0.6  # not 0.3 s per wake-up


def test_queue_put_timeout_bounds_the_whole_wait(any_hub):
    q = Queue(maxsize=1)
    q.put("full")
    t0 = time.monotonic()
    g = spawn(q.put, "more", timeout=0.3)

    def churn():
        for _ in range(20):
            sleep(0.05)
            q.get_nowait()
            q.put_nowait("full again")

    spawn(churn)
    g.join(3)
    assert g.exception is not None and type(g.exception).__name__ == "Full"
    assert time.monotonic() - t0 < 0.6


def test_a_woken_getter_that_leaves_passes_the_item_on(any_hub):
    q = Queue()
    a = spawn(q.get)
    b = spawn(q.get, timeout=2)
    sleep(0.01)  # both wait, a first
    a.kill(block=False)  # a is killed ...
    q.put("item")  # ... after put chose it: the item must reach b
    assert b.get(timeout=2) == "item"
    assert isinstance(a.value, GreenletExit)
    assert q.qsize() == 0


# -- signals -----------------------------------------------------------------------

SIGINT_SCRIPT = textwrap.dedent(
    """
    import os, signal, socket, sys, threading, time
    import greencoap
    from greencoap import Router, Server, Client

    router = Router()

    @router.get("/spin")
    def spin(request):
        yield "0"
        os.kill(os.getpid(), signal.SIGINT)  # lands while this observer greenlet runs
        t = time.monotonic()
        while time.monotonic() - t < 0.3:
            pass
        yield "1"
        while True:
            greencoap.sleep(1)
            yield "x"

    srv = Server(router, host="127.0.0.1", port=0)
    srv.start()

    def observe():
        with Client(timeout=5) as c:
            obs = c.observe(f"coap://127.0.0.1:{srv.port}/spin")
            for _ in obs.iter(timeout=5):
                pass

    greencoap.spawn(observe)
    try:
        srv.serve_forever(timeout=10)
    except KeyboardInterrupt:
        print("stopped by SIGINT", flush=True)
        sys.exit(0)
    print("not stopped", flush=True)
    sys.exit(1)
    """
)


@pytest.mark.parametrize("backend", ["uring", "epoll"])
def test_sigint_in_an_observer_greenlet_stops_the_server(backend):
    from tests.conftest import require_or_skip, uring_usable

    if backend == "uring":
        reason = uring_usable()
        require_or_skip(reason is None, f"io_uring ({reason})", "GREENCOAP_REQUIRE_URING")
    import os

    env = dict(os.environ, GREENCOAP_HUB=backend)
    p = subprocess.run(
        [sys.executable, "-c", SIGINT_SCRIPT], capture_output=True, text=True, timeout=30, env=env
    )
    assert "stopped by SIGINT" in p.stdout, (p.stdout, p.stderr)
    assert p.returncode == 0
