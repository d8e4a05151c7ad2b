"""RFC 7641 §3.3.1 on the client: an observation whose Max-Age passes with
no newer notification re-registers with the same token; a server that lost
it (restarted) notifies again and the iteration goes on by itself; a server
gone for good ends it with a clear error after ``max_reregistrations``."""

from __future__ import annotations

import time

import pytest

import greencoap
from greencoap import Client, Code, RequestTimeoutError, Response, Router, Server

pytestmark = pytest.mark.timeout(60)


def quiet_router(values: list) -> Router:
    """A resource that answers with Max-Age 1 and then never notifies."""
    router = Router()

    @router.get("/quiet")
    def quiet(request):
        values.append(request.message.token)
        yield Response(Code.CONTENT, f"v{len(values)}", max_age=1)
        while True:
            greencoap.sleep(3600)
            yield "never"

    return router


def test_a_stale_observation_reregisters_with_the_same_token(hub):
    tokens: list = []
    srv = Server(quiet_router(tokens), host="127.0.0.1", port=0).start()
    try:
        with Client(timeout=3) as c, c.observe(f"coap://127.0.0.1:{srv.port}/quiet") as obs:
            items = obs.iter(timeout=6)
            assert next(items).text == "v1"
            t0 = time.monotonic()
            again = next(items)  # nothing came for Max-Age (1 s) + slack: re-registered
            assert again.text == "v2" and again.observe is not None
            assert 2.5 <= time.monotonic() - t0 < 5
            assert obs.reregistrations == 1 and obs.active
        assert tokens[0] == tokens[1]  # the same token (§3.3.1)
        assert srv.stats["observers_dropped_replaced"] == 1
    finally:
        srv.stop()


def test_the_iteration_resumes_after_the_server_restarted(hub):
    tokens: list = []
    srv = Server(quiet_router(tokens), host="127.0.0.1", port=0).start()
    port = srv.port
    with Client(timeout=3) as c, c.observe(f"coap://127.0.0.1:{port}/quiet") as obs:
        items = obs.iter(timeout=8)
        assert next(items).text == "v1"
        crash(srv)  # gone without a word: its observation is lost
        new: list = []
        srv = Server(quiet_router(new), host="127.0.0.1", port=port).start()  # "rebooted"
        try:
            again = next(items)  # Max-Age passed: re-registered with the new server
            assert again.code == Code.CONTENT and again.text == "v1"  # its state, counted anew
            assert new == tokens and obs.active
        finally:
            srv.stop()


def crash(srv: Server) -> None:
    """The server's socket goes away without final notifications (a crash)."""
    srv.observers.by_key.clear()
    srv.endpoint.close()
    srv.endpoint = None


def test_a_server_gone_for_good_ends_the_iteration_with_an_error(hub):
    tokens: list = []
    srv = Server(quiet_router(tokens), host="127.0.0.1", port=0).start()
    with Client(timeout=0.5, ack_timeout=0.1, ack_random_factor=1.0, max_retransmit=1) as c:
        obs = c.observe(f"coap://127.0.0.1:{srv.port}/quiet", max_reregistrations=2)
        items = obs.iter(timeout=15)
        assert next(items).text == "v1"
        crash(srv)  # silently gone: no final notification
        with pytest.raises(RequestTimeoutError, match="lost: 2 re-registrations"):
            next(items)
        assert obs.reregistrations == 2
    srv.stop()


def test_reregistration_can_be_turned_off(hub):
    tokens: list = []
    srv = Server(quiet_router(tokens), host="127.0.0.1", port=0).start()
    try:
        with Client(timeout=3) as c:
            obs = c.observe(f"coap://127.0.0.1:{srv.port}/quiet", reregister=False)
            items = obs.iter(timeout=3.5)
            assert next(items).text == "v1"
            with pytest.raises(RequestTimeoutError):
                next(items)
            assert obs.reregistrations == 0 and len(tokens) == 1
    finally:
        srv.stop()
