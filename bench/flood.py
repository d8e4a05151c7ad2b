"""Flood: one source floods the server while a good client measures its latency.

    .venv/bin/python bench/flood.py [--hubs uring,epoll] [--duration 6]

The server (the demo router, ``GET /hello``) runs in a child process pinned
to CPU 1; the flooder and the good client are ``build/coapload`` runs on CPU
0, each from its own port:

* good client: ``--window 1 --sockets 1 --rate 80`` CON GETs (a device
  polling 80 times a second, within the server's per-source rate of 100/s),
  measuring p50/p99 latency;
* flooder: ``--window 4096 --sockets 1`` CON GETs at full speed from one
  port (closed loop: a request it loses is replaced after ``--timeout-ms``).

Scenarios per hub: the good client alone (idle); under the flood with early
shedding (the default, ``Server(shed_trigger=512, rate=100, burst=200)``);
under the flood with it off (``shed_trigger=None``); and, right after the
flood, one request in flight as fast as the server answers (recovery: no
source is limited any more, the rate is the idle one).  The table gives the
good client's latency and losses, what the flooder got answered per second (its held rate) and sent,
what the server shed early, and the kernel's UDP RcvbufErrors for the run.  The
flooder's answered rate leaves out its first second (shedding engages after
100 ms of congestion): it is the rate the flooder is held to.
Figures are ratios against the idle row of the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402

GOOD = {"window": 1, "sockets": 1, "rate": 80}  # a device polling 80 times a second
FAST = {"window": 1, "sockets": 1, "rate": 0}  # one request in flight, as fast as answered
FLOOD = {"window": 4096, "sockets": 1, "rate": 0}


def serve(port: int, hub: str, shed: bool, seconds: float) -> None:
    """Child: the demo router on 127.0.0.1:port for ``seconds``; prints its stats."""
    os.environ["GREENCOAP_HUB"] = hub
    from greencoap import Server
    from greencoap.demo import build_router

    kw = {} if shed else {"shed_trigger": None}
    srv = Server(build_router(), host="127.0.0.1", port=port, echo_factor=None, **kw).start()
    print("ready", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: srv.hub.run_callback_threadsafe(srv.stop))
    try:
        srv.serve_forever(timeout=seconds)
    finally:
        s = srv.stats
        keys = ("requests_received", "shed_early", "shed_engagements", "internal_errors")
        print(json.dumps({k: s.get(k, 0) for k in keys}), flush=True)


def coapload(port: int, duration: float, shape: dict, warmup: float = 0.2) -> subprocess.Popen:
    cmd = c.pinned(
        [
            c.COAPLOAD,
            "--port",
            port,
            "--path",
            "hello",
            "--type",
            "con",
            "--window",
            shape["window"],
            "--sockets",
            shape["sockets"],
            "--duration",
            duration,
            "--warmup",
            warmup,
            "--timeout-ms",
            1000,
            "--rate",
            shape["rate"],
        ],
        c.CLIENT_CPU,
    )
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def result_of(p: subprocess.Popen, timeout: float) -> dict:
    out, _ = p.communicate(timeout=timeout)
    return c.parse_result(out)


def scenario(hub: str, shed: bool, flood: bool, duration: float) -> dict:
    """One server run: optionally a flood, the good client measuring inside it."""
    port = c.free_port()
    total = duration + 15  # the server outlives every run of the scenario
    server = subprocess.Popen(
        c.pinned(
            [
                c.PYTHON,
                __file__,
                "--serve",
                port,
                "--hub",
                hub,
                "--shed",
                "on" if shed else "off",
                "--for",
                total,
            ],
            c.SERVER_CPU,
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=c.ROOT,
    )
    try:
        assert server.stdout.readline().strip() == "ready", server.stderr.read()
        rcv0 = c.udp_rcvbuf_errors()
        # the flooder's first second (before and as shedding engages) is not
        # measured: its figure is the rate it is held to
        flooder = coapload(port, duration + 0.5, FLOOD, warmup=1.0) if flood else None
        if flood:
            time.sleep(1.0)  # the flood is on; shedding (if any) has engaged
        good = result_of(coapload(port, duration, GOOD), duration + 20)
        flooded = result_of(flooder, duration + 20) if flooder else None
        if flood:
            time.sleep(1.5)  # the flood is over: the limiter disengages (hold 1 s)
        after = result_of(coapload(port, 2.0, FAST), 30)
        rcv = c.udp_rcvbuf_errors() - rcv0
    finally:
        server.send_signal(signal.SIGTERM)
        out, err, _ = c.communicate_or_kill(server, 10)
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    stats = json.loads(lines[-1]) if lines else {}
    return {"good": good, "flood": flooded, "after": after, "server": stats, "rcvbuf": rcv}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hubs", default="uring,epoll")
    ap.add_argument("--duration", type=float, default=6.0)
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--hub", default="uring", help=argparse.SUPPRESS)
    ap.add_argument("--shed", default="on", help=argparse.SUPPRESS)
    ap.add_argument("--for", dest="seconds", type=float, default=30, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.hub, args.shed == "on", args.seconds)
        return 0
    c.ensure_tools()
    started = time.monotonic()
    version = c.code_version()
    rows = []
    for hub in args.hubs.split(","):
        idle = scenario(hub, True, False, args.duration)
        on = scenario(hub, True, True, args.duration)
        off = scenario(hub, False, True, args.duration)
        for name, run, good in (
            ("idle", idle, idle["good"]),
            ("flood, shedding on", on, on["good"]),
            ("flood, shedding off", off, off["good"]),
            ("idle, as fast as answered", idle, idle["after"]),
            ("after the flood, as fast as answered", on, on["after"]),
        ):
            fl = run["flood"] if good is not run.get("after") else None
            base = (idle["after"] if good is run["after"] else idle["good"])["p99_us"] or 1
            rows.append(
                [
                    hub,
                    name,
                    f"{good['p50_us'] / 1000:.2f}",
                    f"{good['p99_us'] / 1000:.2f}",
                    c.fmt_ratio(good["p99_us"] / base),
                    good["lost"],
                    c.fmt_int(good["rps"]),
                    c.fmt_int(fl["rps"]) if fl else "—",
                    c.fmt_int(fl["sent"] / (args.duration + 0.5)) if fl and "sent" in fl else "—",
                    c.fmt_int(run["server"].get("shed_early", 0)) if fl else "—",
                    c.fmt_int(run["rcvbuf"]) if fl else "—",
                ]
            )
    c.heading(
        "Flood — one port floods (window 4096, CON GET /hello), a good client "
        f"(window 1) measures, {args.duration:g} s"
    )
    print(
        c.md_table(
            [
                "hub",
                "scenario",
                "good p50 ms",
                "good p99 ms",
                "p99 × idle",
                "good lost",
                "good req/s",
                "flooder answered/s",
                "flooder sent/s",
                "shed early",
                "RcvbufErrors",
            ],
            rows,
            align="ll" + "r" * 9,
        )
    )
    c.footer(version, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
