"""CoapUser: headless Locust runs, request events, catch_response, settings.

Importing locust monkey-patches the whole process unless
``LOCUST_SKIP_MONKEY_PATCH`` is set, so this module sets it before importing
anything from locust; the full Locust runs happen in subprocesses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

os.environ.setdefault("LOCUST_SKIP_MONKEY_PATCH", "1")

from .conftest import free_port, hub_for, require_or_skip  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = ROOT / "loadtest" / "locustfile.py"


def _locust_or_skip():
    try:
        import locust  # noqa: F401
    except ImportError:
        require_or_skip(False, "locust")


def _unpatched_env() -> dict:
    """This process skips Locust's monkey-patching; a Locust run must not (it
    is what users run: gevent patches threading, sockets, time)."""
    return {k: v for k, v in os.environ.items() if k != "LOCUST_SKIP_MONKEY_PATCH"}


def _run_locust(host: str, users: int, seconds: int, env: dict, *extra: str) -> list[dict]:
    _locust_or_skip()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(LOCUSTFILE),
            "--host",
            host,
            "--headless",
            "-u",
            str(users),
            "-r",
            str(users),
            "-t",
            f"{seconds}s",
            "--json",
            "--only-summary",
            "--stop-timeout",
            "2",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        env={**_unpatched_env(), **env},
    )
    assert out.stdout.strip(), out.stderr[-3000:]
    return json.loads(out.stdout)


def test_headless_50_users_run_concurrently(demo_proc):
    stats = _run_locust(demo_proc.uri, 50, 5, {"LOCUST_SLOW_ONLY": "1", "GREENCOAP_HUB": ""})
    (slow,) = [s for s in stats if s["name"] == "/slow"]
    # 50 users × ~5 s / 0.1 s per call ≈ 2,500; sequential blocking would give ~50
    assert slow["num_requests"] >= 500, slow["num_requests"]
    assert slow["num_failures"] == 0
    assert slow["method"] == "GET"


def test_command_line_timeout_option_reports_stable_failures(demo_proc):
    stats = _run_locust(
        demo_proc.uri,
        2,
        2,
        {"LOCUST_SLOW_ONLY": "1", "LOCUST_SLOW_MS": "800"},
        "--coap-timeout",
        "0.2",
    )
    (slow,) = [s for s in stats if s["name"] == "/slow"]
    assert slow["num_requests"] >= 4 and slow["num_failures"] == slow["num_requests"]


@pytest.fixture
def gevent_hub():
    yield from hub_for("gevent")


@pytest.fixture
def env_and_events():
    _locust_or_skip()
    from locust.env import Environment

    env = Environment(events=None)
    fired = []
    env.events.request.add_listener(lambda **kw: fired.append(kw))
    return env, fired


def _user_class(host):
    from greencoap.contrib.locust import CoapUser

    class Device(CoapUser):
        def context(self):
            return {"device": "d1"}

    Device.host = host
    return Device


def test_request_events_have_httpuser_keys(gevent_hub, env_and_events):
    from greencoap.demo import build_router
    from greencoap.server import Server

    env, fired = env_and_events
    srv = Server(build_router(), host="127.0.0.1", port=0).start()
    try:
        user = _user_class(f"coap://127.0.0.1:{srv.port}")(env)
        r = user.client.get("/hello", context={"extra": 1})
        assert r.ok and r.text == "Hello, world!"
        r404 = user.client.get("/missing/42", name="/missing/:id")
        assert not r404.ok and int(r404.code) == 0x84  # returned, not raised
        user.client.post("/echo", b"abc")
        user.on_stop()
    finally:
        srv.stop()
    assert [e["request_type"] for e in fired] == ["GET", "GET", "POST"]
    ok, missing, echo = fired
    assert set(ok) >= {
        "request_type",
        "name",
        "response_time",
        "response_length",
        "response",
        "context",
        "exception",
        "start_time",
        "url",
    }
    assert ok["name"] == "/hello" and ok["exception"] is None and ok["response_length"] == 13
    assert ok["context"] == {"device": "d1", "extra": 1}
    assert ok["url"] == f"coap://127.0.0.1:{srv.port}/hello" and ok["response_time"] > 0
    assert missing["name"] == "/missing/:id" and str(missing["exception"]) == "4.04 Not Found"
    assert echo["response_length"] == 3 and echo["exception"] is None


def test_timeouts_and_rst_are_failures_with_stable_messages(gevent_hub, env_and_events):
    env, fired = env_and_events
    port = free_port()  # nobody listens: no answer
    user = _user_class(f"127.0.0.1:{port}")(env)  # a bare host:port works too
    r1 = user.client.get("/x", timeout=0.2)
    r2 = user.client.get("/y", timeout=0.2)
    assert r1.code is None and r1.payload == b"" and not r2.ok
    assert str(fired[0]["exception"]) == str(fired[1]["exception"]) == "timeout: no response"
    user.on_stop()


def test_catch_response(gevent_hub, env_and_events):
    from greencoap.demo import build_router
    from greencoap.server import Server

    env, fired = env_and_events
    srv = Server(build_router(), host="127.0.0.1", port=0).start()
    try:
        user = _user_class(f"coap://127.0.0.1:{srv.port}")(env)
        with user.client.get("/missing", catch_response=True) as r:
            assert not fired  # reported on leaving the block
            r.success()
        with user.client.get("/hello", catch_response=True) as r:
            r.failure("not what I wanted")
        with user.client.get("/missing", catch_response=True):
            pass
        user.on_stop()
    finally:
        srv.stop()
    assert fired[0]["exception"] is None
    assert str(fired[1]["exception"]) == "not what I wanted"
    assert str(fired[2]["exception"]) == "4.04 Not Found"


def test_missing_host_stops_the_test(env_and_events):
    from locust.exception import StopTest

    env, _ = env_and_events
    with pytest.raises(StopTest):
        _user_class(None)(env)


def test_run_single_user(tmp_path, demo_proc):
    _locust_or_skip()
    script = tmp_path / "single.py"
    script.write_text(
        textwrap.dedent("""
        from locust import task, constant, run_single_user
        from locust.exception import StopUser
        from greencoap.contrib.locust import CoapUser

        class One(CoapUser):
            wait_time = constant(0)
            n = 0

            @task
            def hello(self):
                self.client.get("/hello")
                One.n += 1
                if One.n == 3:
                    raise StopUser()

        if __name__ == "__main__":
            run_single_user(One)
            print("DONE", One.n)
    """)
    )
    out = subprocess.run(
        [sys.executable, str(script), "--host", demo_proc.uri],
        capture_output=True,
        text=True,
        timeout=60,
        env=_unpatched_env(),
        cwd=ROOT,
    )
    assert "DONE 3" in out.stdout, out.stdout + out.stderr
    assert out.stdout.count("/hello") >= 3  # run_single_user prints each request


def test_observe_reports_each_notification(gevent_hub, env_and_events, libcoap_server):
    env, fired = env_and_events
    user = _user_class(libcoap_server.uri)(env)
    with user.client.observe("/time", name="/time (observe)") as obs:
        got = []
        for r in obs.iter(timeout=5):
            got.append(r)
            if len(got) == 3:
                break
    user.on_stop()
    assert all(r.ok and r.text for r in got)
    assert [e["request_type"] for e in fired] == ["OBSERVE", "NOTIFY", "NOTIFY"]
    assert {e["name"] for e in fired} == {"/time (observe)"}
    assert all(e["exception"] is None and e["response_length"] > 0 for e in fired)


def test_headless_run_over_dtls_with_psk_options():
    """``--host coaps://… --coap-psk-identity/--coap-psk-key``: every user its own session."""
    port, dport = free_port(), free_port()
    from .conftest import Proc, demo_command

    p = Proc(
        demo_command(port, "--dtls-port", str(dport), "--psk", "loadtest:k3y"),
        port,
    )
    try:
        stats = _run_locust(
            f"coaps://127.0.0.1:{dport}",
            10,
            3,
            {"GREENCOAP_HUB": ""},
            "--coap-psk-identity",
            "loadtest",
            "--coap-psk-key",
            "k3y",
        )
    finally:
        out = p.stop()
    (hello,) = [s for s in stats if s["name"] == "/hello"]
    assert hello["num_requests"] >= 50 and hello["num_failures"] == 0, hello
    assert "'dtls_sessions_created': 10" in out, out[-2000:]


def test_wrong_psk_is_a_reported_failure(gevent_hub, env_and_events):
    from greencoap.demo import build_router
    from greencoap.server import Server

    env, fired = env_and_events
    srv = Server(
        build_router(), host="127.0.0.1", port=0, dtls_port=0, psk={"good": b"key"}
    ).start()
    try:
        cls = _user_class(f"coaps://127.0.0.1:{srv.dtls_port}")
        cls.psk_identity, cls.psk_key = "good", "key"
        user = cls(env)
        assert user.client.get("/whoami").text == "good"
        user.on_stop()
        cls.psk_key = "bad"
        user = cls(env)
        r = user.client.get("/hello")
        assert not r.ok and r.code is None
        user.on_stop()
    finally:
        srv.stop()
    assert fired[0]["exception"] is None
    assert str(fired[1]["exception"]).startswith("HandshakeError: DTLS with 127.0.0.1:")
