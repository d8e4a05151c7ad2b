"""``greencoap fleet``: start a fleet of simulated devices from the command line.

    greencoap fleet --devices 10000 --base-port 20000 \\
        --register coap://127.0.0.1:5683/rd --lifetime 300

Prints a progress line every second (devices up, registered, requests
served/s, notifications sent/s, RD failures) on stderr, a summary table on
exit (``--json``: one JSON object on stdout instead), and on Ctrl-C (or
SIGTERM, or after ``--duration`` s) removes every registration and stops.
``--processes K`` runs K processes with a share of the devices and ports
each (one per core: a process holds up to its open-file limit in sockets).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

__all__ = ["main", "placement"]

#: the counters a progress line and the summary show, in order
SHOWN = ("devices", "registered", "offline", "requests", "notifications", "rd_failures")


def load_template(spec: str) -> Any:
    """``module:function`` → the function (a device template)."""
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise argparse.ArgumentTypeError("a template is module:function, e.g. mydevices:thermostat")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise argparse.ArgumentTypeError(f"cannot load template {spec}: {e}") from None
    if not callable(fn):
        raise argparse.ArgumentTypeError(f"{spec} is not callable")
    return fn


def _fault(kind: str, fields: tuple[str, ...]):  # noqa: ANN202
    def parse(text: str) -> dict[str, Any]:
        parts = text.split(":")
        if len(parts) != len(fields) + 1:
            want = ":".join(("FRACTION", *(f.upper() for f in fields)))
            raise argparse.ArgumentTypeError(f"--{kind} takes {want}")
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise argparse.ArgumentTypeError(f"--{kind}: numbers expected, got {text}") from None
        if not 0.0 <= values[0] <= 1.0:
            raise argparse.ArgumentTypeError(f"--{kind}: the fraction is between 0 and 1")
        return {"kind": kind, "fraction": values[0], **dict(zip(fields, values[1:], strict=True))}

    return parse


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="greencoap fleet", description="thousands of simulated CoAP devices"
    )
    ap.add_argument("--devices", type=int, required=True, help="number of devices")
    ap.add_argument(
        "--host",
        default="127.0.0.1",
        help="address the devices bind; with --processes, several comma-separated "
        "(process i binds the i-th in turn, each with its own port range from --base-port: "
        "more devices than one address has ports)",
    )
    ap.add_argument(
        "--base-port",
        type=int,
        default=None,
        help="device i listens on BASE+i (default: free ports)",
    )
    ap.add_argument("--register", metavar="URI", help="RD to register with: coap://host[:port]/rd")
    ap.add_argument("--lifetime", type=int, default=300, help="registration lifetime (s)")
    ap.add_argument("--ramp", type=float, default=None, help="spread registrations over S s")
    ap.add_argument("--name", default="dev-{i}", help="endpoint name pattern ({i}: index)")
    ap.add_argument(
        "--ep-param",
        action="append",
        default=[],
        metavar="KEY[=VALUE]",
        help="extra registration query parameter (repeatable): d=sector, et=type …",
    )
    ap.add_argument("--lwm2m", metavar="VERSION", help="register as an LwM2M client (e.g. 1.1)")
    ap.add_argument(
        "--template",
        type=load_template,
        default=None,
        metavar="MODULE:FUNCTION",
        help="device template (default greencoap.fleet.behaviours:sensor)",
    )
    ap.add_argument(
        "--psk-pattern",
        metavar="IDENTITY:KEY",
        help="serve coaps:// too, with this PSK per device ({i}, {name} filled in)",
    )
    ap.add_argument("--dtls-base-port", type=int, default=None, help="DTLS port of device 0")
    ap.add_argument("--processes", type=int, default=1, help="processes to spread devices over")
    ap.add_argument("--duration", type=float, default=None, help="stop after S s (default: Ctrl-C)")
    ap.add_argument(
        "--echo-factor",
        type=float,
        default=None,
        help="devices' amplification limit (RFC 9175; 0 = off; default 3)",
    )
    ap.add_argument(
        "--slow",
        type=_fault("slow", ("delay",)),
        action="append",
        default=[],
        metavar="FRACTION:DELAY",
        help="answer DELAY s late on a fraction of devices",
    )
    ap.add_argument(
        "--loss",
        type=_fault("loss", ("rate",)),
        action="append",
        default=[],
        metavar="FRACTION:RATE",
        help="lose RATE of datagrams on a fraction",
    )
    ap.add_argument(
        "--offline",
        type=_fault("offline", ("every", "down")),
        action="append",
        default=[],
        metavar="FRACTION:EVERY:DOWN",
        help="a fraction goes offline DOWN s once every EVERY s",
    )
    ap.add_argument(
        "--reboot",
        type=_fault("reboot", ("every",)),
        action="append",
        default=[],
        metavar="FRACTION:EVERY",
        help="a fraction reboots once every EVERY s",
    )
    ap.add_argument("--seed", type=int, default=0, help="random seed (faults, jitter)")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    ap.add_argument("--quiet", action="store_true", help="no progress line")
    ap.add_argument("--first-index", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return ap


def _ep_params(items: list[str]) -> list[tuple[str, str | None]]:
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        out.append((key, value if sep else None))
    return out


class Stop:
    """Set by SIGINT/SIGTERM (or the duration): the fleet winds down."""

    def __init__(self) -> None:
        self.flag = threading.Event()

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.flag.set())


def _progress_line(c: dict[str, Any], rates: tuple[float, float], elapsed: float) -> str:
    return (
        f"[{elapsed:6.0f} s] devices {c['devices']} up · registered {c['registered']}"
        f" · offline {c['offline']} · {rates[0]:.0f} req/s · {rates[1]:.0f} notif/s"
        f" · RD failures {c['rd_failures']}"
    )


class Progress:
    """Rates from successive counters; prints a line per second (stderr)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.started = time.monotonic()
        self.last: tuple[float, int, int] | None = None
        self.tty = sys.stderr.isatty()

    def show(self, c: dict[str, Any]) -> None:
        now = time.monotonic()
        rates = (0.0, 0.0)
        if self.last is not None and now > self.last[0]:
            dt = now - self.last[0]
            rates = ((c["requests"] - self.last[1]) / dt, (c["notifications"] - self.last[2]) / dt)
        self.last = (now, c["requests"], c["notifications"])
        if self.quiet:
            return
        line = _progress_line(c, rates, now - self.started)
        if self.tty:
            sys.stderr.write("\r" + line + "\x1b[K")
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def done(self) -> None:
        if self.tty and not self.quiet:
            sys.stderr.write("\n")


def summary_table(s: dict[str, Any], seconds: float) -> str:
    """The summary printed on exit."""
    reg = s.get("registration", {})
    events = s.get("events", {})
    rows = [
        ("devices", s.get("devices_total", s.get("devices", 0))),
        ("registered before stop", s.get("registered_before_stop", 0)),
        ("registrations", reg.get("registrations", 0)),
        ("refreshes", reg.get("refreshes", 0)),
        ("re-registrations", reg.get("reregistrations", 0)),
        ("removals sent", events.get("remove", 0)),
        ("RD failures", s.get("rd_failures", 0)),
        ("requests served", s.get("requests", 0)),
        ("notifications sent", s.get("notifications", 0)),
        ("retransmissions", s.get("retransmissions", 0)),
        ("datagrams lost (faults)", s.get("lost_in", 0) + s.get("lost_out", 0)),
        ("reboots", events.get("reboot", 0)),
        ("run time (s)", round(seconds, 1)),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{'':-<{width + 14}}"]
    lines += [f"{k:<{width}}  {v:>12}" for k, v in rows]
    lines.append(lines[0])
    return "\n".join(lines)


def run_fleet(args: argparse.Namespace, emit: Any = None) -> dict[str, Any]:
    """One process's fleet: start, inject faults, report until stopped; its stats."""
    from ..hub import sleep
    from . import Fleet
    from .behaviours import sensor

    options: dict[str, Any] = {}
    if args.echo_factor is not None:
        options["echo_factor"] = args.echo_factor or None
    fleet = Fleet(
        args.template or sensor,
        args.devices,
        host=args.host,
        base_port=args.base_port,
        name=args.name,
        first_index=args.first_index,
        register=args.register,
        lifetime=args.lifetime,
        ramp=args.ramp,
        endpoint_params=_ep_params(args.ep_param),
        lwm2m=args.lwm2m,
        psk=args.psk_pattern,
        dtls_base_port=args.dtls_base_port,
        seed=args.seed + args.first_index,
        server_options=options,
    )
    stop = Stop()
    stop.install()
    t0 = time.monotonic()
    fleet.start()
    for fault in (*args.slow, *args.loss, *args.offline, *args.reboot):
        params = {k: v for k, v in fault.items() if k not in ("kind", "fraction")}
        fleet.inject(fault["kind"], fault["fraction"], **params)
    progress = Progress(args.quiet or emit is not None)
    try:
        while not stop.flag.is_set():
            if args.duration is not None and time.monotonic() - t0 >= args.duration:
                break
            c = fleet.counters()
            if emit is not None:
                emit({"counters": c})
            progress.show(c)
            for _ in range(10):
                if stop.flag.is_set():
                    break
                sleep(0.1)
    finally:
        progress.done()
        before = fleet.counters()
        fleet.stop(deregister=True)
    stats = fleet.stats()
    stats["registered_before_stop"] = before["registered"]
    stats["devices_total"] = len(fleet)
    stats["seconds"] = time.monotonic() - t0
    return stats


def hosts_of(args: argparse.Namespace) -> list[str]:
    """The ``--host`` addresses, in order."""
    return [h.strip() for h in args.host.split(",") if h.strip()]


def _child_argv(
    args: argparse.Namespace, argv: list[str], share: int, first: int, host: str, offset: int
) -> list:
    """A child's command line: ``share`` devices from index ``first`` on ``host``,
    ports from ``--base-port`` + ``offset``."""
    out = [a for a in argv]
    drop = {"--devices", "--processes", "--first-index", "--base-port", "--dtls-base-port"}
    drop.add("--host")
    cleaned, skip = [], False
    for a in out:
        if skip:
            skip = False
            continue
        name = a.split("=", 1)[0]
        if name in drop:
            skip = "=" not in a
            continue
        if a in ("--json", "--quiet"):
            continue
        cleaned.append(a)
    cleaned += ["--devices", str(share), "--first-index", str(first), "--child", "--quiet"]
    cleaned += ["--host", host]
    if args.base_port is not None:
        cleaned += ["--base-port", str(args.base_port + offset)]
    if args.dtls_base_port is not None:
        cleaned += ["--dtls-base-port", str(args.dtls_base_port + offset)]
    return [sys.executable, "-m", "greencoap.fleet.cli", *cleaned]


def run_processes(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """``--processes K``: K children with a share each; aggregate their reports."""
    procs = []
    for first, share, host, offset in placement(
        args.devices, args.processes, hosts_of(args), args.first_index
    ):
        cmd = _child_argv(args, argv, share, first, host, offset)
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True))
    latest: dict[int, dict] = {}
    finals: dict[int, dict] = {}
    lock = threading.Lock()

    def reader(i: int, p: subprocess.Popen) -> None:
        for line in p.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            with lock:
                if "counters" in msg:
                    latest[i] = msg["counters"]
                elif "final" in msg:
                    finals[i] = msg["final"]

    threads = [
        threading.Thread(target=reader, args=(i, p), daemon=True) for i, p in enumerate(procs)
    ]
    for t in threads:
        t.start()
    stop = Stop()
    stop.install()
    progress = Progress(args.quiet)
    t0 = time.monotonic()
    try:
        while not stop.flag.wait(1.0):
            if all(p.poll() is not None for p in procs):
                break
            if args.duration is not None and time.monotonic() - t0 >= args.duration + 0.5:
                break
            with lock:
                parts = list(latest.values())
            if parts:
                progress.show(_sum(parts))
    finally:
        progress.done()
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for t in threads:
            t.join(5)
    total = _sum(list(finals.values()))
    total["processes"] = len(procs)
    total["processes_reported"] = len(finals)
    total["seconds"] = time.monotonic() - t0
    return total


def _shares(devices: int, processes: int) -> list[int]:
    """``devices`` split as evenly as can be over ``processes``."""
    return [devices // processes + (1 if i < devices % processes else 0) for i in range(processes)]


def placement(
    devices: int, processes: int, hosts: tuple[str, ...] | list[str], first_index: int = 0
) -> list[tuple[int, int, str, int]]:
    """Where ``--processes`` puts the devices: for each process with a share,
    ``(first device index, share, address, port offset)``.  Process ``i``
    holds a contiguous share on ``hosts[i % len(hosts)]``; its devices' ports
    follow those placed on that address before it (from the base port)."""
    out = []
    first = first_index
    used = dict.fromkeys(hosts, 0)  # devices placed on each address so far
    for i, share in enumerate(_shares(devices, processes)):
        if share == 0:
            continue
        host = hosts[i % len(hosts)]
        out.append((first, share, host, used[host]))
        first += share
        used[host] += share
    return out


def _per_host(devices: int, processes: int, hosts: int) -> list[int]:
    """How many devices each address gets when ``devices`` are spread over
    ``processes`` processes and the processes over ``hosts`` addresses."""
    out = [0] * hosts
    for i, share in enumerate(_shares(devices, processes)):
        out[i % hosts] += share
    return out


def _sum(parts: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in parts:
        for key, v in part.items():
            if isinstance(v, dict):
                out[key] = _sum([out.get(key, {}), v])
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                out[key] = out.get(key, 0) + v
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``greencoap fleet`` (and ``python -m greencoap.fleet.cli``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.devices < 1:
        ap.error("--devices must be at least 1")
    if args.processes < 1:
        ap.error("--processes must be at least 1")
    hosts = hosts_of(args)
    if not hosts:
        ap.error("--host needs an address")
    if len(hosts) > 1 and len(hosts) > args.processes:
        ap.error(f"{len(hosts)} --host addresses need --processes {len(hosts)} or more")
    per_host = max(_per_host(args.devices, args.processes, len(hosts)))
    if args.base_port is not None and not 1 <= args.base_port <= 65535 - per_host + 1:
        where = f" on one of the {len(hosts)} addresses" if len(hosts) > 1 else ""
        ap.error(
            f"--base-port {args.base_port} + {per_host} devices{where} runs past port 65535"
            + ("" if len(hosts) > 1 else " (more addresses: --host A,B with --processes)")
        )
    from .fleet import FleetError

    try:
        if args.processes > 1 and not args.child:
            stats = run_processes(args, argv)
        else:
            emit = None
            if args.child:

                def emit(obj: dict) -> None:
                    sys.stdout.write(json.dumps(obj) + "\n")
                    sys.stdout.flush()

            stats = run_fleet(args, emit)
            if args.child:
                emit({"final": stats})
                return 0
    except FleetError as e:
        print(f"greencoap fleet: {e}", file=sys.stderr)
        return 2
    seconds = stats.get("seconds", 0.0)
    if args.json:
        print(json.dumps(stats, indent=1, sort_keys=True, default=str))
    else:
        print(summary_table(stats, seconds))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
