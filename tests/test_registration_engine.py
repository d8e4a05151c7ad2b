"""The RD registration engine (RFC 9176 §5.3) on a fake clock: what it sends
and when, refresh timing, re-registration after 4.04, back-off, removal."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greencoap.protocol.registration import (
    Registration,
    RegistrationConfig,
    RegistrationState,
)

CREATED, DELETED, CHANGED, NOT_FOUND, BAD_REQUEST, UNAVAILABLE = 65, 66, 68, 132, 128, 163


def reg(**kw) -> Registration:
    cfg = RegistrationConfig(endpoint=kw.pop("endpoint", "dev-7"), **kw)
    return Registration(cfg, random.Random(1))


def test_first_registration_waits_for_its_delay_then_posts_the_links():
    r = reg(lifetime=600, payload=b"</temp>;rt=temp", params=[("d", "lab"), ("et", "sensor")])
    r.start(100.0, delay=2.5)
    assert r.state == RegistrationState.WAITING and r.next_time() == 102.5
    assert r.poll(102.4) is None
    a = r.poll(102.5)
    assert (a.kind, a.method, a.path) == ("register", "POST", "/rd")
    assert a.query == ["ep=dev-7", "lt=600", "d=lab", "et=sensor"]
    assert a.payload == b"</temp>;rt=temp" and a.content_format == 40
    assert r.poll(200.0) is None and r.next_time() is None  # one in flight at a time
    assert r.on_response(CREATED, "/rd/4521", 103.0) is None
    assert r.registered and r.location == "/rd/4521" and r.expires == 703.0
    assert r.stats["registrations"] == 1


def test_refresh_comes_well_before_the_lifetime_ends_and_spreads():
    times = []
    for seed in range(50):
        r = Registration(
            RegistrationConfig("e", lifetime=100, refresh=0.75, jitter=0.1), random.Random(seed)
        )
        r.start(0.0)
        r.poll(0.0)
        r.on_response(CREATED, "/rd/1", 0.0)
        times.append(r.next_time())
    assert all(65.0 <= t <= 75.0 for t in times)
    assert max(times) - min(times) > 5.0  # devices registered together spread apart


def test_refresh_is_an_empty_post_to_the_location_and_keeps_it_alive():
    r = reg(lifetime=100, update_params=[("lt", "100")])
    r.start(0.0)
    r.poll(0.0)
    r.on_response(CREATED, "/rd/9", 0.0)
    for _ in range(5):
        t = r.next_time()
        a = r.poll(t)
        assert (a.kind, a.method, a.path, a.payload, a.query) == (
            "refresh",
            "POST",
            "/rd/9",
            b"",
            ["lt=100"],
        )
        assert r.state == RegistrationState.REFRESHING
        r.on_response(CHANGED, None, t + 0.1)
        assert r.expires == pytest.approx(t + 100.1) and r.next_time() < r.expires
    assert r.stats["refreshes"] == 5 and r.stats["registrations"] == 1


def test_a_404_to_a_refresh_registers_anew_at_once():
    r = reg(lifetime=100)
    r.start(0.0)
    r.poll(0.0)
    r.on_response(CREATED, "/rd/9", 0.0)
    t = r.next_time()
    r.poll(t)
    r.on_response(NOT_FOUND, None, t)
    assert not r.registered and r.next_time() == t
    a = r.poll(t)
    assert a.kind == "register" and a.path == "/rd"
    r.on_response(CREATED, "/rd/10", t)
    assert r.location == "/rd/10" and r.stats["reregistrations"] == 1


def test_timeouts_back_off_exponentially_with_a_cap():
    r = reg(retry_base=2.0, retry_cap=30.0)
    r.start(0.0)
    now, waits = 0.0, []
    for _ in range(8):
        r.poll(now)
        r.on_failure(now)
        waits.append(r.next_time() - now)
        now = r.next_time()
    for i, w in enumerate(waits):
        base = min(30.0, 2.0 * 2**i)
        assert base <= w <= min(30.0, base) * 1.5 + 1e-9
    assert r.stats["timeouts"] == 8 and r.stats["failures"] == 8 and "timeout" in r.last_error
    r.poll(now)
    r.on_response(CREATED, "/rd/1", now)  # success resets the back-off
    assert r.last_error is None and r._failures == 0


def test_a_server_error_retries_and_a_client_error_waits_the_cap():
    r = reg(retry_base=1.0, retry_cap=60.0)
    r.start(0.0)
    r.poll(0.0)
    r.on_response(UNAVAILABLE, None, 0.0)
    assert 1.0 <= r.next_time() <= 1.5 and "5.03" in r.last_error
    r.poll(r.next_time())
    r.on_response(BAD_REQUEST, None, 2.0)
    assert r.next_time() == 62.0 and "4.00" in r.last_error
    r.poll(62.0)
    r.on_response(CREATED, None, 62.0)  # 2.01 without a location is no registration
    assert not r.registered and "Location" in r.last_error


def test_refresh_failing_past_the_end_of_the_registration_registers_anew():
    r = reg(lifetime=10, retry_base=2.0, retry_cap=2.0)
    r.start(0.0)
    r.poll(0.0)
    r.on_response(CREATED, "/rd/1", 0.0)
    now = r.next_time()
    kinds = []
    while now < 30:
        a = r.poll(now)
        kinds.append(a.kind)
        r.on_failure(now)
        now = r.next_time()
    assert kinds[0] == "refresh" and "register" in kinds
    assert kinds.index("register") <= 4  # not before the lifetime is gone


def test_stop_removes_and_a_late_registration_is_removed_too():
    r = reg()
    r.start(0.0)
    r.poll(0.0)
    r.on_response(CREATED, "/rd/5", 0.0)
    a = r.stop(1.0)
    assert (a.kind, a.method, a.path) == ("remove", "DELETE", "/rd/5")
    assert r.state == RegistrationState.REMOVED and r.next_time() is None
    assert r.poll(1e9) is None
    # stopped while the registration was in flight: its late answer is removed
    r = reg()
    r.start(0.0)
    r.poll(0.0)
    assert r.stop(0.5) is None
    late = r.on_response(CREATED, "/rd/6", 0.7)
    assert late is not None and late.path == "/rd/6" and late.method == "DELETE"
    assert r.on_response(CREATED, "/rd/6", 0.8) is None  # once
    assert not r.registered


def test_reboot_forgets_and_registers_again():
    r = reg()
    r.start(0.0)
    r.poll(0.0)
    r.on_response(CREATED, "/rd/5", 0.0)
    r.reboot(10.0, delay=1.0)
    assert not r.registered and r.next_time() == 11.0
    assert r.poll(11.0).kind == "register"


def test_lwm2m_style_registration():
    r = reg(
        endpoint="urn:imei:490154203237518",
        path="/rd",
        params=[("lwm2m", "1.1"), ("b", "U")],
        payload=b'</>;rt="oma.lwm2m";ct=11543,</1/0>,</3/0>',
        lifetime=300,
    )
    r.start(0.0)
    a = r.poll(0.0)
    assert a.query == ["ep=urn:imei:490154203237518", "lt=300", "lwm2m=1.1", "b=U"]


@pytest.mark.parametrize(
    "kw",
    [
        dict(endpoint=""),
        dict(lifetime=0),
        dict(refresh=1.0),
        dict(jitter=0.9),
        dict(path="rd"),
        dict(retry_base=0),
    ],
)
def test_bad_configuration_is_refused(kw):
    with pytest.raises(ValueError):
        RegistrationConfig(**{"endpoint": "e", **kw})


EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["ok", "created", "404", "503", "400", "timeout", "stop", "reboot"]),
        st.floats(0.0, 50.0),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(EVENTS, st.integers(0, 2**32))
def test_property_one_action_at_a_time_and_always_something_scheduled(events, seed):
    """Whatever answers come: at most one action in flight; while running,
    either one is in flight or the next is scheduled; a registration's
    refresh is always due before it ends; after stop nothing but removals."""
    r = Registration(RegistrationConfig("e", lifetime=60, retry_cap=20.0), random.Random(seed))
    now = 0.0
    r.start(now)
    stopped = False
    for what, dt in events:
        now += dt
        if what == "stop":
            r.stop(now)
            stopped = True
            continue
        if what == "reboot":
            r.reboot(now)
            stopped = False
            continue
        t = r.next_time()
        if stopped:
            assert t is None and r.poll(now + 1e6) is None
            continue
        assert (t is None) == (r.in_flight is not None)
        if t is not None:
            now = max(now, t)
            a = r.poll(now)
            assert a is not None and r.poll(now) is None
        if r.registered and r.in_flight is None:
            assert r.next_time() < r.expires
        if r.in_flight is None:
            continue
        if what == "timeout":
            r.on_failure(now)
        else:
            code = {
                "ok": CHANGED,
                "created": CREATED,
                "404": NOT_FOUND,
                "503": UNAVAILABLE,
                "400": BAD_REQUEST,
            }[what]
            r.on_response(code, "/rd/1" if code == CREATED else None, now)
        if r.registered:
            assert r.next_time() is not None and r.next_time() < r.expires


def test_wake_ends_a_back_off_but_not_a_scheduled_refresh():
    r = reg(retry_base=10.0)
    r.start(0.0)
    r.poll(0.0)
    r.on_failure(0.0)
    assert r.next_time() >= 10.0
    r.wake(1.0)
    assert r.next_time() == 1.0
    r.poll(1.0)
    r.on_response(CREATED, "/rd/1", 1.0)
    due = r.next_time()
    r.wake(2.0)  # no back-off running: the refresh stays where it was
    assert r.next_time() == due
