"""Locust throughput: greencoap's ``CoapUser`` against a hand-written raw-UDP Locust user.

    .venv/bin/python bench/locust.py [--quick] [--duration S] [--runs N] [--users N]

What it measures: requests per second that one Locust process on one core gets
out of 50 users doing ``GET /hello`` back to back (``wait_time = constant(0)``)
against coapecho, through

* bench/locust_coapuser.py — ``greencoap.contrib.locust.CoapUser``
  (``self.client.get("/hello")``: a greencoap ``Client`` per user, on
  gevent's hub), and
* bench/locust_raw.py — a raw-UDP ``User``: one ``gevent.socket`` per user,
  CoAP bytes packed by hand, ``sendto``/``recvfrom``, one request event per
  request: roughly the least a CoAP Locust user can cost.

How: coapecho runs pinned to CPU 1; ``locust -f FILE --headless -u 50 -r 50
-t Ds --json --only-summary`` runs pinned to CPU 0 (no ``--processes``), D=10
by default (``--quick``: 3 s), ``--runs`` times (default 3; ``--quick``: 1),
median shown. req/s = num_requests / (last_request_timestamp − start_time)
from Locust's JSON (the whole run, ramp-up included); the note under the
table also gives the median of Locust's per-second counts without the first
and last second (steady state). ``× raw`` compares with the raw user of the
same invocation.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import _common as c

LOCUST = str(c.ROOT / ".venv" / "bin" / "locust")
FILES = [
    ("raw", "raw-UDP User (gevent socket, hand-packed CoAP)", "locust_raw.py"),
    ("coapuser", "greencoap CoapUser", "locust_coapuser.py"),
]


def parse_locust_json(stdout: str) -> dict:
    """Sum Locust's ``--json`` stats entries; req/s over the run and in steady state."""
    start = stdout.find("[")
    entries = json.loads(stdout[start : stdout.rindex("]") + 1])
    if not entries:
        raise RuntimeError("Locust reported no requests")
    n = sum(e["num_requests"] for e in entries)
    fails = sum(e["num_failures"] for e in entries)
    t0 = min(e["start_time"] for e in entries)
    t1 = max(e["last_request_timestamp"] for e in entries)
    per_sec: dict[int, int] = {}
    for e in entries:
        for sec, k in e["num_reqs_per_sec"].items():
            per_sec[int(sec)] = per_sec.get(int(sec), 0) + k
    inner = [per_sec[s] for s in sorted(per_sec)[1:-1]]
    if "total_rps" in entries[0]:
        rps = sum(e["total_rps"] for e in entries)
    else:
        rps = n / (t1 - t0) if t1 > t0 else 0.0
    return {
        "num_requests": n,
        "failures": fails,
        "duration": t1 - t0,
        "rps": rps,
        "steady_rps": c.median(inner) if inner else rps,
    }


def run_locust(locustfile: str, port: int, users: int, duration: int) -> dict:
    cmd = c.pinned(
        [
            LOCUST,
            "-f",
            str(c.BENCH / locustfile),
            "--host",
            f"coap://{c.HOST}:{port}",
            "--headless",
            "-u",
            users,
            "-r",
            users,
            "-t",
            f"{duration}s",
            "--json",
            "--only-summary",
            "--loglevel",
            "WARNING",
            "--stop-timeout",
            "5",
        ],
        c.CLIENT_CPU,
    )
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=c.ROOT)
    try:
        out, err, _ = c.communicate_or_kill(p, duration + 90)
    finally:
        c.reap(p)  # interrupted: stop it by its PID
    if "[" not in out:
        raise RuntimeError(f"locust exit {p.returncode}, no JSON:\n{err[-3000:]}")
    res = parse_locust_json(out)
    res["exit"] = p.returncode
    res["stderr"] = err
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 run of 3 s per user class")
    ap.add_argument("--duration", type=int, help="seconds per Locust run (default 10)")
    ap.add_argument("--runs", type=int, help="runs per user class, median shown (default 3)")
    ap.add_argument("--users", type=int, default=50, help="Locust users (default 50)")
    args = ap.parse_args()
    duration = args.duration or (3 if args.quick else 10)
    runs = args.runs or (1 if args.quick else 3)
    c.ensure_tools()
    started = time.monotonic()
    version = c.code_version()
    results: dict[str, dict] = {}
    notes: list[str] = []
    port = c.free_port()
    with c.start_coapecho(port) as echo:
        c.wait_ready(echo, port)
        time.sleep(1.0)
        for key, _label, fname in FILES:
            outs = []
            try:
                for i in range(runs):
                    r = run_locust(fname, port, args.users, duration)
                    outs.append(r)
                    print(
                        f"  {key:9} run {i + 1}/{runs}: {r['rps']:>9,.0f} req/s "
                        f"(steady {r['steady_rps']:,.0f}) {r['num_requests']} requests "
                        f"{r['failures']} failures in {r['duration']:.2f} s, exit {r['exit']}",
                        file=sys.stderr,
                        flush=True,
                    )
                    if not echo.alive():
                        raise RuntimeError(f"coapecho died:\n{echo.output()}")
            except Exception as e:  # noqa: BLE001 - report and go on
                notes.append(f"{key} failed: {str(e).strip()[:400]}")
                print(f"  {key} FAILED: {e}", file=sys.stderr, flush=True)
                continue
            results[key] = c.median_run(outs)

    c.heading(
        f"Locust — {args.users} users, GET /hello against coapecho, one core, "
        f"{runs} × {duration} s, median run"
    )
    raw = results.get("raw", {}).get("rps")
    rows = []
    for key, label, _ in FILES:
        r = results.get(key)
        if r is None:
            continue
        rows.append(
            [label, c.fmt_int(r["rps"]), f"{r['failures']:,}", c.fmt_ratio(c.ratio(r["rps"], raw))]
        )
    print(c.md_table(["user class", "req/s", "failures", "× raw"], rows))
    steady = [
        f"{label} {results[key]['steady_rps']:,.0f}" for key, label, _ in FILES if key in results
    ]
    if steady:
        notes.insert(
            0,
            "steady state (median of per-second counts, first and last second "
            "dropped): " + "; ".join(steady) + " req/s",
        )
    for key, label, _ in FILES:
        r = results.get(key)
        if r and c.rps_range(r):
            notes.append(f"{label}: runs {c.rps_range(r)} req/s")
        if r and r["exit"] not in (0, None):
            notes.append(f"{label}: locust exited {r['exit']} (1 = some requests failed)")
    c.footer(version, started, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
