"""Device fleets at scale: 10,000 devices in one process, 100,000 over several.

    .venv/bin/python bench/fleet.py [--quick] [--devices N] [--hubs uring,epoll]
                                    [--sample S] [--duration S] [--runs N]
                                    [--scale-devices M] [--processes K] [--no-scale]

What it measures, per hub (the fleet process pinned to CPU 1, every load
generator and probe on CPU 0):

1. **Start-up and memory.** A child process imports greencoap, makes its hub
   and takes its RSS (the baseline), then starts ``Fleet(sensor, count=N,
   base_port=P)`` (the default template: observable telemetry, actuator,
   64 KiB firmware, upload target, /device) and reports the time ``start()``
   took and the RSS growth per device.  The reference is a child that binds
   N bare UDP sockets in the same way (time and RSS per socket).  The bar
   (issue 14): ≤ 10 s and ≤ 40 KB per device.
2. **Every device answers.** ``--sample`` devices chosen at random each get a
   ``GET /device`` from libcoap's ``coap-client-notls`` and must answer with
   their own name.
3. **Load spread over all devices.** ``coapload --port-count N`` sends CON
   GETs of ``/firmware/version`` round-robin to all N ports (window 64 × 4
   sockets); the reference is the same load on the one port of a 1-device
   fleet of the same template on the same hub, started the same way in the
   same run.  The fleet's own counters say how evenly the requests landed.
   The bar: ≥ 0.7× the single server.  The kernel's own share is measured
   beside it: the C responder ``coapecho -n N`` (one socket per port, epoll,
   no Python) under the same load on 1 socket and on N sockets.  Its ratio is
   what the kernel alone loses when every datagram lands on another socket.
4. **Scale-out** (``--no-scale`` skips it): ``greencoap fleet --devices M
   --processes K --host 127.0.0.1,...,127.0.0.4 --base-port P`` (the command
   a user runs; four loopback addresses because 100,000 devices need more
   ports than one address has): the time until its progress line shows
   every device up, the processes' total RSS, and a sample of devices
   answering libcoap's client.  K defaults to 8 (two per address): each
   process holds at most its open-file limit in sockets (``ulimit -Hn``).

A row per hub for 1-3; one table for 4.  Every process is stopped by its PID.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import re
import resource
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import _common as c

FLEET_CPU = c.SERVER_CPU
LOAD_CPU = c.CLIENT_CPU
LOAD_PATH = "firmware/version"
START_BAR_S = 10.0
MEMORY_BAR_KB = 40.0
SPREAD_BAR = 0.7
COAP_CLIENT = "coap-client-notls"
#: the scale-out's addresses: 25,000 devices each for 100,000, all below the
#: ephemeral port range (where the rest of the machine picks its ports)
HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4")


# -- children ------------------------------------------------------------------
def rss_kib(pid: int | str = "self") -> int:
    """Resident set size of a process, KiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, need), hard))


def wait_for_signal() -> None:
    """Park the main greenlet until SIGTERM (the hub keeps serving meanwhile)."""
    import greencoap

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    while not stop.is_set():
        greencoap.sleep(0.1)


def child_fleet(count: int, port: int) -> None:
    """Start ``count`` sensor devices on ports ``port``..; report; serve until SIGTERM."""
    import greencoap
    from greencoap.fleet import Fleet

    raise_nofile(count + 256)
    hub = greencoap.get_hub()
    gc.collect()
    base = rss_kib()
    fleet = Fleet(count=count, base_port=port)
    t0 = time.perf_counter()
    fleet.start()
    took = time.perf_counter() - t0
    gc.collect()
    grown = rss_kib() - base
    c.child_print(
        {
            "hub": hub.backend,
            "devices": count,
            "start_s": took,
            "rss_base_kib": base,
            "grown_kib": grown,
            "first_port": fleet.ports[0],
            "last_port": fleet.ports[-1],
        }
    )
    try:
        wait_for_signal()
    finally:
        served = sorted(d.counters()["requests"] for d in fleet)
        fleet.stop(deregister=False)
    c.child_print(
        {
            "requests": sum(served),
            "min": served[0],
            "median": served[len(served) // 2],
            "max": served[-1],
        }
    )


def child_bare(count: int, port: int) -> None:
    """The reference: bind ``count`` bare UDP sockets on ports ``port``.. and report."""
    raise_nofile(count + 256)
    gc.collect()
    base = rss_kib()
    t0 = time.perf_counter()
    socks = []
    for k in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((c.HOST, port + k))
        s.setblocking(False)
        socks.append(s)
    took = time.perf_counter() - t0
    gc.collect()
    c.child_print({"start_s": took, "grown_kib": rss_kib() - base})
    for s in socks:
        s.close()


# -- the parent's side ---------------------------------------------------------
class Child:
    """A child of this script pinned to a CPU that prints JSON lines."""

    def __init__(self, args: list[str], cpu: int, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            c.pinned([c.PYTHON, __file__, *args], cpu),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **env},
            cwd=c.ROOT,
        )

    def line(self, timeout: float) -> dict[str, Any]:
        """The next JSON line, within ``timeout`` s."""
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, left))
            if not ready:
                self.stop()
                raise RuntimeError(f"no report within {timeout} s: {self.stderr()}")
            text = self.proc.stdout.readline()
            if not text:
                raise RuntimeError(f"child exited {self.proc.wait()}: {self.stderr()}")
            if text.startswith("{"):
                return json.loads(text)

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read()[-2000:]

    def stop(self, timeout: float = 30.0) -> dict[str, Any] | None:
        """SIGTERM, then the final JSON line if one comes; SIGKILL when stuck."""
        p = self.proc
        if p.poll() is not None:
            return None
        p.terminate()
        out, _, killed = c.communicate_or_kill(p, timeout)
        if killed:
            return None
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        return json.loads(lines[-1]) if lines else None


def consecutive_free_ports(n: int, hosts: tuple[str, ...] = (c.HOST,)) -> int:
    """A first port P such that P..P+n-1 are free on every host (below the
    ephemeral range when there is room, where nothing else picks ports)."""
    try:
        lo = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        lo = 32768
    spans = [(1024, lo - n)] if lo - n > 1024 else []
    spans.append((1024, 65535 - n + 1))
    rng = random.Random()
    for _ in range(50):
        a, b = spans[0] if rng.random() < 0.8 or len(spans) == 1 else spans[1]
        if b <= a:
            a, b = spans[-1]
        base = rng.randrange(a, b)
        if all_free(base, n, hosts):
            return base
    raise RuntimeError(f"no {n} consecutive free UDP ports")


def all_free(base: int, n: int, hosts: tuple[str, ...]) -> bool:
    """Whether ports base..base+n-1 are free on every host (checked a few
    thousand at a time: this process has an open-file limit too)."""
    for host in hosts:
        for start in range(base, base + n, 4096):
            socks = []
            try:
                for port in range(start, min(start + 4096, base + n)):
                    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    socks.append(s)
                    s.bind((host, port))
            except OSError:
                return False
            finally:
                for s in socks:
                    s.close()
    return True


def coap_client_get(host: str, port: int, path: str, timeout: int = 3) -> str:
    p = subprocess.run(
        c.pinned(
            [COAP_CLIENT, "-m", "get", "-B", str(timeout), f"coap://{host}:{port}/{path}"], LOAD_CPU
        ),
        capture_output=True,
        text=True,
        timeout=timeout + 10,
    )
    return p.stdout.strip()


def sample_answers(targets: list[tuple[str, int, str]]) -> int:
    """How many ``(host, port, name)`` devices answer ``GET /device`` with their name."""

    def one(t: tuple[str, int, str]) -> bool:
        host, port, name = t
        out = coap_client_get(host, port, "device")
        try:
            return json.loads(out)["name"] == name
        except (ValueError, KeyError, TypeError):
            return False

    with ThreadPoolExecutor(8) as pool:
        return sum(pool.map(one, targets))


def coapload(port: int, count: int, duration: float) -> dict[str, Any]:
    """CON GET LOAD_PATH over ``count`` ports from ``port``, window 64 x 4 sockets."""
    return c.run_coapload(port, "con", duration, path=LOAD_PATH, port_count=count)


def measure_hub(hub: str, n: int, sample: int, duration: float, runs: int) -> dict[str, Any]:
    env = {"GREENCOAP_HUB": hub}
    out: dict[str, Any] = {"hub": hub}
    # the reference: one device of the same template, the same load on its one port
    port = consecutive_free_ports(1)
    one = Child(["--child-fleet", "1", str(port)], FLEET_CPU, env)
    try:
        one.line(60)
        single = [coapload(port, 1, duration) for _ in range(runs)]
    finally:
        one.stop()
    out["single"] = c.median_run(single)
    print(f"  {hub}: 1 device {out['single']['rps']:,} req/s", file=sys.stderr, flush=True)

    port = consecutive_free_ports(n)
    bare = Child(["--child-bare", str(n), str(port)], FLEET_CPU, env)
    try:
        out["bare"] = bare.line(120)
    finally:
        bare.stop()

    port = consecutive_free_ports(n)
    fleet = Child(["--child-fleet", str(n), str(port)], FLEET_CPU, env)
    final = None
    try:
        out["start"] = fleet.line(180)
        print(
            f"  {hub}: {n} devices up in {out['start']['start_s']:.2f} s",
            file=sys.stderr,
            flush=True,
        )
        picks = random.Random().sample(range(n), min(sample, n))
        out["sampled"] = len(picks)
        out["answered"] = sample_answers([(c.HOST, port + k, f"dev-{k}") for k in picks])
        spread = [coapload(port, n, duration) for _ in range(runs)]
        out["spread"] = c.median_run(spread)
    finally:
        final = fleet.stop()
    out["served"] = final
    print(f"  {hub}: {n} devices {out['spread']['rps']:,} req/s", file=sys.stderr, flush=True)
    return out


def measure_c_reference(n: int, duration: float, runs: int) -> dict[str, Any]:
    """The C responder on 1 socket and on ``n`` sockets, the same load as the fleet's."""
    out: dict[str, Any] = {}
    for key, count in (("single", 1), ("spread", n)):
        for attempt in range(3):
            port = consecutive_free_ports(count)
            with c.start_coapecho(port, count=count) as echo:
                try:
                    c.wait_ready(echo, port + count - 1)
                except RuntimeError:
                    if attempt == 2 or echo.alive():
                        raise
                    continue  # a port of the range was taken meanwhile: another range
                out[key] = c.median_run([coapload(port, count, duration) for _ in range(runs)])
                break
    print(
        f"  C responder: 1 socket {out['single']['rps']:,} req/s, "
        f"{n} sockets {out['spread']['rps']:,} req/s",
        file=sys.stderr,
        flush=True,
    )
    return out


# -- scale-out through the command line ------------------------------------------
PROGRESS = re.compile(r"devices (\d+) up")


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            kids = []
        for k in map(int, kids):
            out.append(k)
            todo.append(k)
    return out


def baseline_rss(hub: str) -> int:
    """RSS (KiB) of a fleet process holding one device: what each process costs anyway."""
    port = consecutive_free_ports(1)
    one = Child(["--child-fleet", "1", str(port)], FLEET_CPU, {"GREENCOAP_HUB": hub})
    try:
        one.line(60)
        return rss_kib(one.proc.pid)
    finally:
        one.stop()


def measure_scale(hub: str, devices: int, processes: int, sample: int) -> dict[str, Any]:
    hosts = HOSTS
    per_host = -(-devices // len(hosts))
    base = consecutive_free_ports(per_host, hosts)
    cmd = [
        c.PYTHON,
        "-m",
        "greencoap",
        "fleet",
        "--devices",
        str(devices),
        "--processes",
        str(processes),
        "--host",
        ",".join(hosts),
        "--base-port",
        str(base),
        "--json",
    ]
    p = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "GREENCOAP_HUB": hub},
        cwd=c.ROOT,
    )
    up_at: list[float] = []
    seen = [0]
    t0 = time.monotonic()

    def watch() -> None:
        assert p.stderr is not None
        for line in p.stderr:
            m = PROGRESS.search(line)
            if m:
                seen[0] = int(m.group(1))
                if seen[0] >= devices and not up_at:
                    up_at.append(time.monotonic() - t0)

    th = threading.Thread(target=watch, daemon=True)
    th.start()
    out: dict[str, Any] = {"devices": devices, "processes": processes, "hub": hub}
    try:
        deadline = t0 + 600
        while not up_at and time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.2)
        if not up_at:
            raise RuntimeError(f"only {seen[0]} of {devices} devices came up")
        out["up_s"] = up_at[0]
        kids = descendants(p.pid)
        out["rss_kib"] = sum(rss_kib(k) for k in kids)
        out["children"] = len(kids)
        # where device g lives: as `greencoap fleet --processes` placed it
        from greencoap.fleet.cli import placement

        place = placement(devices, processes, hosts)
        picks = random.Random().sample(range(devices), min(sample, devices))
        targets = []
        for g in picks:
            for first, share, host, offset in place:
                if first <= g < first + share:
                    targets.append((host, base + offset + g - first, f"dev-{g}"))
        out["sampled"] = len(targets)
        out["answered"] = sample_answers(targets)
    finally:
        p.send_signal(signal.SIGINT)
        stdout, _, _ = c.communicate_or_kill(p, 300)
        th.join(5)
    try:
        final = json.loads(stdout)
        out["devices_total"] = final.get("devices_total")
    except ValueError:
        out["devices_total"] = None
    return out


# -- report --------------------------------------------------------------------
def report(
    rows: list[dict[str, Any]],
    kernel: dict[str, Any] | None,
    scale: dict[str, Any] | None,
    base_kib: int | None,
    n: int,
    duration: float,
    runs: int,
) -> None:
    c.heading(
        f"Device fleets — {n:,} devices in one process (sensor template), "
        f"load {runs} × {duration:g} s, median run"
    )
    table = []
    for r in rows:
        s, b = r["start"], r["bare"]
        kb = s["grown_kib"] * 1.024 / n
        table.append(
            [
                r["hub"],
                f"{s['start_s']:.2f} s",
                f"{b['start_s']:.2f} s",
                f"{kb:.1f} KB",
                f"{b['grown_kib'] * 1.024 / n:.2f} KB",
                f"{r['answered']}/{r['sampled']}",
                c.fmt_int(r["spread"]["rps"]),
                c.fmt_int(r["single"]["rps"]),
                c.fmt_ratio(c.ratio(r["spread"]["rps"], r["single"]["rps"])),
            ]
        )
    if kernel is not None:
        table.append(
            [
                "C responder",
                "—",
                "—",
                "—",
                "—",
                "—",
                c.fmt_int(kernel["spread"]["rps"]),
                c.fmt_int(kernel["single"]["rps"]),
                c.fmt_ratio(c.ratio(kernel["spread"]["rps"], kernel["single"]["rps"])),
            ]
        )
    print(
        c.md_table(
            [
                "hub",
                "start",
                "bare sockets",
                "memory/device",
                "bare/socket",
                "answered",
                "req/s over all",
                "req/s 1 device",
                "× 1 device",
            ],
            table,
        )
    )
    print()
    for r in rows:
        sp, sv = r["spread"], r["served"] or {}
        print(
            f"- {r['hub']}: start {r['start']['start_s']:.2f} s (bar {START_BAR_S:g} s, "
            f"{r['start']['start_s'] / max(r['bare']['start_s'], 1e-9):.0f}× the bare sockets), "
            f"{r['start']['grown_kib'] * 1.024 / n:.1f} KB/device beyond a baseline of "
            f"{r['start']['rss_base_kib'] / 1024:.0f} MiB (bar {MEMORY_BAR_KB:g} KB); spread "
            f"load p50 {sp['p50_us']:,} µs p99 {sp['p99_us']:,} µs, lost {sp['lost']}, "
            f"errors {sp['errors']} (1 device: p99 {r['single']['p99_us']:,} µs, lost "
            f"{r['single']['lost']}); requests per device min/median/max "
            f"{sv.get('min')}/{sv.get('median')}/{sv.get('max')}; "
            f"req/s ranges {c.rps_range(sp)} (all) and {c.rps_range(r['single'])} (one)"
        )
    if kernel is not None:
        print(
            f"- C responder: `coapecho -n {n:,}` (a socket per port, epoll, no Python) against "
            f"`coapecho -n 1`, the same coapload: what the kernel alone loses when each "
            f"datagram lands on another socket; req/s ranges {c.rps_range(kernel['spread'])} "
            f"({n:,} sockets) and {c.rps_range(kernel['single'])} (one)"
        )
    if scale is not None:
        print()
        c.heading(
            f"Device fleets — scale-out: greencoap fleet --devices {scale['devices']:,} "
            f"--processes {scale['processes']} over {len(HOSTS)} loopback addresses"
        )
        per = None
        if base_kib is not None:
            per = (scale["rss_kib"] - scale["children"] * base_kib) * 1.024 / scale["devices"]
        print(
            c.md_table(
                [
                    "hub",
                    "devices",
                    "processes",
                    "all up after",
                    "RSS total",
                    "per device",
                    "answered",
                    "stopped cleanly",
                ],
                [
                    [
                        scale["hub"],
                        f"{scale['devices']:,}",
                        scale["children"],
                        f"{scale['up_s']:.1f} s",
                        f"{scale['rss_kib'] / 1024:,.0f} MiB",
                        "—" if per is None else f"{per:.1f} KB",
                        f"{scale['answered']}/{scale['sampled']}",
                        "yes" if scale.get("devices_total") == scale["devices"] else "no",
                    ]
                ],
            )
        )
        if base_kib is not None:
            print(
                f"\n- per device: the processes' RSS less {scale['children']} × "
                f"{base_kib / 1024:.0f} MiB (a fleet process holding one device)"
            )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1,000 devices, 1 × 2 s, 20 samples")
    ap.add_argument("--devices", type=int, help="devices in one process (10,000)")
    ap.add_argument("--hubs", default="uring,epoll")
    ap.add_argument("--sample", type=int, help="devices sampled with coap-client (200)")
    ap.add_argument("--duration", type=float, help="measured seconds per load run (5)")
    ap.add_argument("--runs", type=int, help="load runs, median reported (3)")
    ap.add_argument("--scale-devices", type=int, help="devices of the scale-out (100,000)")
    ap.add_argument("--processes", type=int, default=8, help="processes of the scale-out")
    ap.add_argument("--no-scale", action="store_true", help="skip the scale-out")
    ap.add_argument("--child-fleet", nargs=2, type=int, help=argparse.SUPPRESS)
    ap.add_argument("--child-bare", nargs=2, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_fleet:
        child_fleet(*args.child_fleet)
        return 0
    if args.child_bare:
        child_bare(*args.child_bare)
        return 0
    n = args.devices or (1000 if args.quick else 10000)
    sample = args.sample or (20 if args.quick else 200)
    duration = args.duration or (2.0 if args.quick else 5.0)
    runs = args.runs or (1 if args.quick else 3)
    scale_n = args.scale_devices or (10000 if args.quick else 100000)
    if not c.have(COAP_CLIENT):
        print(f"{COAP_CLIENT} (libcoap3-bin) is needed", file=sys.stderr)
        return 2
    c.ensure_tools()
    started = time.monotonic()
    version = c.code_version()
    rows = []
    kernel = measure_c_reference(n, duration, runs)
    for hub in [h for h in args.hubs.split(",") if h]:
        rows.append(measure_hub(hub, n, sample, duration, runs))
    scale = base_kib = None
    if not args.no_scale:
        hub = rows[0]["hub"] if rows else "uring"
        base_kib = baseline_rss(hub)
        scale = measure_scale(hub, scale_n, args.processes, sample)
    report(rows, kernel, scale, base_kib, n, duration, runs)
    c.footer(version, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
