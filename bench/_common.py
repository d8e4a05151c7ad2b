"""Shared plumbing for the benchmark scripts in ``bench/`` (not a benchmark itself).

* paths to the venv's Python and the project's own C tools ``coapload`` (the
  load generator) and ``coapecho`` (the reference responder), built on demand
  into ``build/`` from ``bench/coapload.c`` and ``bench/coapecho.c`` by
  ``make tools``;
* :class:`Pinned`: a subprocess pinned to one CPU with ``taskset -c N``,
  always stopped by its PID (terminate, then kill) when the ``with`` block ends;
* free UDP ports, a CoAP ping (empty CON → RST) and a raw CoAP GET used to wait
  until a server answers;
* running ``coapload`` and parsing its ``RESULT`` line;
* running a child process that prints one JSON line as its last line;
* medians, number formatting and markdown tables; a one-line machine summary.

The machine has two CPUs: servers go on CPU 1 (:data:`SERVER_CPU`), load
generators and measured clients on CPU 0 (:data:`CLIENT_CPU`).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
BUILD = ROOT / "build"
PYTHON = str(ROOT / ".venv" / "bin" / "python")
COAPLOAD = BUILD / "coapload"
COAPECHO = BUILD / "coapecho"
DTLSLOAD = BUILD / "dtlsload"
COAPBENCH = COAPLOAD  # the load generator's former name
TOOL_SOURCES = {
    COAPLOAD: BENCH / "coapload.c",
    COAPECHO: BENCH / "coapecho.c",
    DTLSLOAD: BENCH / "dtlsload.c",
}
#: what each tool links besides libc
TOOL_LIBS = {DTLSLOAD: ["-lssl", "-lcrypto"]}

SERVER_CPU = 1
CLIENT_CPU = 0
HOST = "127.0.0.1"

RESULT_FIELDS_INT = (
    "window",
    "sockets",
    "rps",
    "p50_us",
    "p99_us",
    "p999_us",
    "lost",
    "errors",
    "unmatched",
    "sent",
    "p90_us",
    "separate",
    "ports",
    "sessions",
)
RESULT_FIELDS_FLOAT = ("client_cpu", "handshake_ms")


# -- tools ---------------------------------------------------------------------
def ensure_tools() -> None:
    """Build ``build/coapload``, ``build/coapecho`` and ``build/dtlsload`` from
    ``bench/*.c`` when missing or stale.

    ``make -C ROOT tools`` does it; without ``make`` they are compiled with ``cc`` directly.
    """
    stale = [
        exe
        for exe, src in TOOL_SOURCES.items()
        if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime
    ]
    if not stale:
        return
    if have("make"):
        subprocess.run(["make", "-s", "-C", str(ROOT), "tools"], check=True, timeout=300)
        return
    BUILD.mkdir(exist_ok=True)
    for exe in stale:
        cmd = ["cc", "-O2", "-Wall", "-Wextra", "-o", str(exe), str(TOOL_SOURCES[exe])]
        cmd += TOOL_LIBS.get(exe, [])
        subprocess.run(cmd, check=True, timeout=300)


def have(cmd: str) -> bool:
    return shutil.which(cmd) is not None


def free_port() -> int:
    """A UDP port on 127.0.0.1 that is free right now (bind to 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def reap(p: subprocess.Popen) -> None:
    """Stop child ``p`` by its PID if it still runs (SIGKILL), and wait for it."""
    if p.poll() is None:
        p.kill()
        p.wait()


def communicate_or_kill(p: subprocess.Popen, timeout: float) -> tuple[Any, Any, bool]:
    """``p.communicate(timeout=...)``; when the time is up, SIGKILL it and
    collect what it printed.  Returns ``(stdout, stderr, killed)``."""
    try:
        out, err = p.communicate(timeout=timeout)
        return out, err, False
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        return out, err, True


def pinned(cmd: Sequence[str], cpu: int) -> list[str]:
    """``cmd`` prefixed with ``taskset -c cpu`` (taskset execs: the PID stays the same)."""
    return ["taskset", "-c", str(cpu), *map(str, cmd)]


# -- processes -----------------------------------------------------------------
class Pinned:
    """A subprocess pinned to ``cpu``; output goes to a temporary log file.

    Use as a context manager: leaving the block stops the process by its PID
    (SIGTERM, then SIGKILL after ``grace`` seconds) whatever happened.
    """

    def __init__(
        self,
        cmd: Sequence[str],
        cpu: int,
        env: dict[str, str] | None = None,
        name: str | None = None,
        grace: float = 3.0,
    ) -> None:
        self.cmd = pinned(cmd, cpu)
        self.env = env
        self.name = name or Path(str(cmd[0])).name
        self.grace = grace
        self.proc: subprocess.Popen | None = None
        self.log = tempfile.NamedTemporaryFile(
            mode="w+b", prefix=f"bench-{self.name}-", suffix=".log", delete=False
        )

    def start(self) -> Pinned:
        full_env = dict(os.environ)
        if self.env:
            full_env.update(self.env)
        self.proc = subprocess.Popen(
            self.cmd,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=ROOT,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        """Stop the process by its PID; return its exit status."""
        p = self.proc
        if p is None:
            return None
        try:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(self.grace)
                except subprocess.TimeoutExpired:
                    reap(p)
        finally:
            self.log.flush()
        return p.returncode

    def output(self, tail: int = 4000) -> str:
        """The last ``tail`` characters the process printed."""
        self.log.flush()
        try:
            data = Path(self.log.name).read_bytes()
        except OSError:
            return ""
        return data[-tail:].decode("utf-8", "replace")

    def close(self) -> None:
        self.log.close()
        try:
            os.unlink(self.log.name)
        except OSError:
            pass

    def __enter__(self) -> Pinned:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        try:
            self.stop()
        finally:
            self.close()


# -- raw CoAP ------------------------------------------------------------------
def coap_ping(port: int, host: str = HOST, timeout: float = 0.3) -> bool:
    """Send an empty CON (CoAP ping) and return True when an RST with its MID comes back."""
    mid = int.from_bytes(os.urandom(2), "big")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.connect((host, port))
        try:
            s.send(struct.pack("!BBH", 0x40, 0x00, mid))
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                data = s.recv(2048)
                if len(data) >= 4 and data[0] >> 4 & 3 == 3 and data[2:4] == mid.to_bytes(2, "big"):
                    return True
        except OSError:  # timeout, or ICMP port unreachable surfaced as ECONNREFUSED
            return False
    return False


def encode_get(mid: int, token: bytes, path: str) -> bytes:
    """A CON GET for ``path`` (Uri-Path options only), packed by hand."""
    out = bytearray(struct.pack("!BBH", 0x40 | len(token), 0x01, mid))
    out += token
    prev = 0
    for seg in (s for s in path.strip("/").split("/") if s):
        b = seg.encode()
        delta, prev = 11 - prev, 11
        assert len(b) < 13 and delta < 13, "short segments only"
        out.append(delta << 4 | len(b))
        out += b
    return bytes(out)


def coap_get(port: int, path: str, host: str = HOST, timeout: float = 2.0) -> tuple[int, bytes]:
    """A raw CON GET; return ``(code, payload)`` of the piggybacked ACK (code like 0x45)."""
    mid = int.from_bytes(os.urandom(2), "big")
    token = os.urandom(2)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.connect((host, port))
        s.send(encode_get(mid, token, path))
        while True:
            data = s.recv(65536)
            if len(data) < 4 or data[2:4] != mid.to_bytes(2, "big"):
                continue
            tkl = data[0] & 0x0F
            payload = b""
            i = data.find(b"\xff", 4 + tkl)
            if i >= 0:
                payload = data[i + 1 :]
            return data[1], payload


def wait_ready(server: Pinned, port: int, timeout: float = 15.0) -> None:
    """Ping until the server answers; raise with its output if it died or stayed silent."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"{server.name} exited early:\n{server.output()}")
        if coap_ping(port):
            return
        time.sleep(0.1)
    raise RuntimeError(
        f"{server.name} did not answer a CoAP ping in {timeout} s:\n{server.output()}"
    )


def start_coapecho(port: int, body: int = 13, count: int = 1) -> Pinned:
    """coapecho on CPU 1 (no ``-t``: it runs until the ``with`` block stops it);
    ``count`` sockets on ports ``port``.. (one per simulated device)."""
    ensure_tools()
    cmd = [COAPECHO, "-a", HOST, "-p", str(port), "-b", str(body), "-n", str(count)]
    return Pinned(cmd, SERVER_CPU, name="coapecho")


# -- coapload ------------------------------------------------------------------
def parse_result(text: str) -> dict[str, Any]:
    """Parse coapload's last ``RESULT key=value ...`` line into a dict."""
    lines = [ln for ln in text.splitlines() if ln.startswith("RESULT ")]
    if not lines:
        raise ValueError(f"no RESULT line in coapload output:\n{text[-2000:]}")
    out: dict[str, Any] = {}
    for field in lines[-1].split()[1:]:
        key, _, value = field.partition("=")
        if key in RESULT_FIELDS_INT:
            out[key] = int(value)
        elif key in RESULT_FIELDS_FLOAT:
            out[key] = float(value)
        else:
            out[key] = value
    return out


def run_coapload(
    port: int,
    type_: str = "con",
    duration: float = 5.0,
    *,
    path: str = "hello",
    window: int = 64,
    sockets: int = 4,
    warmup: float = 1.0,
    port_count: int = 1,
) -> dict[str, Any]:
    """Run coapload on CPU 0 against 127.0.0.1:port (``port_count`` ports from
    it, round-robin); return the parsed RESULT."""
    ensure_tools()
    cmd = pinned(
        [
            COAPLOAD,
            "--host",
            HOST,
            "--port",
            port,
            "--path",
            path,
            "--type",
            type_,
            "--window",
            window,
            "--sockets",
            sockets,
            "--duration",
            duration,
            "--warmup",
            warmup,
            "--port-count",
            port_count,
        ],
        CLIENT_CPU,
    )
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + warmup + 30)
    result = parse_result(p.stdout)
    result["exit"] = p.returncode
    return result


run_coapbench = run_coapload  # the former name


def run_dtlsload(
    port: int,
    type_: str = "con",
    duration: float = 5.0,
    *,
    identity: str,
    key: str,
    path: str = "hello",
    window: int = 64,
    sessions: int = 4,
    warmup: float = 1.0,
) -> dict[str, Any]:
    """Run dtlsload (coapload over DTLS 1.2 PSK, one session per socket) on
    CPU 0 against 127.0.0.1:port; return the parsed RESULT."""
    ensure_tools()
    cmd = pinned(
        [
            DTLSLOAD,
            "--host",
            HOST,
            "--port",
            port,
            "--identity",
            identity,
            "--key",
            key,
            "--path",
            path,
            "--type",
            type_,
            "--window",
            window,
            "--sessions",
            sessions,
            "--duration",
            duration,
            "--warmup",
            warmup,
        ],
        CLIENT_CPU,
    )
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + warmup + 30)
    result = parse_result(p.stdout)
    result["exit"] = p.returncode
    return result


# -- child processes that answer in JSON ---------------------------------------
def run_json(
    cmd: Sequence[str], cpu: int, timeout: float, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run ``cmd`` pinned to ``cpu``; its last stdout line must be a JSON object."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    p = subprocess.Popen(
        pinned(cmd, cpu),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
        cwd=ROOT,
    )
    try:
        out, err, killed = communicate_or_kill(p, timeout)
        if killed:
            raise RuntimeError(f"timed out after {timeout} s: {' '.join(cmd)}\n{err[-2000:]}")
    finally:
        reap(p)
    lines = [ln for ln in out.splitlines() if ln.strip()]
    if p.returncode != 0 or not lines:
        raise RuntimeError(f"exit {p.returncode}: {' '.join(map(str, cmd))}\n{err[-3000:]}")
    return json.loads(lines[-1])


def child_print(obj: dict[str, Any]) -> None:
    """What a child calls to answer :func:`run_json`."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


# -- numbers and tables --------------------------------------------------------
def median_by(items: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """The item whose ``key`` is the median (the lower middle one for an even count)."""
    ranked = sorted(items, key=lambda d: d[key])
    return ranked[(len(ranked) - 1) // 2]


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median req/s, carrying every run's req/s as ``all_rps``."""
    best = median_by(runs, "rps")
    best["all_rps"] = [r["rps"] for r in runs]
    return best


def rps_range(run: dict[str, Any]) -> str | None:
    """``"lo–hi"`` req/s over a median run's runs; None for a single run."""
    rps = run["all_rps"]
    if len(rps) < 2:
        return None
    return f"{min(rps):,.0f}–{max(rps):,.0f}"


def heading(title: str) -> None:
    """Print a table's markdown heading and the machine line under it."""
    print(f"### {title}\n")
    print(machine_info() + "\n")


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def fmt_int(x: float | None) -> str:
    return "—" if x is None else f"{x:,.0f}"


def fmt_ratio(x: float | None, digits: int = 2) -> str:
    """``1.23×``; a small ratio keeps two significant digits (``0.012×``)."""
    if x is None:
        return "—"
    if 0 < x < 0.1:
        digits = max(digits, 3 if x >= 0.01 else 4)
    return f"{x:.{digits}f}×"


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or not b:
        return None
    return a / b


def md_table(
    headers: Sequence[str], rows: Iterable[Sequence[Any]], align: str | None = None
) -> str:
    """A markdown table; ``align`` is one char per column, ``l`` or ``r`` (default: l then r)."""
    rows = [[str(c) for c in r] for r in rows]
    align = align or "l" + "r" * (len(headers) - 1)
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return (
            "| "
            + " | ".join(
                c.ljust(w) if a == "l" else c.rjust(w)
                for c, w, a in zip(cells, widths, align, strict=True)
            )
            + " |"
        )

    sep = (
        "|"
        + "|".join(
            "-" * (w + 1) + ":" if a == "r" else ":" + "-" * (w + 1)
            for w, a in zip(widths, align, strict=True)
        )
        + "|"
    )
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


def machine_info() -> str:
    """Date, kernel release and CPU model, for the header of every report."""
    model = "unknown CPU"
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                model = ln.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return (
        f"{now} · Linux {platform.release()} · {model} · {os.cpu_count()} CPUs · "
        f"greencoap {code_version()}"
    )


def code_version() -> str:
    """The commit measured: short hash, plus "+dirty" when greencoap/ has uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "greencoap"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "(unknown commit)"
    return (head or "(unknown commit)") + ("+dirty" if dirty.strip() else "")


def udp_rcvbuf_errors() -> int:
    """The kernel's UDP ``RcvbufErrors`` counter (datagrams dropped on a full socket buffer)."""
    try:
        lines = [
            ln.split()
            for ln in Path("/proc/net/snmp").read_text().splitlines()
            if ln.startswith("Udp:")
        ]
        return int(lines[1][lines[0].index("RcvbufErrors")])
    except (OSError, ValueError, IndexError):
        return -1


def changed_note(before: str) -> str | None:
    """A warning when the greencoap code changed (or was uncommitted) while the benchmark ran."""
    now = code_version()
    if now != before:
        return (
            f"greencoap changed while this ran ({before} at the start, {now} at the end): "
            "rows may measure different code"
        )
    if now.endswith("+dirty"):
        return "greencoap/ had uncommitted changes: edits during the run would go unnoticed"
    return None


def footer(version: str, started: float, notes: Iterable[str] = ()) -> None:
    """The end of every benchmark's output: notes, a warning if the code
    changed during the run, and the time taken."""
    notes = list(notes)
    if notes:
        print("\n" + "\n".join(f"- {n}" for n in notes))
    changed = changed_note(version)
    if changed:
        print(f"\n- {changed}")
    print(f"\n(took {time.monotonic() - started:.0f} s)")
