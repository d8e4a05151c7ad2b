"""Legacy: the real CoAPthon3 1.0.2 against greencoap's drop-in ``greencoap.compat.coapthon``.

    .venv/bin/python bench/legacy.py [--quick] [--duration S] [--skip server,client,dead]

Three measurements, each for CoAPthon3 (the ``coapthon`` package installed in
the venv) and for the drop-in, with a ``drop-in / CoAPthon3`` ratio column:

1. **Server throughput.** CoAPthon3's own example server
   (``.venv/bin/coapserver.py -i 127.0.0.1 -p P`` with its
   ``exampleresources.py``) under ``coapload`` CON ``GET /basic`` at
   concurrency 1 (``--window 1 --sockets 1``), 16 (``--window 4 --sockets
   4``) and 64 (``--window 16 --sockets 4``), ``--duration`` s each (5;
   ``--quick``: 2) after a 1 s warm-up, ``--timeout-ms 1000`` (an unanswered
   request counts as ``lost``). The drop-in row runs the same two scripts,
   copied into a temporary directory with only their ``coapthon`` imports
   rewritten to ``greencoap.compat.coapthon``, once with GREENCOAP_HUB=uring
   and once with GREENCOAP_HUB=epoll. ``srv thr`` is the largest thread count
   of the server process (``/proc/PID/status``) sampled every 0.1 s during the
   load.
2. **Threads and sockets of a HelperClient script.** One child process per
   library and variant (this script with ``--client``; the text is the same
   for both, only ``install()`` switches the import) against the greencoap
   demo server (``python -m greencoap.demo --echo-factor 0``, io_uring):
   ``HelperClient.get("hello")`` 1,000 times on one client, then 100 observe
   cycles of ``/counter?interval=0.05``, each on a HelperClient of its own
   (CoAPthon3's ``cancel_observing`` stops the whole client, so it cannot
   observe again): ``observe(path, callback)``, wait for the registration's
   response and 2 notifications, ``cancel_observing(last, True)``. Variant
   *cancel only* stops there (CoAPthon3's idiom: the client is stopped by
   then); variant *cancel + stop()* also calls ``stop()``. Then the first
   client's ``stop()``. Threads (``/proc/self/status``) and sockets (fds in
   ``/proc/self/fd`` linking to ``socket:``) are read at the start, after
   the GETs, after the observe cycles, after ``stop()`` and once more 1 s
   later after ``gc.collect()``. Each child is killed after 180 s.
3. **Time to notice a dead server.** ``HelperClient(("127.0.0.1",
   port)).get("basic")`` with the library default (no ``timeout``) and with
   ``timeout=5``, to a closed port (the kernel answers ICMP port unreachable)
   and to a silent peer (a UDP socket this script holds and never answers;
   it counts the datagrams that arrive). All children run at once (they only
   wait, on CPU 1); a call still blocked ``--dead-cap`` s (120; ``--quick``:
   20) after it was made ends its process (a watchdog thread in the child)
   and is reported as "did not return". Both libraries draw the first retransmission
   timeout at random from 2-3 s, so giving up after the last retransmission
   takes 31 × that (62-93 s): the default case is run 3 times
   (``--quick``: once) and the median shown with the range.

CPUs: the server on CPU 0, the load generator and the client scripts on
CPU 1 (``taskset``); every process started here is stopped by its PID.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import _common as c

SERVER_CPU = 0
CLIENT_CPU = 1
VENV_BIN = c.ROOT / ".venv" / "bin"
CT3_SERVER = VENV_BIN / "coapserver.py"
CT3_RESOURCES = VENV_BIN / "exampleresources.py"

#: concurrency → (window, sockets) of coapload
CONCURRENCY = {1: (1, 1), 16: (4, 4), 64: (16, 4)}

GETS = 1000
OBSERVES = 100
OBSERVE_PATH = "counter?interval=0.05"
CLIENT_CAP = 180.0

LIBS = ("coapthon", "dropin")
LIB_LABEL = {"coapthon": "CoAPthon3 1.0.2", "dropin": "greencoap.compat.coapthon"}


# ============================================================================
# children: the HelperClient scripts (same text for both libraries)
# ============================================================================
def use_library(lib: str) -> None:
    """The only difference between the two: ``install()`` for the drop-in."""
    if lib == "dropin":
        import greencoap.compat.coapthon as compat

        compat.install()


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def snapshot(tag: str, t0: float) -> dict[str, Any]:
    """Threads and sockets of this process, read from /proc."""
    sockets = fds = 0
    for fd in os.listdir("/proc/self/fd"):
        fds += 1
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                sockets += 1
    threads = -1
    with open("/proc/self/status") as f:
        for ln in f:
            if ln.startswith("Threads:"):
                threads = int(ln.split()[1])
    snap = {
        "tag": tag,
        "threads": threads,
        "sockets": sockets,
        "fds": fds,
        "t": time.monotonic() - t0,
    }
    emit(snap)
    return snap


def child_client(args: argparse.Namespace) -> int:
    """``--client LIB``: 1,000 GETs, 100 observe cycles, stop(); a JSON line per snapshot."""
    use_library(args.client)
    from coapthon.client.helperclient import HelperClient

    server = (c.HOST, args.port)
    t0 = time.monotonic()
    snapshot("start", t0)
    client = HelperClient(server=server)
    ok = 0
    for _ in range(args.gets):
        r = client.get("hello")
        if r is not None and r.payload:
            ok += 1
    emit({"gets_ok": ok})
    snapshot("gets", t0)
    notified = short = 0
    for _ in range(args.observes):
        oc = HelperClient(server=server)
        got: list[Any] = []
        enough = threading.Event()

        def callback(response: Any, got: list = got, enough: threading.Event = enough) -> None:
            if response is None:
                return
            got.append(response)
            if len(got) >= 3:  # the registration's response and 2 notifications
                enough.set()

        oc.observe(OBSERVE_PATH, callback)
        if not enough.wait(5.0):
            short += 1
        if got:
            oc.cancel_observing(got[-1], True)
        if args.observe_end == "stop":
            oc.stop()
        notified += max(0, len(got) - 1)
        del oc
    emit({"notifications": notified, "short_cycles": short})
    snapshot("observes", t0)
    client.stop()
    snapshot("stop", t0)
    time.sleep(1.0)
    gc.collect()
    snapshot("later", t0)
    emit({"done": True})
    return 0


def child_dead(args: argparse.Namespace) -> int:
    """``--dead LIB``: one GET to a port that never answers; how long until it returns."""
    use_library(args.dead)
    from coapthon.client.helperclient import HelperClient

    client = HelperClient(server=(c.HOST, args.port))
    emit({"started": True})
    t0 = time.monotonic()

    def watchdog() -> None:  # the cap counts from the call, not from the process start
        time.sleep(args.cap)
        emit({"gave_up": args.cap})
        os._exit(3)

    threading.Thread(target=watchdog, daemon=True).start()
    try:
        if args.timeout is None:
            r = client.get("basic")
        else:
            r = client.get("basic", timeout=args.timeout)
        result = "None" if r is None else f"{type(r).__name__} code={getattr(r, 'code', '?')}"
    except Exception as e:  # noqa: BLE001 - what the caller would see
        result = f"raised {type(e).__name__}: {e}"
    elapsed = time.monotonic() - t0
    emit({"get_s": elapsed, "result": result})
    t1 = time.monotonic()
    client.stop()
    emit({"get_s": elapsed, "result": result, "stop_s": time.monotonic() - t1})
    return 0


# ============================================================================
# the parent
# ============================================================================
def dropin_scripts(tmp: Path) -> Path:
    """coapserver.py and exampleresources.py with their imports rewritten; the server's path."""
    pattern = re.compile(r"^(\s*)(from|import) coapthon\b", re.M)
    for src in (CT3_SERVER, CT3_RESOURCES):
        text = pattern.sub(r"\1\2 greencoap.compat.coapthon", src.read_text())
        (tmp / src.name).write_text(text)
    return tmp / CT3_SERVER.name


def wait_get(server: c.Pinned, port: int, path: str, timeout: float = 20.0) -> None:
    """CoAPthon3's server does not answer a CoAP ping: wait for a GET to succeed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"{server.name} exited early:\n{server.output()}")
        with contextlib.suppress(OSError):
            code, _ = c.coap_get(port, path, timeout=0.3)
            if code >> 5 == 2:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{server.name} did not answer GET /{path} in {timeout} s")


def proc_threads(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for ln in f:
                if ln.startswith("Threads:"):
                    return int(ln.split()[1])
    except OSError:
        pass
    return -1


def coapload(port: int, window: int, sockets: int, duration: float, path: str) -> dict:
    """coapload on CLIENT_CPU (CON GET ``path``); the parsed RESULT line."""
    cmd = c.pinned(
        [
            c.COAPLOAD,
            "--host",
            c.HOST,
            "--port",
            port,
            "--path",
            path,
            "--type",
            "con",
            "--window",
            window,
            "--sockets",
            sockets,
            "--duration",
            duration,
            "--warmup",
            1.0,
            "--timeout-ms",
            1000,
        ],
        CLIENT_CPU,
    )
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30)
    r = c.parse_result(p.stdout)
    r["exit"] = p.returncode
    return r


def measure_server(
    label: str, script: Path, env: dict[str, str], duration: float, levels: list[int]
) -> dict[int, dict]:
    """Start ``script -i 127.0.0.1 -p PORT`` on SERVER_CPU; one coapload run per level."""
    port = c.free_port()
    cmd = [c.PYTHON, str(script), "-i", c.HOST, "-p", str(port)]
    out: dict[int, dict] = {}
    with c.Pinned(cmd, SERVER_CPU, env=env, name=label.split()[0]) as srv:
        wait_get(srv, port, "basic")
        time.sleep(1.0)
        for conc in levels:
            window, sockets = CONCURRENCY[conc]
            peak = [proc_threads(srv.pid)]
            stop = threading.Event()

            def sample(stop: threading.Event = stop, peak: list = peak) -> None:
                while not stop.wait(0.1):
                    peak[0] = max(peak[0], proc_threads(srv.pid))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            try:
                r = coapload(port, window, sockets, duration, "basic")
            finally:
                stop.set()
                sampler.join()
            r["threads"] = peak[0]
            if not srv.alive():
                raise RuntimeError(f"{label} died at concurrency {conc}:\n{srv.output()}")
            out[conc] = r
            print(
                f"  {label:34} conc {conc:>3}: {r['rps']:>7,} req/s p50 {r['p50_us']} µs "
                f"p99 {r['p99_us']} µs lost {r['lost']} errors {r['errors']} "
                f"unmatched {r['unmatched']} server threads ≤{r['threads']}",
                file=sys.stderr,
                flush=True,
            )
    return out


def server_section(duration: float, notes: list[str]) -> None:
    levels = list(CONCURRENCY)
    tmp = Path(tempfile.mkdtemp(prefix="bench-legacy-"))
    try:
        dropin = dropin_scripts(tmp)
        variants = [
            ("CoAPthon3 1.0.2", CT3_SERVER, {}),
            ("drop-in, io_uring hub", dropin, {"GREENCOAP_HUB": "uring"}),
            ("drop-in, epoll hub", dropin, {"GREENCOAP_HUB": "epoll"}),
        ]
        results: dict[str, dict[int, dict]] = {}
        for label, script, env in variants:
            try:
                results[label] = measure_server(label, script, env, duration, levels)
            except Exception as e:  # noqa: BLE001 - report it, go on
                notes.append(f"{label} server failed: {str(e).strip()[:300]}")
                print(f"  {label} FAILED: {e}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    c.heading(
        f"Legacy server — CoAPthon3's coapserver.py, coapload CON GET /basic, "
        f"{duration:g} s per row"
    )
    base = results.get("CoAPthon3 1.0.2", {})
    rows = []
    for label, _, _ in variants:
        for conc in levels:
            r = results.get(label, {}).get(conc)
            if r is None:
                continue
            b = base.get(conc, {})
            rows.append(
                [
                    label,
                    conc,
                    c.fmt_int(r["rps"]),
                    c.fmt_int(r["p50_us"]),
                    c.fmt_int(r["p99_us"]),
                    r["lost"],
                    r["errors"],
                    r["unmatched"],
                    r["threads"],
                    c.fmt_ratio(c.ratio(r["rps"], b.get("rps"))),
                    c.fmt_ratio(c.ratio(r["p99_us"], b.get("p99_us"))),
                ]
            )
    print(
        c.md_table(
            [
                "server",
                "conc",
                "req/s",
                "p50 µs",
                "p99 µs",
                "lost",
                "errors",
                "unmatched",
                "srv thr",
                "req/s ×",
                "p99 ×",
            ],
            rows,
            align="lrrrrrrrrrr",
        )
    )
    print(
        "\nconc = coapload window × sockets (1×1, 4×4, 16×4); lost = no answer within "
        "1 s; × = drop-in / CoAPthon3 at the same concurrency\n"
    )


# -- 2. threads and sockets -------------------------------------------------------
def run_child(cmd: list[str], cap: float, env: dict[str, str]) -> tuple[list[dict], str | None]:
    """Run a child pinned to CLIENT_CPU; its JSON lines, and a note if it was killed."""
    full_env = dict(os.environ)
    full_env.update(env)
    p = subprocess.Popen(
        c.pinned(cmd, CLIENT_CPU),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
        cwd=c.ROOT,
    )
    try:
        out, err, timed_out = c.communicate_or_kill(p, cap)
    finally:
        c.reap(p)
    killed = f"killed after {cap:g} s" if timed_out else None
    lines = []
    for ln in out.splitlines():
        with contextlib.suppress(ValueError):
            lines.append(json.loads(ln))
    if killed is None and p.returncode != 0:
        killed = f"exit {p.returncode}: {err.strip()[-300:]}"
    return lines, killed


def client_section(gets: int, observes: int, notes: list[str]) -> None:
    port = c.free_port()
    demo = [
        c.PYTHON,
        "-m",
        "greencoap.demo",
        "--host",
        c.HOST,
        "--port",
        str(port),
        "--echo-factor",
        "0",
    ]
    runs: dict[tuple[str, str], tuple[list[dict], str | None]] = {}
    with c.Pinned(demo, SERVER_CPU, env={"GREENCOAP_HUB": "uring"}, name="demo") as srv:
        c.wait_ready(srv, port)
        for end in ("cancel", "stop"):
            for lib in LIBS:
                cmd = [
                    c.PYTHON,
                    str(Path(__file__).resolve()),
                    "--client",
                    lib,
                    "--port",
                    str(port),
                    "--gets",
                    str(gets),
                    "--observes",
                    str(observes),
                    "--observe-end",
                    end,
                ]
                env = {"GREENCOAP_HUB": "uring"} if lib == "dropin" else {}
                runs[lib, end] = lines, killed = run_child(cmd, CLIENT_CAP, env)
                snaps = {d["tag"]: d for d in lines if "tag" in d}
                print(
                    f"  client {lib:8} {end:6}: "
                    + ", ".join(
                        f"{t} {s['threads']} thr/{s['sockets']} sock" for t, s in snaps.items()
                    )
                    + (f" [{killed}]" if killed else ""),
                    file=sys.stderr,
                    flush=True,
                )

    points = [
        ("start", "start"),
        ("gets", f"after {gets:,} GETs"),
        ("observes", f"after {observes} observe cycles"),
        ("stop", "after client.stop()"),
        ("later", "1 s later, after gc.collect()"),
    ]
    for end, title in (
        ("cancel", "observe cycles end with cancel_observing(r, True) only"),
        ("stop", "observe cycles end with cancel_observing(r, True) + stop()"),
    ):
        c.heading(
            f"Legacy client — threads and sockets of a HelperClient script, "
            f"{gets:,} GETs + {observes} observe cycles; {title}"
        )
        snaps = {lib: {d["tag"]: d for d in runs[lib, end][0] if "tag" in d} for lib in LIBS}
        rows = []
        for tag, label in points:
            a, b = snaps["coapthon"].get(tag), snaps["dropin"].get(tag)

            def cell(s: dict | None, key: str) -> str:
                return "—" if s is None else str(s[key])

            rows.append(
                [
                    label,
                    cell(a, "threads"),
                    cell(b, "threads"),
                    c.fmt_ratio(c.ratio(b and b["threads"], a and a["threads"])),
                    cell(a, "sockets"),
                    cell(b, "sockets"),
                    c.fmt_ratio(c.ratio(b and b["sockets"], a and a["sockets"])),
                ]
            )
        for label, start, end_tag in (
            (f"{gets:,} GETs took, s", "start", "gets"),
            (f"{observes} observe cycles took, s", "gets", "observes"),
        ):
            took = {}
            for lib in LIBS:
                a, b = snaps[lib].get(start), snaps[lib].get(end_tag)
                took[lib] = None if a is None or b is None else b["t"] - a["t"]
            rows.append(
                [
                    label,
                    "—" if took["coapthon"] is None else f"{took['coapthon']:.2f}",
                    "—" if took["dropin"] is None else f"{took['dropin']:.2f}",
                    c.fmt_ratio(c.ratio(took["dropin"], took["coapthon"])),
                    "",
                    "",
                    "",
                ]
            )
        print(
            c.md_table(
                [
                    "point",
                    "CoAPthon3 threads",
                    "drop-in threads",
                    "×",
                    "CoAPthon3 sockets",
                    "drop-in sockets",
                    "×",
                ],
                rows,
                align="lrrrrrr",
            )
        )
        extra = []
        for lib in LIBS:
            lines, killed = runs[lib, end]
            info = {k: v for d in lines for k, v in d.items() if k not in ("tag", "t")}
            text = (
                f"{LIB_LABEL[lib]}: {info.get('gets_ok', '?')}/{gets} GETs answered, "
                f"{info.get('notifications', '?')} notifications, "
                f"{info.get('short_cycles', '?')} cycles short of 2 notifications"
            )
            if killed:
                text += f" — {killed}"
            extra.append(text)
        print("\n" + "; ".join(extra) + "\n")


# -- 3. a dead server ----------------------------------------------------------------
def dead_section(cap: float, samples: int, notes: list[str]) -> None:
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.bind((c.HOST, 0))
    closed_port = closed.getsockname()[1]
    closed.close()  # nothing listens there now: ICMP port unreachable
    silent: list[socket.socket] = []
    jobs = []  # (scenario, timeout, lib, sample, port, silent socket or None)
    for scenario in ("closed", "silent"):
        for timeout in (None, 5.0):
            for lib in LIBS:
                for i in range(samples if timeout is None else 1):
                    sock = None
                    port = closed_port
                    if scenario == "silent":
                        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                        sock.bind((c.HOST, 0))
                        sock.setblocking(False)
                        silent.append(sock)
                        port = sock.getsockname()[1]
                    jobs.append((scenario, timeout, lib, i, port, sock))
    procs = []
    started = time.monotonic()
    try:
        for _scenario, timeout, lib, _i, port, _sock in jobs:
            cmd = [c.PYTHON, str(Path(__file__).resolve()), "--dead", lib, "--port", str(port)]
            cmd += ["--cap", str(cap)]
            if timeout is not None:
                cmd += ["--timeout", str(timeout)]
            env = dict(os.environ)
            if lib == "dropin":
                env["GREENCOAP_HUB"] = "uring"
            procs.append(
                subprocess.Popen(
                    c.pinned(cmd, CLIENT_CPU),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                    env=env,
                    cwd=c.ROOT,
                )
            )
        results = []
        for job, p in zip(jobs, procs, strict=True):
            left = max(1.0, cap + 30.0 - (time.monotonic() - started))
            out, _, killed = c.communicate_or_kill(p, left)
            lines = []
            for ln in out.splitlines():
                with contextlib.suppress(ValueError):
                    lines.append(json.loads(ln))
            final = [d for d in lines if "get_s" in d]
            r = dict(final[-1]) if final else {}
            r["killed"] = killed or not final or r["get_s"] > cap
            sock = job[5]
            if sock is not None:
                n = 0
                with contextlib.suppress(BlockingIOError):
                    while True:
                        sock.recv(2048)
                        n += 1
                r["datagrams"] = n
            results.append((job, r))
            print(
                f"  dead {job[0]:6} timeout={job[1]} {job[2]:8} #{job[3]}: "
                + ("did not return" if r["killed"] else f"{r['get_s']:.1f} s → {r['result']}")
                + (f", {r['datagrams']} datagrams" if "datagrams" in r else ""),
                file=sys.stderr,
                flush=True,
            )
    finally:
        for p in procs:
            c.reap(p)
        for s in silent:
            s.close()

    c.heading("Legacy client — time until HelperClient.get() returns when the server is dead")
    rows = []
    for scenario, label in (
        ("closed", "closed port (ICMP unreachable)"),
        ("silent", "silent peer (no answer)"),
    ):
        for timeout in (None, 5.0):
            cells = {}
            for lib in LIBS:
                rs = [
                    r
                    for (s, t, lb, _, _, _), r in results
                    if (s, t, lb) == (scenario, timeout, lib)
                ]
                cells[lib] = rs
            row = [label, "default (none)" if timeout is None else f"timeout={timeout:g}"]
            medians = {}
            for lib in LIBS:
                rs = cells[lib]
                done = [r["get_s"] for r in rs if not r["killed"]]
                if len(done) < len(rs) or not rs:
                    text = f">{cap:g} s (did not return)"
                    if done:
                        text += f"; {len(done)}/{len(rs)} returned"
                    medians[lib] = None
                else:
                    m = c.median(done)
                    medians[lib] = m
                    text = f"{m:.1f} s"
                    if len(done) > 1:
                        text += f" ({min(done):.1f}–{max(done):.1f})"
                row.append(text)
            row.append(c.fmt_ratio(c.ratio(medians["dropin"], medians["coapthon"])))
            returned = []
            for lib in LIBS:
                res = sorted({r.get("result", "?") for r in cells[lib] if not r["killed"]})
                dgs = sorted({r["datagrams"] for r in cells[lib] if "datagrams" in r})
                part = "/".join(res) or "—"
                if dgs:
                    part += f", {'/'.join(map(str, dgs))} sent"
                returned.append(part)
            row.append(" · ".join(returned))
            rows.append(row)
    print(
        c.md_table(
            [
                "server",
                "get() timeout",
                "CoAPthon3",
                "drop-in",
                "×",
                "returned (CoAPthon3 · drop-in)",
            ],
            rows,
            align="llrrrl",
        )
    )
    print(
        f"\ndefault rows: median of {samples} (range); 'sent' = datagrams that reached "
        "the silent peer (the request and its retransmissions)\n"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="short rows: 2 s loads, fewer cycles")
    ap.add_argument("--duration", type=float, help="measured seconds per server row (5)")
    ap.add_argument("--dead-cap", type=float, help="seconds before a dead-server GET is given up")
    ap.add_argument("--skip", default="", help="comma-separated: server, client, dead")
    ap.add_argument("--client", choices=LIBS, help=argparse.SUPPRESS)
    ap.add_argument("--dead", choices=LIBS, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--gets", type=int, default=GETS, help=argparse.SUPPRESS)
    ap.add_argument("--observes", type=int, default=OBSERVES, help=argparse.SUPPRESS)
    ap.add_argument("--observe-end", choices=("cancel", "stop"), help=argparse.SUPPRESS)
    ap.add_argument("--timeout", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--cap", type=float, default=120.0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        return child_client(args)
    if args.dead:
        return child_dead(args)

    duration = args.duration or (2.0 if args.quick else 5.0)
    cap = args.dead_cap or (20.0 if args.quick else 120.0)
    samples = 1 if args.quick else 3
    gets, observes = (200, 20) if args.quick else (GETS, OBSERVES)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    c.ensure_tools()
    started = time.monotonic()
    version = c.code_version()
    notes: list[str] = [
        f"server on CPU {SERVER_CPU}, coapload and the client scripts on CPU {CLIENT_CPU}",
    ]
    if "server" not in skip:
        server_section(duration, notes)
    if "client" not in skip:
        client_section(gets, observes, notes)
    if "dead" not in skip:
        dead_section(cap, samples, notes)
    c.footer(version, started, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
