"""Server throughput: coapload against greencoap's demo server and its peers.

    .venv/bin/python bench/server.py [--quick] [--servers a,b,...] [--duration S] [--runs N]

What it measures: requests per second and latency of ``GET /hello`` (13-byte
body) served over UDP on 127.0.0.1, for CON and NON requests.

How: each server is started pinned to CPU 1 (``taskset -c 1``) on a free port,
afresh for each message type, and is ready when it answers a CoAP ping (empty
CON → RST); libcoap first gets ``PUT /hello "Hello, world!"`` (it has no
/hello of its own) and a GET must return it. Then ``coapload --type con|non
--window 64 --sockets 4 --duration D --warmup 1`` runs pinned to CPU 0, ``--runs``
times (default 3 × 5 s; ``--quick``: 1 × 2 s), and the run with the median
req/s is reported with its latency, ``lost`` and ``errors``. The ratios are
against coapecho (the C reference responder: the machine's limit) and libcoap
of the same message type in the same invocation.

Servers (``--servers`` takes letters or names):

  a  greencoap-uring   python -m greencoap.demo, GREENCOAP_HUB=uring
  b  greencoap-epoll   the same with GREENCOAP_HUB=epoll
  c  coapecho          build/coapecho -b 13
  d  libcoap           coap-server-notls -d 20 (after the PUT)
  e  aiocoap           bench/aiocoap_server.py
  f  greencoap-w2      greencoap with 2 workers, when the demo has --workers
                       (or Server takes workers=); skipped with a note otherwise
"""

from __future__ import annotations

import argparse
import inspect
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import _common as c

TYPES = ("con", "non")


@dataclass
class ServerSpec:
    letter: str
    name: str
    label: str
    # port -> (command, env), or None with a reason when unavailable
    command: Callable[[int], tuple[list[str], dict[str, str]]]
    setup: Callable[[int], None] | None = None
    available: Callable[[], str | None] = lambda: None  # None = available, else a note


def demo_cmd(hub: str, extra: tuple[str, ...] = ()) -> Callable:
    def cmd(port: int) -> tuple[list[str], dict[str, str]]:
        return (
            [c.PYTHON, "-m", "greencoap.demo", "--host", c.HOST, "--port", str(port), *extra],
            {"GREENCOAP_HUB": hub},
        )

    return cmd


def workers_support() -> str | None:
    """'demo' if the demo has --workers, 'server' if only Server(workers=), else None."""
    try:
        text = subprocess.run(
            [c.PYTHON, "-m", "greencoap.demo", "--help"],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=c.ROOT,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        text = ""
    if "--workers" in text:
        return "demo"
    try:
        from greencoap import Server

        if "workers" in inspect.signature(Server).parameters:
            return "server"
    except Exception:  # noqa: BLE001 - a broken import just means "unsupported"
        pass
    return None


def workers_cmd(port: int) -> tuple[list[str], dict[str, str]]:
    if workers_support() == "demo":
        return demo_cmd("uring", ("--workers", "2"))(port)
    code = (
        "import sys; from greencoap.demo import make_server; "
        "make_server(sys.argv[1], int(sys.argv[2]), workers=2).serve_forever()"
    )
    return [c.PYTHON, "-c", code, c.HOST, str(port)], {"GREENCOAP_HUB": "uring"}


def workers_available() -> str | None:
    if workers_support() is None:
        return (
            "greencoap-w2 skipped: `python -m greencoap.demo --help` has no --workers "
            "and greencoap.Server takes no workers="
        )
    return None


def libcoap_setup(port: int) -> None:
    """PUT /hello "Hello, world!" (libcoap -d creates it), then check that GET returns it."""
    subprocess.run(
        [
            "coap-client-notls",
            "-B",
            "5",
            "-m",
            "put",
            "-e",
            "Hello, world!",
            f"coap://{c.HOST}:{port}/hello",
        ],
        check=True,
        capture_output=True,
        timeout=15,
    )
    code, payload = c.coap_get(port, "hello")
    if code != 0x45 or payload != b"Hello, world!":
        raise RuntimeError(
            f"libcoap GET /hello after PUT gave {code >> 5}.{code & 31:02d} {payload!r}"
        )


SERVERS = [
    ServerSpec("a", "greencoap-uring", "greencoap demo (io_uring hub)", demo_cmd("uring")),
    ServerSpec("b", "greencoap-epoll", "greencoap demo (epoll hub)", demo_cmd("epoll")),
    ServerSpec(
        "c",
        "coapecho",
        "coapecho (C reference)",
        lambda p: ([str(c.COAPECHO), "-a", c.HOST, "-p", str(p), "-b", "13"], {}),
    ),
    ServerSpec(
        "d",
        "libcoap",
        "libcoap coap-server-notls",
        lambda p: (["coap-server-notls", "-A", c.HOST, "-p", str(p), "-d", "20"], {}),
        setup=libcoap_setup,
        available=lambda: (
            None
            if c.have("coap-server-notls") and c.have("coap-client-notls")
            else "libcoap skipped: coap-server-notls not installed"
        ),
    ),
    ServerSpec(
        "e",
        "aiocoap",
        "aiocoap",
        lambda p: (
            [c.PYTHON, str(c.BENCH / "aiocoap_server.py"), "--host", c.HOST, "--port", str(p)],
            {},
        ),
    ),
    ServerSpec(
        "f",
        "greencoap-w2",
        "greencoap demo --workers 2 (io_uring)",
        workers_cmd,
        available=workers_available,
    ),
]


def measure(spec: ServerSpec, type_: str, runs: int, duration: float) -> dict:
    """Start the server afresh, set it up, warm it up, run coapload ``runs`` times."""
    port = c.free_port()
    cmd, env = spec.command(port)
    with c.Pinned(cmd, c.SERVER_CPU, env=env, name=spec.name) as srv:
        c.wait_ready(srv, port)
        if spec.setup:
            spec.setup(port)
        time.sleep(1.0)  # let it settle (imports, first allocations) before the load
        results = []
        for i in range(runs):
            drops = c.udp_rcvbuf_errors()
            r = c.run_coapload(port, type_, duration, window=64, sockets=4)
            r["rcvbuf_errors"] = c.udp_rcvbuf_errors() - drops
            if not srv.alive():
                raise RuntimeError(f"{spec.name} died during run {i + 1}:\n{srv.output()}")
            results.append(r)
            print(
                f"  {spec.name:16} {type_} run {i + 1}/{runs}: {r['rps']:>8,} req/s "
                f"p50 {r['p50_us']} µs p99 {r['p99_us']} µs lost {r['lost']} "
                f"errors {r['errors']} unmatched {r['unmatched']} "
                f"client_cpu {r['client_cpu']:.2f} RcvbufErrors +{r['rcvbuf_errors']}",
                file=sys.stderr,
                flush=True,
            )
        best = c.median_run(results)
        srv.stop()
        said = [ln for ln in srv.output().splitlines() if "stats" in ln or "rror" in ln]
        if said:
            print(
                f"  {spec.name:16} {type_} server said: {said[-1][:400]}",
                file=sys.stderr,
                flush=True,
            )
        return best


def select(arg: str | None) -> list[ServerSpec]:
    if not arg:
        return SERVERS
    wanted = [w.strip() for w in arg.split(",") if w.strip()]
    out = []
    for w in wanted:
        match = [s for s in SERVERS if w in (s.letter, s.name)]
        if not match:
            raise SystemExit(
                f"unknown server {w!r}; choose from "
                + ", ".join(f"{s.letter}={s.name}" for s in SERVERS)
            )
        out.extend(m for m in match if m not in out)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 run of 2 s per server and type")
    ap.add_argument("--servers", help="comma-separated subset, e.g. a,b,c or coapecho,libcoap")
    ap.add_argument("--duration", type=float, help="measured seconds per run (default 5)")
    ap.add_argument("--runs", type=int, help="runs per server and type; median reported (3)")
    ap.add_argument("--types", default="con,non", help="message types (default con,non)")
    args = ap.parse_args()
    duration = args.duration or (2.0 if args.quick else 5.0)
    runs = args.runs or (1 if args.quick else 3)
    types = [t for t in args.types.split(",") if t in TYPES]
    c.ensure_tools()

    started = time.monotonic()
    version = c.code_version()
    results: dict[tuple[str, str], dict] = {}
    notes: list[str] = []
    for spec in select(args.servers):
        reason = spec.available()
        if reason:
            notes.append(reason)
            print(f"  {reason}", file=sys.stderr, flush=True)
            continue
        for t in types:
            try:
                results[spec.name, t] = measure(spec, t, runs, duration)
            except Exception as e:  # noqa: BLE001 - report the failure, go on with the rest
                notes.append(f"{spec.name} {t.upper()} failed: {str(e).strip()[:300]}")
                print(f"  {spec.name} {t} FAILED: {e}", file=sys.stderr, flush=True)

    c.heading(
        f"Server throughput — GET /hello, coapload --window 64 --sockets 4, "
        f"{runs} × {duration:g} s, median run"
    )
    rows = []
    for spec in SERVERS:
        for t in types:
            r = results.get((spec.name, t))
            if r is None:
                continue
            echo = results.get(("coapecho", t), {}).get("rps")
            lib = results.get(("libcoap", t), {}).get("rps")
            rows.append(
                [
                    spec.label,
                    t.upper(),
                    c.fmt_int(r["rps"]),
                    c.fmt_int(r["p50_us"]),
                    c.fmt_int(r["p99_us"]),
                    r["lost"],
                    r["errors"],
                    c.fmt_ratio(c.ratio(r["rps"], echo)),
                    c.fmt_ratio(c.ratio(r["rps"], lib)),
                ]
            )
    print(
        c.md_table(
            [
                "server",
                "type",
                "req/s",
                "p50 µs",
                "p99 µs",
                "lost",
                "errors",
                "× coapecho",
                "× libcoap",
            ],
            rows,
            align="llrrrrrrr",
        )
    )
    parts = []
    for t in types:
        u = results.get(("greencoap-uring", t), {}).get("rps")
        e = results.get(("greencoap-epoll", t), {}).get("rps")
        if u and e:
            parts.append(f"{u / e:.2f}× ({t.upper()})")
    if parts:
        print("\nio_uring / epoll = " + ", ".join(parts))
    busy = sorted(
        {
            f"{n} {t.upper()} ({r['client_cpu']:.2f})"
            for (n, t), r in results.items()
            if r["client_cpu"] >= 0.9
        }
    )
    if busy:
        notes.append(
            "coapload itself was near one full core (client_cpu ≥ 0.9) for: "
            + ", ".join(busy)
            + " — those rows are client-bound"
        )
    unmatched = sorted(
        f"{n} {t.upper()} ({r['unmatched']})" for (n, t), r in results.items() if r["unmatched"]
    )
    if unmatched:
        notes.append("unmatched replies (late or dedup-cache answers): " + ", ".join(unmatched))
    spread = [
        f"{n} {t.upper()} {c.rps_range(r)}" for (n, t), r in results.items() if c.rps_range(r)
    ]
    if spread:
        notes.append("req/s range over runs: " + "; ".join(spread))
    c.footer(version, started, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
