"""Threads are users too: one Client shared by many OS threads, created in
one thread and used from others, a thread-pool handler, mixed with
greenlets, observations iterated and cancelled from other threads, and
shutdown while threads wait (they get a clear error; nothing hangs)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import greencoap
from greencoap import Client, ClientClosedError, Code
from greencoap import hub as hubmod

pytestmark = pytest.mark.timeout(120)


def test_16_threads_share_one_client(hub, demo_proc):
    with Client(timeout=5) as c:
        errors, counts = [], []

        def work(n: int) -> None:
            ok = 0
            try:
                for i in range(200):
                    r = c.post(demo_proc.uri + "/echo", f"{n}:{i}".encode())
                    if r.code == Code.CONTENT and r.payload == f"{n}:{i}".encode():
                        ok += 1
            except Exception as e:  # noqa: BLE001 - collected for the assertion
                errors.append(e)
            counts.append(ok)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors and counts == [200] * 16
        assert c.stats["responses_received"] >= 3200


def test_a_client_made_in_one_thread_and_used_only_from_others(hub, demo_proc):
    made = {}

    def maker():
        made["c"] = Client(timeout=5)

    t = threading.Thread(target=maker)
    t.start()
    t.join()
    c = made["c"]
    results = []

    def user():
        results.append(c.get(demo_proc.uri + "/hello").text)

    users = [threading.Thread(target=user) for _ in range(4)]
    for u in users:
        u.start()
    for u in users:
        u.join(30)
    # and from this thread, which is not its home either
    results.append(c.get(demo_proc.uri + "/hello").text)
    assert results == ["Hello, world!"] * 5
    c.close()


def test_thread_pool_handlers(hub, demo_proc):
    """A web framework's worker pool: each 'request' makes two CoAP calls."""
    c = Client(timeout=5)

    def handle(i: int) -> tuple:
        sensor = c.get(f"{demo_proc.uri}/sensors/{i}").json()
        echo = c.post(demo_proc.uri + "/echo", str(i)).text
        return sensor["id"], echo

    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            out = list(pool.map(handle, range(100)))
        assert out == [(str(i), str(i)) for i in range(100)]
    finally:
        c.close()


def test_threads_and_greenlets_mix(hub, demo_proc):
    with Client(timeout=5) as c:
        from_threads = []

        def thread_calls():
            for _ in range(50):
                from_threads.append(c.get(demo_proc.uri + "/hello").code)

        t = threading.Thread(target=thread_calls)
        t.start()
        gs = [greencoap.spawn(c.get, demo_proc.uri + "/slow?ms=100") for _ in range(50)]
        assert len(greencoap.joinall(gs, timeout=20)) == 50
        assert all(g.value.code == Code.CONTENT for g in gs)
        deadline = time.monotonic() + 20
        while t.is_alive() and time.monotonic() < deadline:
            greencoap.sleep(0.05)  # the home hub keeps turning meanwhile
        assert from_threads == [Code.CONTENT] * 50


def test_observation_from_other_threads(hub, demo_proc):
    c = Client(timeout=5)
    got, cancelled = [], []
    started = threading.Event()

    def observer():
        obs = c.observe(demo_proc.uri + "/counter?interval=0.05")
        holder["obs"] = obs
        for r in obs.iter(timeout=5):
            got.append(r.text)
            started.set()
        cancelled.append(obs.cancelled)

    holder: dict = {}
    t = threading.Thread(target=observer)
    t.start()
    assert started.wait(10)
    time.sleep(0.3)

    def canceller():
        holder["obs"].cancel()

    t2 = threading.Thread(target=canceller)
    t2.start()
    t2.join(10)
    t.join(10)
    c.close()
    assert not t.is_alive() and cancelled == [True]
    assert len(got) >= 3 and got[:3] == ["0", "1", "2"]


def test_close_while_threads_wait(hub, demo_proc):
    c = Client(timeout=30)
    outcomes = []

    def slow():
        t0 = time.monotonic()
        try:
            c.get(demo_proc.uri + "/slow?ms=20000")
            outcomes.append(("answered", 0))
        except ClientClosedError:
            outcomes.append(("closed", time.monotonic() - t0))
        except Exception as e:  # noqa: BLE001
            outcomes.append((repr(e), 0))

    threads = [threading.Thread(target=slow) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    c.close()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    assert [o[0] for o in outcomes] == ["closed"] * 8, outcomes
    assert all(o[1] < 5 for o in outcomes)
    with pytest.raises(ClientClosedError):
        c.get(demo_proc.uri + "/hello")  # and later calls fail clearly too


def test_the_hub_thread_stops_with_its_last_client(hub, demo_proc):
    a, b = Client(timeout=5), Client(timeout=5)
    done = []

    def use(c):
        done.append(c.get(demo_proc.uri + "/hello").code)

    for c in (a, b):
        t = threading.Thread(target=use, args=(c,))
        t.start()
        t.join(10)
    shared = hubmod._shared
    assert shared is not None and a._remote is shared and b._remote is shared
    a.close()
    assert not shared.hub.closed  # b still uses it
    b.close()
    deadline = time.monotonic() + 5
    while not shared.hub.closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert shared.hub.closed and hubmod._shared is None
    assert done == [Code.CONTENT] * 2


def test_interpreter_exit_is_not_blocked():
    """A script that uses a client from a thread and never closes it exits."""
    script = textwrap.dedent(
        """
        import threading, greencoap
        from greencoap import Client, Router, Server
        c = Client(timeout=2)
        def use():
            try:
                c.get("coap://127.0.0.1:9/nothing", timeout=0.2)
            except greencoap.RequestTimeoutError:
                print("timed out", flush=True)
        t = threading.Thread(target=use); t.start(); t.join()
        """
    )
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and "timed out" in p.stdout, p.stderr
    assert time.monotonic() - t0 < 10


def test_os_thread_ident_sees_through_gevent_monkey_patching():
    """After ``gevent.monkey.patch_all()`` (what Locust does) every greenlet
    of a thread has the same OS thread identity: a client made in one
    greenlet is at home in the others (it once went to the hub thread and
    hung Locust workers)."""
    code = """
from gevent import monkey; monkey.patch_all()
import gevent, threading
from greencoap.hub import os_thread_ident
ids = []
gevent.joinall([gevent.spawn(lambda: ids.append(os_thread_ident())) for _ in range(3)])
other = []
t = threading.Thread(target=lambda: other.append(os_thread_ident()))
t.start(); t.join()
print(len(set(ids)) == 1 and ids[0] == os_thread_ident(), ids[0] != threading.get_ident())
"""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["True", "True"], out.stdout + out.stderr


def test_os_thread_ident_is_never_reused():
    """The OS gives a dead thread's ``get_ident()`` to the next thread; a
    client made in a thread that exited must not take the next one for its
    home (it then switched into the dead thread's hub: ``greenlet.error``)."""
    from greencoap.hub import os_thread_ident

    seen, raw = [], []
    for _ in range(20):
        t = threading.Thread(
            target=lambda: (seen.append(os_thread_ident()), raw.append(threading.get_ident()))
        )
        t.start()
        t.join()
    assert len(set(seen)) == 20 and os_thread_ident() not in seen
    assert len(set(raw)) < 20  # the OS did reuse identities here (the case this guards)
