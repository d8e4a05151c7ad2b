"""Client throughput: how many blocking GETs per second a client gets out of one core.

    .venv/bin/python bench/client.py [--quick] [--duration S] [--runs N] [--only NAMES]

What it measures: completed ``GET coap://127.0.0.1:P/hello`` requests per second
against coapecho (the C reference responder, pinned to CPU 1, so the server is
never the limit), for:

* greencoap ``Client(timeout=5)`` with 1, 64 and 1,000 greenlets
  (``greencoap.spawn``, ``greencoap.joinall``), each calling the blocking
  ``client.get(uri)`` in a loop, on the io_uring hub (GREENCOAP_HUB=uring)
  and on the epoll hub (GREENCOAP_HUB=epoll);
* aiocoap's client (asyncio) with 64 and 1,000 tasks each awaiting
  ``context.request(GET).response`` in a loop;
* a plain blocking ``socket`` loop — one socket, send a CON GET, ``recv`` the
  ACK, repeat — the floor for one request at a time.

How: every measurement runs in its own child process (this script with
``--child``) pinned to CPU 0 with ``taskset -c 0``. The child first runs the
same loop for a short unmeasured warm-up (1 s; 0.5 s with ``--quick``), then
for D seconds (default 5; ``--quick``: 2): workers stop starting new requests
at the deadline, the requests in flight are waited for, and req/s = completed
requests / elapsed time from start until the last one finished. ``--runs``
times (default 3; ``--quick``: 1); the median is shown. ``× aiocoap`` compares
with aiocoap at the same concurrency from the same invocation.
"""

from __future__ import annotations

import argparse
import sys
import time

import _common as c

GREENCOAP_CONC = (1, 64, 1000)
AIOCOAP_CONC = (64, 1000)


# -- children (run pinned to CPU 0) ---------------------------------------------
def child_greencoap(uri: str, n: int, duration: float, warmup: float) -> dict:
    import greencoap

    client = greencoap.Client(timeout=5)
    counts = {"ok": 0, "errors": 0}

    def worker(deadline: float) -> None:
        get = client.get
        mono = time.monotonic
        ok = err = 0
        while mono() < deadline:
            try:
                r = get(uri)
                if r.code == greencoap.Code.CONTENT:
                    ok += 1
                else:
                    err += 1
            except Exception:  # noqa: BLE001 - count timeouts/resets, keep going
                err += 1
        counts["ok"] += ok
        counts["errors"] += err

    def phase(seconds: float) -> float:
        counts["ok"] = counts["errors"] = 0
        t0 = time.monotonic()
        gs = [greencoap.spawn(worker, t0 + seconds) for _ in range(n)]
        done = greencoap.joinall(gs, timeout=seconds + 30)
        if len(done) != len(gs):
            raise RuntimeError(f"{len(gs) - len(done)} greenlets still running after the run")
        return time.monotonic() - t0

    phase(warmup)
    elapsed = phase(duration)
    stats = {k: v for k, v in client.stats.items() if v}
    backend = greencoap.get_hub().backend
    client.close()
    return {
        "ok": counts["ok"],
        "errors": counts["errors"],
        "elapsed": elapsed,
        "backend": backend,
        "stats": stats,
    }


def child_aiocoap(uri: str, n: int, duration: float, warmup: float) -> dict:
    import asyncio

    import aiocoap

    async def run() -> dict:
        ctx = await aiocoap.Context.create_client_context()
        counts = {"ok": 0, "errors": 0}

        async def worker(deadline: float) -> None:
            loop = asyncio.get_running_loop()
            while loop.time() < deadline:
                try:
                    r = await ctx.request(aiocoap.Message(code=aiocoap.GET, uri=uri)).response
                    if r.code == aiocoap.CONTENT:
                        counts["ok"] += 1
                    else:
                        counts["errors"] += 1
                except Exception:  # noqa: BLE001
                    counts["errors"] += 1

        async def phase(seconds: float) -> float:
            counts["ok"] = counts["errors"] = 0
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            await asyncio.wait_for(
                asyncio.gather(*(worker(t0 + seconds) for _ in range(n))), seconds + 30
            )
            return loop.time() - t0

        await phase(warmup)
        elapsed = await phase(duration)
        await ctx.shutdown()
        return {"ok": counts["ok"], "errors": counts["errors"], "elapsed": elapsed}

    return asyncio.run(run())


def child_socket(port: int, duration: float, warmup: float) -> dict:
    import os
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1.0)
    s.connect((c.HOST, port))
    token = os.urandom(2)
    counts = {"ok": 0, "errors": 0}
    mid = [int.from_bytes(os.urandom(2), "big")]

    def phase(seconds: float) -> float:
        counts["ok"] = counts["errors"] = 0
        t0 = time.monotonic()
        deadline = t0 + seconds
        m = mid[0]
        ok = err = 0
        while time.monotonic() < deadline:
            m = (m + 1) & 0xFFFF
            want = m.to_bytes(2, "big")
            s.send(c.encode_get(m, token, "hello"))
            try:
                while True:
                    data = s.recv(2048)
                    if data[2:4] == want:
                        break
                if data[0] >> 4 == 0x6 and data[1] == 0x45:  # ACK 2.05
                    ok += 1
                else:
                    err += 1
            except TimeoutError:
                err += 1
        mid[0] = m
        counts["ok"], counts["errors"] = ok, err
        return time.monotonic() - t0

    phase(warmup)
    elapsed = phase(duration)
    s.close()
    return {"ok": counts["ok"], "errors": counts["errors"], "elapsed": elapsed}


def child_main(args: argparse.Namespace) -> int:
    uri = f"coap://{c.HOST}:{args.port}/hello"
    if args.child == "greencoap":
        out = child_greencoap(uri, args.n, args.duration, args.warmup)
    elif args.child == "aiocoap":
        out = child_aiocoap(uri, args.n, args.duration, args.warmup)
    else:
        out = child_socket(args.port, args.duration, args.warmup)
    out["rps"] = out["ok"] / out["elapsed"]
    c.child_print(out)
    return 0


# -- parent --------------------------------------------------------------------
def cases() -> list[tuple[str, str, int, dict[str, str]]]:
    """(row key, child kind, concurrency, env)."""
    out = []
    for hub in ("uring", "epoll"):
        for n in GREENCOAP_CONC:
            out.append((f"greencoap-{hub}", "greencoap", n, {"GREENCOAP_HUB": hub}))
    for n in AIOCOAP_CONC:
        out.append(("aiocoap", "aiocoap", n, {}))
    out.append(("socket", "socket", 1, {}))
    return out


LABELS = {
    "greencoap-uring": "greencoap Client, io_uring hub",
    "greencoap-epoll": "greencoap Client, epoll hub",
    "aiocoap": "aiocoap (asyncio)",
    "socket": "plain blocking socket loop",
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 run of 2 s per row")
    ap.add_argument("--duration", type=float, help="measured seconds per run (default 5)")
    ap.add_argument("--runs", type=int, help="runs per row, median shown (default 3)")
    ap.add_argument(
        "--only", help="comma-separated row keys: greencoap-uring, greencoap-epoll, aiocoap, socket"
    )
    ap.add_argument("--child", choices=("greencoap", "aiocoap", "socket"), help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--warmup", type=float, default=1.0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child_main(args)

    duration = args.duration or (2.0 if args.quick else 5.0)
    runs = args.runs or (1 if args.quick else 3)
    warmup = 0.5 if args.quick else 1.0
    only = set(args.only.split(",")) if args.only else None
    c.ensure_tools()
    started = time.monotonic()
    version = c.code_version()
    results: dict[tuple[str, int], dict] = {}
    notes: list[str] = []
    port = c.free_port()
    with c.start_coapecho(port) as echo:
        c.wait_ready(echo, port)
        time.sleep(1.0)
        for key, kind, n, env in cases():
            if only and key not in only:
                continue
            cmd = [
                c.PYTHON,
                __file__,
                "--child",
                kind,
                "--port",
                str(port),
                "--n",
                str(n),
                "--duration",
                str(duration),
                "--warmup",
                str(warmup),
            ]
            runs_out = []
            try:
                for i in range(runs):
                    r = c.run_json(cmd, c.CLIENT_CPU, timeout=duration + warmup + 120, env=env)
                    runs_out.append(r)
                    print(
                        f"  {key:16} ×{n:<5} run {i + 1}/{runs}: {r['rps']:>9,.0f} req/s "
                        f"ok {r['ok']} errors {r['errors']} elapsed {r['elapsed']:.2f} s "
                        f"{r.get('backend', '')} {r.get('stats', '')}",
                        file=sys.stderr,
                        flush=True,
                    )
                    if not echo.alive():
                        raise RuntimeError(f"coapecho died:\n{echo.output()}")
            except Exception as e:  # noqa: BLE001 - report and go on
                notes.append(f"{key} ×{n} failed: {str(e).strip()[:400]}")
                print(f"  {key} ×{n} FAILED: {e}", file=sys.stderr, flush=True)
                continue
            results[key, n] = c.median_run(runs_out)

    c.heading(
        f"Client throughput — GET /hello against coapecho, {runs} × {duration:g} s, median run"
    )
    rows = []
    for key, _, n, env in cases():
        r = results.get((key, n))
        if r is None:
            continue
        label = LABELS[key]
        want = env.get("GREENCOAP_HUB")
        if want and r.get("backend") != want:
            label += f" (ran on {r.get('backend')}!)"
        aio = results.get(("aiocoap", n), {}).get("rps")
        rows.append(
            [
                label,
                f"{n:,}",
                c.fmt_int(r["rps"]),
                c.fmt_ratio(c.ratio(r["rps"], aio)) if key != "aiocoap" else "—",
            ]
        )
        if r["errors"]:
            notes.append(
                f"{label} ×{n}: {r['errors']} failed requests (timeouts/resets) "
                f"besides {r['ok']} completed"
            )
        if len(r["all_rps"]) > 1:
            lo, hi = min(r["all_rps"]), max(r["all_rps"])
            if hi > 1.2 * lo:
                notes.append(f"{label} ×{n}: runs ranged {lo:,.0f}–{hi:,.0f} req/s")
    print(c.md_table(["client", "concurrency", "req/s", "× aiocoap"], rows))
    gc = {(k, n): r["rps"] for (k, n), r in results.items() if k.startswith("greencoap")}
    parts = [
        f"{gc['greencoap-uring', n] / gc['greencoap-epoll', n]:.2f}× (×{n:,})"
        for n in GREENCOAP_CONC
        if ("greencoap-uring", n) in gc and ("greencoap-epoll", n) in gc
    ]
    if parts:
        print("\nio_uring / epoll = " + ", ".join(parts))
    c.footer(version, started, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
