"""Hub micro-benchmarks: greencoap's scheduler primitives against gevent's, same run.

    .venv/bin/python bench/hub.py [--quick] [--repeat N] [--uring]

What it measures, in nanoseconds per operation (lower is better), with
``greencoap.spawn/sleep/joinall/Event`` against ``gevent.spawn/sleep/joinall``
and ``gevent.event.Event``:

* sleep(0) ping-pong — two greenlets each calling ``sleep(0)`` in a loop; one
  op = one round trip (A yields → B runs → B yields → A runs again);
* spawn + join, one at a time — ``g = spawn(f); g.join()`` of a trivial ``f``;
* spawn ×10k + joinall — batch creation, per greenlet;
* 100k timers — spawn 100,000 greenlets that each ``sleep(uniform(0, 1 ms))``
  (so the timer heap holds ~100k entries), ``joinall``; per greenlet, the
  spawn + timer push + wake + exit, minus nothing;
* sleep(0.0001) loop — one greenlet sleeping 100 µs 2,000 times; the ns/op is
  wall time per call, so the excess over 100,000 ns is timer overshoot and
  loop overhead (an epoll_wait with a millisecond timeout shows up here);
* Event ping-pong — two greenlets and two Events: A sets e1 and waits e2,
  B waits e1, clears it, sets e2; one op = one round trip (two set → wake);
* Event.set waking 10k waiters — per woken greenlet.

How: each library runs in its own child process (this script with
``--child``), pinned to CPU 0, greencoap with ``GREENCOAP_HUB=epoll`` and
without gevent imported; each benchmark runs once as a warm-up and then
``--repeat`` times (default 5; ``--quick``: 3 with smaller counts), and the
median is shown. ratio = greencoap / gevent: below 1 means greencoap is faster.
``--uring`` adds a column for greencoap on its io_uring hub (not in the ratio).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable

import _common as c

# name, full count, quick count
BENCHES = [
    ("sleep(0) ping-pong round trip", 200_000, 50_000),
    ("spawn + join, one at a time", 100_000, 20_000),
    ("spawn ×10k + joinall, per greenlet", 10_000, 10_000),
    ("100k timers: spawn + sleep(≤1 ms) + joinall, per timer", 100_000, 100_000),
    ("sleep(0.0001) in a loop, wall time per call", 2_000, 500),
    ("Event set → wake ping-pong round trip", 100_000, 20_000),
    ("Event.set waking 10k waiters, per waiter", 10_000, 10_000),
]


def load(lib: str) -> tuple[Callable, Callable, Callable, type]:
    """(spawn, sleep, joinall, Event) of ``lib``."""
    if lib == "gevent":
        import gevent
        import gevent.event

        return gevent.spawn, gevent.sleep, gevent.joinall, gevent.event.Event
    import greencoap

    return greencoap.spawn, greencoap.sleep, greencoap.joinall, greencoap.Event


def make_benches(lib: str) -> list[Callable[[int], float]]:
    """One function per BENCHES entry: takes the count, returns elapsed seconds."""
    spawn, sleep, joinall, Event = load(lib)  # noqa: N806 - a class
    perf = time.perf_counter

    def pingpong(n: int) -> float:
        def loop() -> None:
            for _ in range(n):
                sleep(0)

        t0 = perf()
        joinall([spawn(loop), spawn(loop)])
        return perf() - t0

    def spawn_join(n: int) -> float:
        def f() -> None:
            pass

        t0 = perf()
        for _ in range(n):
            spawn(f).join()
        return perf() - t0

    def spawn_many(n: int) -> float:
        def f() -> None:
            pass

        t0 = perf()
        joinall([spawn(f) for _ in range(n)])
        return perf() - t0

    def timers(n: int) -> float:
        rnd = random.Random(42)
        delays = [rnd.uniform(0, 0.001) for _ in range(n)]
        t0 = perf()
        joinall([spawn(sleep, d) for d in delays])
        return perf() - t0

    def sleep_loop(n: int) -> float:
        t0 = perf()
        for _ in range(n):
            sleep(0.0001)
        return perf() - t0

    def event_pingpong(n: int) -> float:
        e1, e2 = Event(), Event()

        def a() -> None:
            for _ in range(n):
                e1.set()
                e2.wait()
                e2.clear()

        def b() -> None:
            for _ in range(n):
                e1.wait()
                e1.clear()
                e2.set()

        t0 = perf()
        joinall([spawn(b), spawn(a)])
        return perf() - t0

    def event_fanout(n: int) -> float:
        ev = Event()
        gs = [spawn(ev.wait) for _ in range(n)]
        sleep(0)  # let every waiter park
        sleep(0)
        t0 = perf()
        ev.set()
        joinall(gs)
        return perf() - t0

    return [pingpong, spawn_join, spawn_many, timers, sleep_loop, event_pingpong, event_fanout]


def child_main(lib: str, quick: bool, repeat: int) -> int:
    benches = make_benches(lib)
    out = {}
    for (name, full, small), fn in zip(BENCHES, benches, strict=True):
        n = small if quick else full
        fn(max(1, n // 10))  # warm-up
        samples = [fn(n) / n * 1e9 for _ in range(repeat)]
        out[name] = {"ns": c.median(samples), "min": min(samples), "max": max(samples)}
    if lib == "greencoap":
        import greencoap

        out["_backend"] = greencoap.get_hub().backend
    else:
        import gevent

        out["_backend"] = type(gevent.get_hub().loop).__module__
    c.child_print(out)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller counts, 3 repeats")
    ap.add_argument("--repeat", type=int, help="measured repeats per benchmark (default 5)")
    ap.add_argument(
        "--uring", action="store_true", help="add a column for greencoap on its io_uring hub"
    )
    ap.add_argument("--child", choices=("greencoap", "gevent"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    repeat = args.repeat or (3 if args.quick else 5)
    if args.child:
        return child_main(args.child, args.quick, repeat)

    started = time.monotonic()
    version = c.code_version()
    libs = [("greencoap", "greencoap", {"GREENCOAP_HUB": "epoll"}), ("gevent", "gevent", {})]
    if args.uring:
        libs.append(("greencoap-uring", "greencoap", {"GREENCOAP_HUB": "uring"}))
    res = {}
    for key, lib, env in libs:
        cmd = [c.PYTHON, __file__, "--child", lib, "--repeat", str(repeat)]
        if args.quick:
            cmd.append("--quick")
        res[key] = c.run_json(cmd, c.CLIENT_CPU, timeout=600, env=env)
        print(f"  {key} done ({res[key]['_backend']})", file=sys.stderr, flush=True)

    c.heading(
        f"Hub primitives — greencoap (hub {res['greencoap']['_backend']}) vs gevent "
        f"({res['gevent']['_backend']}), median of {repeat}, ns/op"
    )
    headers = ["operation", "greencoap ns/op", "gevent ns/op", "ratio"]
    if args.uring:
        headers.append("greencoap io_uring hub ns/op")
    rows = []
    for name, _, _ in BENCHES:
        g, v = res["greencoap"][name]["ns"], res["gevent"][name]["ns"]
        row = [name, c.fmt_int(g), c.fmt_int(v), c.fmt_ratio(c.ratio(g, v))]
        if args.uring:
            row.append(c.fmt_int(res["greencoap-uring"][name]["ns"]))
        rows.append(row)
    print(c.md_table(headers, rows))
    print(
        "\nratio = greencoap / gevent (below 1.00× greencoap is faster). "
        "The sleep(0.0001) row includes the 100,000 ns asked for."
    )
    spread = []
    for lib in res:
        for name, _, _ in BENCHES:
            d = res[lib][name]
            if d["max"] > 1.5 * d["min"]:
                spread.append(f"{lib} '{name}' {d['min']:,.0f}–{d['max']:,.0f}")
    if spread:
        print("\n- noisy (max > 1.5 × min over repeats): " + "; ".join(spread))
    c.footer(version, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
