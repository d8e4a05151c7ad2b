"""Tests for the greenlet hub (greencoap.hub) and its primitives (greencoap.sync).

Every test takes the ``hub`` fixture so that it runs once per I/O backend
(io_uring, then epoll).  Timing bounds are generous: they check that waits
are concurrent and that wake-ups are prompt, not how fast the machine is.
"""

from __future__ import annotations

import threading
import time
from time import monotonic

import pytest

from greencoap import hub as hubmod
from greencoap.errors import RequestTimeoutError
from greencoap.hub import (
    BlockingSwitchOutError,
    GreenletExit,
    LoopExit,
    Timeout,
    get_hub,
    getcurrent,
    joinall,
    sleep,
    spawn,
)
from greencoap.sync import AsyncResult, Empty, Event, Full, Queue

pytestmark = pytest.mark.timeout(30)


class Boom(Exception):
    pass


# -- spawn / join / get ------------------------------------------------------


def test_spawn_get_returns_value(hub):
    g = spawn(lambda a, b=0: a + b, 2, b=3)
    assert not g.ready()  # scheduled, not run yet
    assert g.get(timeout=1) == 5
    assert g.ready() and g.successful()
    assert g.value == 5
    assert g.exception is None
    assert g.join(0) is True


def test_join_timeout_returns_false_while_running(hub):
    g = spawn(sleep, 0.3)
    t0 = monotonic()
    assert g.join(0.02) is False
    assert monotonic() - t0 < 0.25
    assert not g.ready()
    with pytest.raises(Timeout) as info:
        g.get(timeout=0.02)
    assert info.value.seconds == 0.02  # the hub's Timeout, as gevent raises: no request was made
    with pytest.raises(Timeout):
        g.get(block=False)
    g.kill()


def test_get_reraises_exception(hub, capsys):
    def boom():
        sleep(0)
        raise Boom("from greenlet")

    g = spawn(boom)
    with pytest.raises(Boom, match="from greenlet"):
        g.get(timeout=1)
    assert isinstance(g.exception, Boom)
    assert not g.successful() and g.ready()
    # someone was waiting for it, so it is not also printed
    assert "Boom" not in capsys.readouterr().err


def test_unobserved_exception_is_printed_with_traceback(hub, capsys):
    def unobserved_boom():
        raise ZeroDivisionError("nobody joined me")

    g = spawn(unobserved_boom)
    sleep(0.01)
    assert g.ready() and isinstance(g.exception, ZeroDivisionError)
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert "ZeroDivisionError: nobody joined me" in err
    assert "unobserved_boom" in err


# -- kill ----------------------------------------------------------------------


def test_kill_sleeping_greenlet(hub):
    trail = []

    def sleeper():
        try:
            sleep(10)
            trail.append("woke")
        finally:
            trail.append("finally")

    g = spawn(sleeper)
    sleep(0)  # let it start and park
    assert trail == [] and not g.ready()
    linked = []
    g.link(linked.append)
    t0 = monotonic()
    g.kill(timeout=2)
    assert monotonic() - t0 < 1
    assert g.ready()
    assert trail == ["finally"]
    assert isinstance(g.value, GreenletExit)
    assert g.exception is None
    sleep(0)
    assert linked == [g]


def test_kill_with_exception_class(hub):
    def sleeper():
        sleep(10)

    g = spawn(sleeper)
    sleep(0)
    g.kill(Boom, timeout=2)
    assert g.ready() and isinstance(g.exception, Boom)
    with pytest.raises(Boom):
        g.get(timeout=0)


def test_kill_never_started_greenlet(hub):
    ran = []
    g = spawn(ran.append, "ran")
    linked = []
    g.link(linked.append)
    g.kill()  # before the hub had a turn: the function never runs
    assert g.ready()
    assert isinstance(g.value, GreenletExit)
    sleep(0.01)
    assert ran == []
    assert linked == [g]
    assert g.join(0) is True


# -- link / unlink -------------------------------------------------------------


def test_link_unlink(hub):
    calls = []

    def cb1(g):
        calls.append(("cb1", g))

    def cb2(g):
        calls.append(("cb2", g))

    g = spawn(sleep, 0.01)
    g.link(cb1)
    g.link(cb2)
    g.unlink(cb2)
    g.unlink(cb2)  # unlinking twice is harmless
    assert g.join(1)
    sleep(0)
    assert calls == [("cb1", g)]
    g.link(cb2)  # linking a finished greenlet calls back on the next turn
    assert calls == [("cb1", g)]
    sleep(0)
    assert calls == [("cb1", g), ("cb2", g)]


def test_linked_exception_goes_to_link_not_stderr(hub, capsys):
    def boom():
        raise Boom("linked")

    seen = []
    g = spawn(boom)
    g.link(lambda gl: seen.append(gl.exception))
    sleep(0.01)
    assert len(seen) == 1 and isinstance(seen[0], Boom)
    assert "linked" not in capsys.readouterr().err


# -- joinall -------------------------------------------------------------------


def test_joinall_waits_for_all(hub):
    gs = [spawn(sleep, d) for d in (0.03, 0.01, 0.02)]
    assert joinall(gs, timeout=2) == gs
    assert all(g.ready() for g in gs)


def test_joinall_timeout_returns_only_finished(hub):
    fast = spawn(sleep, 0.01)
    slow = spawn(sleep, 5)
    t0 = monotonic()
    done = joinall([fast, slow], timeout=0.1)
    elapsed = monotonic() - t0
    assert done == [fast]
    assert 0.08 <= elapsed < 1
    slow.kill()


def test_joinall_timeout_returns_finished_ones_listed_after_a_slow_one(hub):
    slow = spawn(sleep, 5)
    fast = spawn(sleep, 0.01)
    done = joinall([slow, fast], timeout=0.1)
    assert fast.ready()
    assert done == [fast]  # "those that finished within timeout", whatever the order
    slow.kill()


# -- sleep ---------------------------------------------------------------------


def test_sleeps_wake_in_order_of_their_length(hub):
    woke = []

    def sleeper(d):
        sleep(d)
        woke.append(d)

    delays = [0.05, 0.01, 0.04, 0.02, 0.03]
    gs = [spawn(sleeper, d) for d in delays]
    assert len(joinall(gs, timeout=2)) == len(delays)
    assert woke == sorted(delays)


def test_sleep_zero_yields_to_other_ready_greenlets(hub):
    log = []

    def worker(name):
        log.append(name + "1")
        sleep(0)
        log.append(name + "2")

    gs = [spawn(worker, "a"), spawn(worker, "b")]
    joinall(gs, timeout=1)
    assert log == ["a1", "b1", "a2", "b2"]


def test_sleep_actually_waits(hub):
    t0 = monotonic()
    sleep(0.05)
    assert monotonic() - t0 >= 0.045


def test_thousand_sleepers_run_concurrently(hub):
    t0 = monotonic()
    gs = [spawn(sleep, 0.2) for _ in range(1000)]
    done = joinall(gs, timeout=5)
    elapsed = monotonic() - t0
    assert len(done) == 1000
    assert all(g.successful() for g in gs)
    assert 0.19 <= elapsed < 0.8


# -- Timeout -------------------------------------------------------------------


def test_timeout_raises_itself(hub):
    t0 = monotonic()
    with pytest.raises(Timeout) as info:
        with Timeout(0.05) as t:
            sleep(2)
    assert info.value is t
    assert 0.04 <= monotonic() - t0 < 1
    assert not t.pending


def test_timeout_false_exits_block_silently(hub):
    reached = []
    t0 = monotonic()
    with Timeout(0.05, False):
        sleep(2)
        reached.append(True)
    assert reached == []
    assert monotonic() - t0 < 1


def test_timeout_with_exception_raises_that_exception(hub):
    exc = Boom("custom")
    with pytest.raises(Boom) as info:
        with Timeout(0.05, exc):
            sleep(2)
    assert info.value is exc


def test_timeout_cancelled_when_block_finishes(hub):
    with Timeout(0.03) as t:
        sleep(0)
    assert not t.pending
    sleep(0.06)  # the cancelled timer must not fire into us now


def test_timeout_none_never_fires(hub):
    with Timeout(None) as t:
        assert not t.pending
        sleep(0.01)


def test_nested_inner_longer_timeout_does_not_catch_outer(hub):
    caught_by_inner = []
    after_inner = []
    with pytest.raises(Timeout) as info:
        with Timeout(0.05) as outer:
            try:
                with Timeout(1) as inner:
                    sleep(2)
            except Timeout as e:
                if e is inner:
                    caught_by_inner.append(e)
                raise
    assert info.value is outer
    assert caught_by_inner == []
    # an inner Timeout(x, False) must not swallow the outer timeout either
    with pytest.raises(Timeout) as info:
        with Timeout(0.05) as outer2:
            with Timeout(1, False):
                sleep(2)
            after_inner.append(True)
    assert info.value is outer2
    assert after_inner == []


def test_interrupted_sleep_does_not_wake_a_later_wait(hub):
    # a sleep cut short by a Timeout must not leave its wake-up behind
    g = spawn(sleep, 0.5)
    with Timeout(0.02, False):
        sleep(0.06)
    t0 = monotonic()
    assert g.join(0.15) is False
    assert monotonic() - t0 >= 0.12
    assert not g.ready()
    g.kill()


# -- Event ---------------------------------------------------------------------


def test_event_set_wakes_all_waiters(hub):
    ev = Event()
    woke = []

    def waiter(i):
        woke.append((i, ev.wait(timeout=2)))

    gs = [spawn(waiter, i) for i in range(5)]
    sleep(0)
    assert woke == []
    assert ev.statistics() == {"set": False, "waiters": 5}
    ev.set()
    assert len(joinall(gs, timeout=1)) == 5
    assert sorted(woke) == [(i, True) for i in range(5)]
    assert ev.is_set()
    assert ev.wait(0) is True  # already set: returns at once
    ev.clear()
    assert not ev.is_set()


def test_event_wait_timeout_returns_false(hub):
    ev = Event()
    t0 = monotonic()
    assert ev.wait(timeout=0.05) is False
    assert 0.04 <= monotonic() - t0 < 1
    assert ev.statistics()["waiters"] == 0


# -- AsyncResult ---------------------------------------------------------------


def test_async_result_set(hub):
    r = AsyncResult()

    def setter():
        sleep(0.01)
        r.set(42)

    spawn(setter)
    assert not r.ready()
    assert r.get(timeout=1) == 42
    assert r.ready()


def test_async_result_set_exception(hub):
    r = AsyncResult()
    exc = Boom("async")
    spawn(lambda: r.set_exception(exc))
    with pytest.raises(Boom) as info:
        r.get(timeout=1)
    assert info.value is exc


def test_async_result_get_timeout(hub):
    r = AsyncResult()
    t0 = monotonic()
    with pytest.raises(Timeout) as info:
        r.get(timeout=0.05)
    assert not isinstance(info.value, RequestTimeoutError)  # no request was made
    assert 0.04 <= monotonic() - t0 < 1
    with pytest.raises(Timeout):
        r.get(block=False)
    r.set(7)
    assert r.successful() and r.get(block=False) == 7


# -- Queue ---------------------------------------------------------------------


def test_queue_fifo(hub):
    q = Queue()
    for i in range(5):
        q.put(i)
    assert q.qsize() == 5 and len(q) == 5
    assert [q.get(timeout=1) for _ in range(5)] == [0, 1, 2, 3, 4]
    assert q.empty()


def test_queue_get_blocks_until_put(hub):
    q = Queue()
    got = []
    g = spawn(lambda: got.append(q.get(timeout=2)))
    sleep(0.01)
    assert got == [] and q.statistics()["getters"] == 1
    q.put("x")
    assert g.join(1)
    assert got == ["x"]


def test_queue_get_timeout_raises_empty(hub):
    q = Queue()
    t0 = monotonic()
    with pytest.raises(Empty):
        q.get(timeout=0.05)
    assert 0.04 <= monotonic() - t0 < 1
    with pytest.raises(Empty):
        q.get_nowait()
    assert q.statistics()["getters"] == 0


def test_queue_maxsize_put_blocks_until_get(hub):
    q = Queue(maxsize=1)
    q.put("a")
    assert q.full()
    log = []

    def producer():
        q.put("b", timeout=2)
        log.append("put b")

    g = spawn(producer)
    sleep(0.02)
    assert log == [] and q.qsize() == 1
    assert q.get(timeout=1) == "a"
    assert g.join(1)
    assert log == ["put b"]
    assert q.get_nowait() == "b"


def test_queue_put_nowait_full(hub):
    q = Queue(maxsize=2)
    q.put_nowait(1)
    q.put_nowait(2)
    with pytest.raises(Full):
        q.put_nowait(3)
    with pytest.raises(Full):
        q.put(3, timeout=0.02)
    assert q.qsize() == 2
    assert q.statistics()["putters"] == 0


# -- threads -------------------------------------------------------------------


def test_run_callback_threadsafe_wakes_waiting_greenlet(hub):
    ev = Event()

    def other_thread():
        time.sleep(0.05)
        hub.run_callback_threadsafe(ev.set)

    th = threading.Thread(target=other_thread)
    t0 = monotonic()
    th.start()
    try:
        assert ev.wait(timeout=5) is True
        assert monotonic() - t0 < 1
    finally:
        th.join(5)


def test_run_in_thread_keeps_hub_running(hub):
    ticks = []

    def ticker():
        while True:
            ticks.append(monotonic())
            sleep(0.01)

    tg = spawn(ticker)

    def blocking():
        time.sleep(0.2)
        return threading.get_ident()

    t0 = monotonic()
    ident = hub.run_in_thread(blocking, timeout=5)
    elapsed = monotonic() - t0
    tg.kill()
    assert ident != threading.get_ident()
    assert 0.19 <= elapsed < 1
    assert len(ticks) >= 5  # the ticker ran while the thread blocked


def test_run_in_thread_propagates_exception(hub):
    def fails(x):
        raise Boom(f"in thread {x}")

    with pytest.raises(Boom, match="in thread 7"):
        hub.run_in_thread(fails, 7, timeout=5)
    assert hub.run_in_thread(lambda: "still works", timeout=5) == "still works"


# -- worker pool ---------------------------------------------------------------


def test_run_in_worker_reuses_worker_greenlet(hub):
    seen = []

    def job(tag):
        seen.append((tag, getcurrent()))

    hub.run_callback(hub.run_in_worker, job, "a")
    sleep(0.01)
    hub.run_callback(hub.run_in_worker, job, "b")
    sleep(0.01)
    assert [tag for tag, _ in seen] == ["a", "b"]
    worker = seen[0][1]
    assert worker is seen[1][1]
    assert worker is not getcurrent() and worker is not hub


def test_run_in_worker_parks_and_pool_grows(hub):
    seen = []

    def slow_job(tag):
        seen.append((tag, getcurrent()))
        sleep(0.02)
        seen.append((tag + "-done", getcurrent()))

    hub.run_callback(hub.run_in_worker, slow_job, "a")
    hub.run_callback(hub.run_in_worker, slow_job, "b")  # "a" is parked: needs a 2nd worker
    sleep(0.06)
    workers = {tag: g for tag, g in seen}
    assert set(workers) == {"a", "b", "a-done", "b-done"}
    assert workers["a"] is workers["a-done"]
    assert workers["b"] is workers["b-done"]
    assert workers["a"] is not workers["b"]
    hub.run_callback(hub.run_in_worker, slow_job, "c")
    sleep(0.05)
    c_worker = dict(seen)["c"]
    assert dict(seen)["c-done"] is c_worker
    assert any(c_worker is w for w in (workers["a"], workers["b"]))  # reused, not new


def test_worker_exception_reported_and_worker_kept(hub, caplog):
    seen = []
    errors = hub.errors

    def bad_job():
        seen.append(getcurrent())
        raise Boom("worker job failed")

    def good_job():
        seen.append(getcurrent())

    hub.run_callback(hub.run_in_worker, bad_job)
    sleep(0.01)
    hub.run_callback(hub.run_in_worker, good_job)
    sleep(0.01)
    assert len(seen) == 2
    assert seen[0] is seen[1]
    assert hub.errors == errors + 1 and isinstance(hub.last_error, Boom)
    err = caplog.text
    assert "bad_job" in err and "Boom: worker job failed" in err
    assert "Traceback" in err


# -- loop errors ---------------------------------------------------------------


def test_loop_exit_when_nothing_can_wake_the_wait(hub):
    ev = Event()
    t0 = monotonic()
    with pytest.raises(hubmod.LoopExit):
        ev.wait()
    assert monotonic() - t0 < 1
    assert LoopExit is hubmod.LoopExit
    # the hub is still usable afterwards
    t0 = monotonic()
    sleep(0.01)
    assert monotonic() - t0 >= 0.009


def test_loop_exit_when_joining_a_deadlocked_greenlet(hub):
    g = spawn(Event().wait)
    with pytest.raises(LoopExit):
        g.join()
    assert not g.ready()


def test_blocking_inside_a_hub_callback_raises(hub):
    errors = []

    def callback():
        try:
            sleep(0.01)
        except BaseException as e:  # noqa: BLE001 - record whatever it is
            errors.append(type(e))
        else:
            errors.append(None)

    hub.run_callback(callback)
    sleep(0.01)
    assert errors == [BlockingSwitchOutError]
    hub.call_later(0, callback)  # a timer callback runs in the hub too
    sleep(0.02)
    assert errors == [BlockingSwitchOutError, BlockingSwitchOutError]


# -- timers --------------------------------------------------------------------


def test_call_later_order_and_cancel(hub):
    log = []
    hub.call_later(0.03, log.append, "c")
    hub.call_later(0.01, log.append, "a")
    t = hub.call_later(0.02, log.append, "cancelled")
    hub.call_later(0.02, log.append, "b")
    t.cancel()
    t.cancel()  # idempotent
    sleep(0.06)
    assert log == ["a", "b", "c"]


def test_call_at_same_deadline_is_fifo(hub):
    log = []
    d = hub.now() + 0.01
    for i in range(5):
        hub.call_at(d, log.append, i)
    sleep(0.03)
    assert log == [0, 1, 2, 3, 4]


def test_run_callback_runs_on_next_turn_in_order(hub):
    log = []
    hub.run_callback(log.append, 1)
    hub.run_callback(log.append, 2)
    assert log == []
    sleep(0)
    assert log == [1, 2]


# -- get_hub -------------------------------------------------------------------


def test_get_hub_is_per_thread(hub):
    assert get_hub() is hub
    assert get_hub() is get_hub()
    result = {}

    def in_thread():
        try:
            h = get_hub(hub.backend)
            result["same_in_thread"] = get_hub() is h
            result["hub"] = h
            result["ident"] = h.thread_ident
            t0 = monotonic()
            sleep(0.02)
            result["slept"] = monotonic() - t0
            h.destroy()
            result["closed"] = h.closed
            h2 = get_hub(hub.backend)
            result["fresh_after_destroy"] = h2 is not h
            h2.destroy()
        except BaseException as e:  # noqa: BLE001 - reported by the assertions below
            result["error"] = e

    th = threading.Thread(target=in_thread)
    th.start()
    th.join(5)
    assert "error" not in result, result.get("error")
    assert result["same_in_thread"] is True
    assert result["hub"] is not hub
    assert result["ident"] != hub.thread_ident  # the other thread's number (os_thread_ident)
    assert result["slept"] >= 0.019
    assert result["closed"] is True
    assert result["fresh_after_destroy"] is True
    assert get_hub() is hub  # the main thread's hub is untouched
    sleep(0.01)


def test_main_thread_hub_never_blocks_past_the_signal_check_interval(hub, monkeypatch):
    """A signal that lands just before the backend blocks must not wait for the
    next far timer (a SIGTERM'd server would hang): the main thread's waits
    are capped; other threads' hubs are not."""
    from greencoap.hub import SIGNAL_CHECK_INTERVAL

    waits = []
    real = hub.io.poll

    def poll(timeout):
        waits.append(timeout)
        real(timeout)

    monkeypatch.setattr(hub.io, "poll", poll)
    monkeypatch.setattr(hub, "max_wait", 0.05)  # the real interval is 1 s
    hubmod.sleep(0.3)
    assert waits and max(waits) <= 0.05 and len(waits) >= 5
    assert SIGNAL_CHECK_INTERVAL == 1.0

    seen = {}

    def in_thread():
        from greencoap.hub import Hub

        h = Hub("epoll")
        seen["cap"] = h.max_wait
        h.io.close()

    t = threading.Thread(target=in_thread)
    t.start()
    t.join()
    assert seen["cap"] is None
