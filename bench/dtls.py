"""DTLS cost: GET /hello over coaps:// (DTLS 1.2 PSK) against plain coap:// from the same run.

    .venv/bin/python bench/dtls.py [--quick] [--duration S] [--runs N] [--servers a,b]
                                   [--conc N] [--no-handshakes] [--profile OUT]
                                   [--wait-quiet S] [--max-others CPUS] [--retries N]

What it measures: completed ``GET /hello`` requests per second (13-byte body)
over plain CoAP and over DTLS (TLS_PSK_WITH_AES_128_CCM_8, identity ``bench``,
key ``benchkey``) on 127.0.0.1, for two servers:

  a  greencoap   ``python -m greencoap.demo --port P --dtls-port P+1
                 --psk bench:benchkey``, GREENCOAP_HUB=uring
  b  libcoap     ``coap-server-openssl -p P -k benchkey -d 20`` (DTLS on P+1),
                 after ``PUT /hello "Hello, world!"`` — the reference

How: each server runs pinned to CPU 1 (``taskset -c 1``), once for all its
rows, and is ready when it answers a CoAP ping. The load is a greencoap client
in a child process (this script with ``--child``) pinned to CPU 0: one
``Client(timeout=5)`` — ``Client(psk=("bench", b"benchkey"))`` for coaps://,
so a single DTLS session carries every request — shared by N greenlets
(default 64), each calling ``client.get(uri)`` in a loop; first an unmeasured
warm-up (1 s; ``--quick`` 0.5 s, which also does the handshake), then D
seconds (default 5; ``--quick`` 2): workers stop starting requests at the
deadline, the ones in flight are waited for, and req/s = completed requests /
elapsed time. Latency is the time each ``get`` took (closed loop: with N in
flight it is about N / req/s). Each run measures coap:// then coaps:// back to
back on the same server process, ``--runs`` times (default 3; ``--quick`` 1),
and the median run of each row is shown; ``coaps / coap`` divides the two
medians of the same server. ``server µs/req`` is the server process's CPU time
(utime + stime from /proc, read by the child around its measured phase)
divided by the requests completed, ``client µs/req`` the same for the load
process: they show what DTLS costs each side per request whichever side is
the bottleneck (one greencoap client process tops out near 60k req/s, below
libcoap, so the libcoap rows measure the client), and 10⁶ / server µs/req is
what one server core would serve if the client kept up.

The machine is shared and has two CPUs: before each run the script waits (up
to ``--wait-quiet`` s, default 60) until less than 0.3 of a CPU is busy, and it
counts the CPU used by everything else during the measured phase (all CPUs'
busy time from /proc/stat minus the server's and the client's); a run
disturbed by more than ``--max-others`` CPUs (0.25) is repeated, ``--retries``
times at most (2), and the least disturbed attempt is kept.

Handshakes (``--no-handshakes`` skips them): K greenlets (default 4) each loop
on ``Client(psk=...)`` → one coaps GET → ``close()`` (close_notify) for D
seconds, so every request is a full handshake (ClientHello, HelloVerifyRequest
cookie, ClientHello, ServerHello…Finished) on a new socket; handshakes/s =
completed GETs / elapsed.

At saturation (``--no-saturation`` skips it): the server answering as fast
as it can, coap:// loaded by the project's C load generator ``coapload`` and
coaps:// by its DTLS counterpart ``dtlsload`` (bench/dtlsload.c: coapload's
window over OpenSSL DTLS 1.2 clients, TLS_PSK_WITH_AES_128_CCM_8, one
session per socket; 4 × window 64), both pinned to CPU 0, on one server
process per server: ``--sat-rounds`` rounds (default 5; ``--quick`` 3) of
CON coap://, CON coaps://, NON coap://, NON coaps:// of D s each (the order
of the two schemes swapped every round, so a drift of the machine's speed
does not favour one), after a 0.5 s warm-up each. Shown per server and type:
the median req/s of each scheme and the median of the rounds' coaps / coap
ratios — the figure of issue 16's DTLS target (coaps ≥ 0.8× coap on the
same server), which the greenlet-client rows above cannot give (that load
is latency-bound: neither process reaches a full core).

``--profile OUT`` then records the greencoap server with py-spy
(``py-spy record --pid --rate 250``) for max(D, 10) s under the same coaps
load (not a measured run): OUT ending in ``.svg`` is a flame graph; otherwise
py-spy's collapsed stacks are written to OUT and the modules and functions
with the most samples are printed, their share converted into server CPU µs
per request.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import _common as c

PSK_IDENTITY = "bench"
PSK_KEY = "benchkey"
BODY = b"Hello, world!"
SCHEMES = ("coap", "coaps")
CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVER_SAID: dict[str, str] = {}  # the last stats line each server printed when stopped
# --wait-quiet, --max-others, --retries (see load_run)
SETTINGS = {"wait_quiet": 60.0, "max_others": 0.25, "retries": 2}


# -- CPU accounting (used by the children around their measured phase) --------
def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy() -> float:
    """CPU seconds all CPUs spent busy since boot: user, nice, system, irq and softirq
    from /proc/stat (a process's stime includes the softirq work done on its behalf)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    return sum(int(fields[i]) for i in (1, 2, 3, 6, 7)) / CLK_TCK


class Window:
    """CPU used over a measured phase: this process, the server, the whole machine."""

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid

    def __enter__(self) -> Window:
        import resource

        ru = resource.getrusage(resource.RUSAGE_SELF)
        self.me = ru.ru_utime + ru.ru_stime
        self.srv = cpu_seconds(self.server_pid) if self.server_pid else 0.0
        self.all = machine_busy()
        return self

    def __exit__(self, *exc: object) -> None:
        import resource

        ru = resource.getrusage(resource.RUSAGE_SELF)
        self.me = ru.ru_utime + ru.ru_stime - self.me
        self.srv = (cpu_seconds(self.server_pid) if self.server_pid else 0.0) - self.srv
        self.all = machine_busy() - self.all

    def result(self) -> dict:
        return {
            "client_cpu_s": self.me,
            "server_cpu_s": self.srv if self.server_pid else None,
            "other_cpu_s": self.all - self.me - self.srv,
        }


# -- children (run pinned to CPU 0) ---------------------------------------------
def _percentiles(lat: list[float]) -> dict:
    if not lat:
        return {"p50_us": None, "p99_us": None}
    lat.sort()
    return {
        "p50_us": lat[len(lat) // 2] * 1e6,
        "p99_us": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e6,
    }


def _measure(
    worker, n: int, warmup: float, duration: float, counts: dict, server_pid: int | None
) -> tuple[Window, float]:  # noqa: ANN001 - worker(deadline, record)
    """Run ``n`` greenlets of ``worker`` for a warm-up, then for ``duration``
    seconds inside a CPU-accounting window; returns the window and the time taken."""
    import greencoap

    def phase(seconds: float, record: bool) -> float:
        counts["ok"] = counts["errors"] = 0
        t0 = time.monotonic()
        gs = [greencoap.spawn(worker, t0 + seconds, record) for _ in range(n)]
        done = greencoap.joinall(gs, timeout=seconds + 30)
        if len(done) != len(gs):
            raise RuntimeError(f"{len(gs) - len(done)} greenlets still running after the run")
        return time.monotonic() - t0

    phase(warmup, False)
    with Window(server_pid) as w:
        elapsed = phase(duration, True)
    return w, elapsed


def child_load(
    uri: str, n: int, duration: float, warmup: float, psk: bool, server_pid: int | None
) -> dict:
    """N greenlets sharing one Client, GET in a loop (like bench/client.py)."""
    import greencoap

    kw = {"psk": (PSK_IDENTITY, PSK_KEY.encode())} if psk else {}
    client = greencoap.Client(timeout=5, **kw)
    counts = {"ok": 0, "errors": 0}
    lat: list[float] = []

    def worker(deadline: float, record: bool) -> None:
        get = client.get
        mono = time.monotonic
        add = lat.append
        ok = err = 0
        while (t := mono()) < deadline:
            try:
                r = get(uri)
                if r.code == greencoap.Code.CONTENT and r.payload == BODY:
                    ok += 1
                    if record:
                        add(mono() - t)
                else:
                    err += 1
            except Exception:  # noqa: BLE001 - count timeouts/resets, keep going
                err += 1
        counts["ok"] += ok
        counts["errors"] += err

    w, elapsed = _measure(worker, n, warmup, duration, counts, server_pid)
    stats = {k: v for k, v in client.stats.items() if v}
    client.close()
    return {
        "ok": counts["ok"],
        "errors": counts["errors"],
        "elapsed": elapsed,
        **w.result(),
        "backend": greencoap.get_hub().backend,
        "stats": stats,
        **_percentiles(lat),
    }


def child_handshakes(
    uri: str, n: int, duration: float, warmup: float, server_pid: int | None
) -> dict:
    """N greenlets, each looping: new Client(psk) → one GET → close."""
    import greencoap

    psk = (PSK_IDENTITY, PSK_KEY.encode())
    counts = {"ok": 0, "errors": 0}
    lat: list[float] = []
    errors: Counter = Counter()

    def worker(deadline: float, record: bool) -> None:
        mono = time.monotonic
        while (t := mono()) < deadline:
            client = greencoap.Client(timeout=5, psk=psk)
            try:
                r = client.get(uri)
                if r.code == greencoap.Code.CONTENT and r.payload == BODY:
                    counts["ok"] += 1
                    if record:
                        lat.append(mono() - t)
                else:
                    counts["errors"] += 1
            except Exception as e:  # noqa: BLE001 - count failed handshakes, keep going
                counts["errors"] += 1
                errors[f"{type(e).__name__}: {str(e)[:120]}"] += 1
            finally:
                client.close()

    w, elapsed = _measure(worker, n, warmup, duration, counts, server_pid)
    return {
        **w.result(),
        "ok": counts["ok"],
        "errors": counts["errors"],
        "elapsed": elapsed,
        "error_kinds": dict(errors),
        **_percentiles(lat),
    }


def child_main(args: argparse.Namespace) -> int:
    if args.child == "load":
        psk = args.uri.startswith("coaps")
        out = child_load(args.uri, args.n, args.duration, args.warmup, psk, args.server_pid)
    else:
        out = child_handshakes(args.uri, args.n, args.duration, args.warmup, args.server_pid)
    out["rps"] = out["ok"] / out["elapsed"]
    c.child_print(out)
    return 0


# -- servers -------------------------------------------------------------------
@dataclass
class Spec:
    letter: str
    name: str
    label: str

    def command(self, port: int) -> tuple[list[str], dict[str, str]]:
        if self.name == "greencoap":
            return (
                [
                    c.PYTHON,
                    "-m",
                    "greencoap.demo",
                    "--host",
                    c.HOST,
                    "--port",
                    str(port),
                    "--dtls-port",
                    str(port + 1),
                    "--psk",
                    f"{PSK_IDENTITY}:{PSK_KEY}",
                ],
                {"GREENCOAP_HUB": "uring"},
            )
        return (
            ["coap-server-openssl", "-A", c.HOST, "-p", str(port), "-k", PSK_KEY, "-d", "20"],
            {},
        )

    def setup(self, port: int) -> None:
        if self.name != "libcoap":
            return
        subprocess.run(
            [
                "coap-client-notls",
                "-B",
                "5",
                "-m",
                "put",
                "-e",
                BODY.decode(),
                f"coap://{c.HOST}:{port}/hello",
            ],
            check=True,
            capture_output=True,
            timeout=15,
        )
        code, payload = c.coap_get(port, "hello")
        if code != 0x45 or payload != BODY:
            raise RuntimeError(f"libcoap GET /hello after PUT gave {code >> 5}.{code & 31:02d}")

    def unavailable(self) -> str | None:
        if self.name == "libcoap" and not (
            c.have("coap-server-openssl") and c.have("coap-client-notls")
        ):
            return "libcoap skipped: coap-server-openssl or coap-client-notls not installed"
        return None


SERVERS = [
    Spec("a", "greencoap", "greencoap demo (io_uring hub)"),
    Spec("b", "libcoap", "libcoap coap-server-openssl"),
]


def port_pair() -> int:
    """A UDP port P on 127.0.0.1 such that P and P+1 are both free right now."""
    for _ in range(100):
        p = c.free_port()
        if p >= 65535:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind((c.HOST, p + 1))
        except OSError:
            continue
        return p
    raise RuntimeError("no free pair of UDP ports")


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def wait_quiet(max_wait: float, threshold: float = 0.3) -> float:
    """Wait (up to ``max_wait`` s) until the machine is near idle between runs:
    less than ``threshold`` of a core busy over one second. Return that share."""
    deadline = time.monotonic() + max_wait
    while True:
        b0 = machine_busy()
        time.sleep(1.0)
        busy = machine_busy() - b0
        if busy < threshold or time.monotonic() >= deadline:
            return busy
        print(f"  waiting for a quiet machine: {busy:.2f} CPUs busy", file=sys.stderr, flush=True)
        time.sleep(4.0)


def child_cmd(
    kind: str, uri: str, n: int, duration: float, warmup: float, server_pid: int
) -> list[str]:
    return [
        c.PYTHON,
        __file__,
        "--child",
        kind,
        "--uri",
        uri,
        "--n",
        str(n),
        "--duration",
        str(duration),
        "--warmup",
        str(warmup),
        "--server-pid",
        str(server_pid),
    ]


def uri_for(scheme: str, port: int) -> str:
    return f"{scheme}://{c.HOST}:{port + (scheme == 'coaps')}/hello"


@contextlib.contextmanager
def fresh_server(spec: Spec) -> Iterator[tuple[c.Pinned, int]]:
    """The server started afresh on CPU 1 (and set up), stopped by its PID on exit.

    Every measured run gets its own server, so its deduplication cache holds
    only that run's client: a greencoap server that already remembers another
    client's 16,384 message IDs keeps the next client's first 16,384 for
    EXCHANGE_LIFETIME (247 s) instead of its latest, and when that client's
    16-bit message IDs wrap (after 65,536 requests, ~2 s here) its new
    requests are taken for duplicates: 64 time-outs stall the run for 5 s.
    """
    port = port_pair()
    cmd, env = spec.command(port)
    with c.Pinned(cmd, c.SERVER_CPU, env=env, name=spec.name) as srv:
        c.wait_ready(srv, port)
        spec.setup(port)
        time.sleep(0.5)  # let it settle (imports, first allocations) before the load
        yield srv, port
        srv.stop()
        said = [ln for ln in srv.output().splitlines() if "stats" in ln or "rror" in ln]
        if said:
            SERVER_SAID[spec.name] = said[-1]


def load_run(spec: Spec, kind: str, scheme: str, n: int, duration: float, warmup: float) -> dict:
    """One child run against a fresh ``spec`` server, with per-request CPU figures added.

    The machine is shared: before the run, wait (``--wait-quiet``) for it to
    be near idle; a run during which other work used more than
    ``--max-others`` of a CPU is repeated (``--retries`` times at most) and
    the least disturbed attempt is kept.
    """
    attempts = []
    for _ in range(1 + SETTINGS["retries"]):
        wait_quiet(SETTINGS["wait_quiet"])
        with fresh_server(spec) as (srv, port):
            r = c.run_json(
                child_cmd(kind, uri_for(scheme, port), n, duration, warmup, srv.pid),
                c.CLIENT_CPU,
                timeout=duration + warmup + 120,
                env={"GREENCOAP_HUB": "uring"},
            )
            if not srv.alive():
                raise RuntimeError(f"{srv.name} died:\n{srv.output()}")
        ok, el = max(1, r["ok"]), r["elapsed"]
        r["server_busy"] = r["server_cpu_s"] / el
        r["client_busy"] = r["client_cpu_s"] / el
        r["other_busy"] = r["other_cpu_s"] / el
        r["server_us_req"] = r["server_cpu_s"] / ok * 1e6
        r["client_us_req"] = r["client_cpu_s"] / ok * 1e6
        attempts.append(r)
        if r["other_busy"] <= SETTINGS["max_others"]:
            break
        last = len(attempts) > SETTINGS["retries"]
        print(
            f"  (other work used {r['other_busy']:.2f} CPUs during that run of "
            f"{r['rps']:,.0f}/s: {'keeping the least disturbed attempt' if last else 'again'})",
            file=sys.stderr,
            flush=True,
        )
    best = min(attempts, key=lambda a: a["other_busy"])
    best["attempts"] = len(attempts)
    return best


def measure(spec: Spec, args: argparse.Namespace, duration: float, runs: int, warmup: float):
    rows: dict[str, list[dict]] = {s: [] for s in SCHEMES}
    hs: list[dict] = []
    for i in range(runs):
        for scheme in SCHEMES:
            r = load_run(spec, "load", scheme, args.conc, duration, warmup)
            rows[scheme].append(r)
            print(
                f"  {spec.name:9} {scheme:5} run {i + 1}/{runs}: {r['rps']:>8,.0f} req/s "
                f"p50 {r['p50_us'] or 0:,.0f} µs p99 {r['p99_us'] or 0:,.0f} µs "
                f"errors {r['errors']} CPU client {r['client_busy']:.2f} "
                f"server {r['server_busy']:.2f} others {r['other_busy']:.2f} "
                f"{r.get('stats', '')}",
                file=sys.stderr,
                flush=True,
            )
    if args.handshakes:
        for i in range(runs):
            r = load_run(spec, "handshakes", "coaps", args.hs_conc, duration, warmup)
            hs.append(r)
            print(
                f"  {spec.name:9} handshakes run {i + 1}/{runs}: {r['rps']:>7,.0f}/s "
                f"p50 {r['p50_us'] or 0:,.0f} µs errors {r['errors']} "
                f"{r.get('error_kinds') or ''} CPU client {r['client_busy']:.2f} "
                f"server {r['server_busy']:.2f} others {r['other_busy']:.2f}",
                file=sys.stderr,
                flush=True,
            )
    profile = None
    if args.profile and spec.name == "greencoap":
        wait_quiet(SETTINGS["wait_quiet"])
        with fresh_server(spec) as (srv, port):
            profile = run_profile(srv, port, args, duration, warmup)
    if spec.name in SERVER_SAID:
        print(f"  {spec.name:9} server said: {SERVER_SAID[spec.name][:600]}", file=sys.stderr)
    return rows, hs, profile


# -- at saturation: coapload vs dtlsload -----------------------------------------
def saturation(spec: Spec, rounds: int, duration: float) -> dict[str, dict]:
    """``rounds`` alternating coapload (coap://) / dtlsload (coaps://) runs per
    message type against one ``spec`` server: per type the req/s of every run
    of each scheme, the per-round ratios and the lost requests."""
    out: dict[str, dict] = {}
    wait_quiet(SETTINGS["wait_quiet"])
    with fresh_server(spec) as (srv, port):
        for t in ("con", "non"):
            rec: dict = {"coap": [], "coaps": [], "ratio": [], "lost": 0, "errors": 0}
            for i in range(rounds):
                got = {}
                for scheme in SCHEMES if i % 2 == 0 else SCHEMES[::-1]:
                    if scheme == "coap":
                        r = c.run_coapload(port, t, duration, warmup=0.5)
                    else:
                        r = c.run_dtlsload(
                            port + 1, t, duration, identity=PSK_IDENTITY, key=PSK_KEY, warmup=0.5
                        )
                    if r["exit"] != 0:
                        raise RuntimeError(f"{scheme} load exited with {r['exit']}")
                    got[scheme] = r["rps"]
                    rec[scheme].append(r["rps"])
                    rec["lost"] += r["lost"]
                    rec["errors"] += r["errors"]
                rec["ratio"].append(got["coaps"] / max(1, got["coap"]))
                print(
                    f"  {spec.name:9} saturation {t} round {i + 1}/{rounds}: coap "
                    f"{got['coap']:>8,} coaps {got['coaps']:>8,} req/s "
                    f"({rec['ratio'][-1]:.2f}×)",
                    file=sys.stderr,
                    flush=True,
                )
            out[t] = rec
        if not srv.alive():
            raise RuntimeError(f"{srv.name} died:\n{srv.output()}")
    return out


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def print_saturation(sat: dict[str, dict], rounds: int, duration: float, notes: list) -> None:
    c.heading(
        f"DTLS at saturation — coapload (coap://) vs dtlsload (coaps://), 4 × window 64, "
        f"{rounds} alternating rounds × {duration:g} s, medians"
    )
    rows = []
    for spec in SERVERS:
        for t, rec in sat.get(spec.name, {}).items():
            rows.append(
                [
                    spec.label,
                    t.upper(),
                    c.fmt_int(_median(rec["coap"])),
                    c.fmt_int(_median(rec["coaps"])),
                    c.fmt_ratio(_median(rec["ratio"])),
                    f"{min(rec['ratio']):.2f}–{max(rec['ratio']):.2f}",
                ]
            )
            if rec["lost"] or rec["errors"]:
                notes.append(
                    f"saturation {spec.name} {t}: {rec['lost']} lost, {rec['errors']} errors "
                    f"over all runs"
                )
    print(
        c.md_table(
            ["server", "type", "coap:// req/s", "coaps:// req/s", "coaps / coap", "range"],
            rows,
            align="llrrrr",
        )
    )


# -- profile -------------------------------------------------------------------
def run_profile(
    srv: c.Pinned, port: int, args: argparse.Namespace, duration: float, warmup: float
) -> dict | None:
    spy = c.ROOT / ".venv" / "bin" / "py-spy"
    if not spy.exists():
        print("  py-spy not installed: no profile", file=sys.stderr)
        return None
    out = str(args.profile)
    fmt = "flamegraph" if out.endswith(".svg") else "raw"
    # py-spy records `secs` seconds (at least 10, for enough samples) while the
    # load runs: it starts 1 s after the load's warm-up and the load lasts 2 s longer
    secs = max(10, int(duration))
    load = subprocess.Popen(
        c.pinned(
            child_cmd("load", uri_for("coaps", port), args.conc, secs + 2, warmup, srv.pid),
            c.CLIENT_CPU,
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=c.ROOT,
        env={**os.environ, "GREENCOAP_HUB": "uring"},
    )
    try:
        time.sleep(warmup + 1.0)
        subprocess.run(
            [
                str(spy),
                "record",
                "--pid",
                str(srv.pid),
                "--duration",
                str(secs),
                "--rate",
                "250",
                "--format",
                fmt,
                "-o",
                out,
            ],
            capture_output=True,
            timeout=secs + 60,
            check=True,
        )
        stdout, _ = load.communicate(timeout=secs + 60)
    finally:
        c.reap(load)
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    res = json.loads(lines[-1]) if lines else {}
    ok = res.get("ok") or 0
    return {
        "out": out,
        "format": fmt,
        "rps": ok / res["elapsed"] if ok else None,
        "server_us_req": res["server_cpu_s"] / ok * 1e6 if ok else None,
    }


def summarize_profile(path: str, us_per_req: float | None, top: int = 12) -> list[str]:
    """Sample shares from py-spy's collapsed stacks: self time per module and
    per function, inclusive time of greencoap's functions; with ``us_per_req``
    (the server's CPU per request) each share is also shown in µs/request."""
    by_module: Counter = Counter()
    by_function: Counter = Counter()
    incl: Counter = Counter()
    total = 0

    def name(frame: str) -> tuple[str, str]:  # "func (path:line)" -> (func, path)
        func, _, where = frame.partition(" (")
        return func, where.rsplit(":", 1)[0].rstrip(")")

    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            n = int(count)
            total += n
            frames = [name(fr) for fr in stack.split(";")]
            func, module = frames[-1]
            by_module[module] += n
            by_function[f"{func} ({module})"] += n
            for fr in {f"{fn} ({m})" for fn, m in frames}:
                incl[fr] += n
    if not total:
        return ["(no samples)"]

    def line(fr: str, n: int) -> str:
        share = n / total
        us = f" {share * us_per_req:6.2f} µs/req" if us_per_req else ""
        return f"  {share:6.1%}{us}  {fr}"

    per = f", {us_per_req:.1f} server CPU µs/request in that run" if us_per_req else ""
    out = [f"{total} samples of the busy server{per}", "self, by module:"]
    out += [line(m, n) for m, n in by_module.most_common(top)]
    out.append("self, by function:")
    out += [line(fr, n) for fr, n in by_function.most_common(top)]
    out.append("inclusive (greencoap functions):")
    out += [line(fr, n) for fr, n in incl.most_common() if "greencoap" in fr][:top]
    return out


# -- parent --------------------------------------------------------------------
def select(arg: str | None) -> list[Spec]:
    if not arg:
        return SERVERS
    out = []
    for w in (w.strip() for w in arg.split(",") if w.strip()):
        match = [s for s in SERVERS if w in (s.letter, s.name)]
        if not match:
            raise SystemExit(f"unknown server {w!r}; choose from a=greencoap, b=libcoap")
        out.extend(m for m in match if m not in out)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 run of 2 s per row")
    ap.add_argument("--duration", type=float, help="measured seconds per run (default 5)")
    ap.add_argument("--runs", type=int, help="runs per row, median shown (default 3)")
    ap.add_argument("--servers", help="a,b or greencoap,libcoap (default both)")
    ap.add_argument("--conc", type=int, default=64, help="greenlets sharing the client (64)")
    ap.add_argument("--hs-conc", type=int, default=4, help="greenlets doing handshakes (4)")
    ap.add_argument("--no-handshakes", dest="handshakes", action="store_false")
    ap.add_argument("--no-saturation", dest="saturation", action="store_false")
    ap.add_argument("--sat-rounds", type=int, help="rounds at saturation (default 5, --quick 3)")
    ap.add_argument(
        "--wait-quiet",
        type=float,
        default=60.0,
        help="before each run, wait up to S s for the other CPU use to drop below 0.3 core (60)",
    )
    ap.add_argument(
        "--max-others",
        type=float,
        default=0.25,
        help="repeat a run during which other work used more CPUs than this (0.25)",
    )
    ap.add_argument("--retries", type=int, default=2, help="repeats of a disturbed run (2)")
    ap.add_argument("--profile", help="py-spy the greencoap server under coaps load into OUT")
    ap.add_argument("--child", choices=("load", "handshakes"), help=argparse.SUPPRESS)
    ap.add_argument("--uri", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--warmup", type=float, default=1.0, help=argparse.SUPPRESS)
    ap.add_argument("--server-pid", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child_main(args)

    duration = args.duration or (2.0 if args.quick else 5.0)
    SETTINGS.update(wait_quiet=args.wait_quiet, max_others=args.max_others, retries=args.retries)
    runs = args.runs or (1 if args.quick else 3)
    warmup = 0.5 if args.quick else 1.0
    started = time.monotonic()
    version = c.code_version()
    load_start = loadavg()
    notes: list[str] = []
    results: dict[tuple[str, str], dict] = {}
    handshakes: dict[str, dict] = {}
    sat: dict[str, dict] = {}
    sat_rounds = args.sat_rounds or (3 if args.quick else 5)
    profile = None
    for spec in select(args.servers):
        reason = spec.unavailable()
        if reason:
            notes.append(reason)
            print(f"  {reason}", file=sys.stderr, flush=True)
            continue
        try:
            rows, hs, prof = measure(spec, args, duration, runs, warmup)
        except Exception as e:  # noqa: BLE001 - report the failure, go on with the rest
            notes.append(f"{spec.name} failed: {str(e).strip()[:400]}")
            print(f"  {spec.name} FAILED: {e}", file=sys.stderr, flush=True)
            continue
        profile = profile or prof
        if args.saturation:
            try:
                sat[spec.name] = saturation(spec, sat_rounds, duration)
            except Exception as e:  # noqa: BLE001
                notes.append(f"{spec.name} at saturation failed: {str(e).strip()[:400]}")
                print(f"  {spec.name} saturation FAILED: {e}", file=sys.stderr, flush=True)
        for scheme, rs in rows.items():
            best = c.median_run(rs)
            best["all_errors"] = sum(r["errors"] for r in rs)
            results[spec.name, scheme] = best
        if hs:
            best = c.median_run(hs)
            best["all_errors"] = sum(r["errors"] for r in hs)
            best["all_ok"] = sum(r["ok"] for r in hs)
            kinds: Counter = Counter()
            for r in hs:
                kinds.update(r.get("error_kinds") or {})
            best["all_error_kinds"] = dict(kinds)
            handshakes[spec.name] = best

    c.heading(
        f"DTLS — GET /hello, coap:// vs coaps:// (PSK, AES_128_CCM_8), greencoap Client "
        f"×{args.conc} greenlets, {runs} × {duration:g} s, median run"
    )
    rows_out = []
    for spec in SERVERS:
        for scheme in SCHEMES:
            r = results.get((spec.name, scheme))
            if r is None:
                continue
            plain = results.get((spec.name, "coap"), {}).get("rps")
            rows_out.append(
                [
                    spec.label,
                    f"{scheme}://",
                    c.fmt_int(r["rps"]),
                    c.fmt_int(r["p50_us"]),
                    c.fmt_int(r["p99_us"]),
                    f"{r['server_busy']:.2f}",
                    f"{r['client_busy']:.2f}",
                    f"{r['server_us_req']:.1f}",
                    f"{r['client_us_req']:.1f}",
                    c.fmt_ratio(c.ratio(r["rps"], plain)) if scheme == "coaps" else "—",
                ]
            )
            if r["all_errors"]:
                notes.append(
                    f"{spec.name} {scheme}://: {r['all_errors']} failed requests over all runs"
                )
    print(
        c.md_table(
            [
                "server",
                "scheme",
                "req/s",
                "p50 µs",
                "p99 µs",
                "server CPU",
                "client CPU",
                "server µs/req",
                "client µs/req",
                "coaps / coap",
            ],
            rows_out,
            align="llrrrrrrrr",
        )
    )
    summary = []
    for spec in SERVERS:
        plain, sec = results.get((spec.name, "coap")), results.get((spec.name, "coaps"))
        if not (plain and sec):
            continue
        summary.append(
            f"- {spec.name}: coaps / coap = {c.fmt_ratio(c.ratio(sec['rps'], plain['rps']))} "
            f"req/s, {c.fmt_ratio(c.ratio(sec['server_us_req'], plain['server_us_req']))} "
            f"server CPU per request, "
            f"{c.fmt_ratio(c.ratio(sec['client_us_req'], plain['client_us_req']))} client CPU "
            f"per request; one server core at that CPU per request would serve "
            f"{c.fmt_int(1e6 / plain['server_us_req'])} coap:// / "
            f"{c.fmt_int(1e6 / sec['server_us_req'])} coaps:// req/s"
        )
    if summary:
        print("\n" + "\n".join(summary))
    if handshakes:
        print()
        hrows = []
        for spec in SERVERS:
            h = handshakes.get(spec.name)
            if h is None:
                continue
            hrows.append(
                [
                    spec.label,
                    c.fmt_int(h["rps"]),
                    c.fmt_int(h["p50_us"]),
                    f"{h['server_busy']:.2f}",
                    f"{h['server_us_req']:,.0f}",
                ]
            )
            if h["all_errors"]:
                notes.append(
                    f"{spec.name} handshakes: {h['all_errors']} failed out of "
                    f"{h['all_errors'] + h['all_ok']:,} over all runs: {h['all_error_kinds']}"
                )
        print(
            c.md_table(
                [
                    "server",
                    f"full handshakes/s (×{args.hs_conc})",
                    "p50 µs",
                    "server CPU",
                    "server µs/handshake",
                ],
                hrows,
                align="lrrrr",
            )
        )
    if sat:
        print_saturation(sat, sat_rounds, duration, notes)
    notes.append(
        "server CPU / client CPU: share of one core busy during the measured phase; µs/req: "
        "that process's CPU time (utime + stime) per completed request"
    )
    busy = [f"{n} {s}://" for (n, s), r in results.items() if r["client_busy"] >= 0.9]
    if busy:
        notes.append(
            "the load process was near one full core for: "
            + ", ".join(busy)
            + " — those rows are client-bound"
        )
    spread = [f"{n} {s}:// {c.rps_range(r)}" for (n, s), r in results.items() if c.rps_range(r)]
    spread += [f"{n} handshakes {c.rps_range(h)}" for n, h in handshakes.items() if c.rps_range(h)]
    if spread:
        notes.append("req/s range over runs: " + "; ".join(spread))
    notes.append(f"1-minute load average {load_start} at the start, {loadavg()} at the end")
    if profile:
        notes.append(f"py-spy profile of the greencoap server under coaps load: {profile['out']}")
    c.footer(version, started, notes)
    if profile and profile["format"] == "raw":
        us = profile["server_us_req"]
        print("\nProfile (greencoap server, coaps://):")
        print("\n".join(summarize_profile(profile["out"], us)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
