"""A small network of its own for the multicast tests.

    unshare --net python tests/helpers/mcast_lab.py        (as root)

In the network namespace ``unshare`` made: a bridge ``br0`` (192.0.2.1/24,
2001:db8::1/64), and three greencoap servers and one libcoap server, each
in a namespace of its own (``unshare --net`` again) joined to the bridge by
a veth pair, with addresses from the documentation ranges (192.0.2.11-14,
2001:db8::11-14).  Then it asks the groups with greencoap's client, its
command line and libcoap's client, and prints one JSON object with what it
saw.  Every process it starts it stops by its PID; the namespaces go with
them.  ``serve N`` is the server side (run by the lab itself).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

HERE = os.path.abspath(__file__)
NODES = 3  # greencoap servers; one libcoap server besides
LEISURE = 0.3


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=20)


def serve(index: int) -> None:
    """A greencoap server in its own namespace, once the lab has wired it."""
    print("up", flush=True)
    sys.stdin.readline()  # "go": eth0 is there, addressed and up
    import greencoap
    from greencoap import Router, Server

    router = Router()
    router.add("GET", "/hello", lambda request: f"node-{index}", rt="greeting")
    if index == 1:
        router.add("GET", "/only-on-1", lambda request: "here")
    server = Server(
        router,
        host="::",
        port=5683,
        multicast=True,
        multicast_interface="eth0",
        multicast_leisure=LEISURE,
    ).start()
    print("ready", flush=True)
    stop = []
    import threading

    threading.Thread(target=lambda: (sys.stdin.readline(), stop.append(1)), daemon=True).start()
    while not stop:
        greencoap.sleep(0.1)
    print(json.dumps(server.stats), flush=True)
    server.stop()


def wire(pid: int, index: int) -> None:
    """A veth pair from the bridge into namespace ``pid``, named eth0 there."""
    sh("ip", "link", "add", f"v{index}", "type", "veth", "peer", "name", f"e{index}")
    sh("ip", "link", "set", f"e{index}", "netns", str(pid))
    sh("ip", "link", "set", f"v{index}", "master", "br0")
    sh("ip", "link", "set", f"v{index}", "up")
    ns = ("nsenter", "-t", str(pid), "-n")
    sh(*ns, "ip", "link", "set", "lo", "up")
    sh(*ns, "ip", "link", "set", f"e{index}", "name", "eth0")
    sh(*ns, "ip", "addr", "add", f"192.0.2.{10 + index}/24", "dev", "eth0")
    sh(*ns, "ip", "-6", "addr", "add", f"2001:db8::{10 + index}/64", "dev", "eth0", "nodad")
    sh(*ns, "ip", "link", "set", "eth0", "up")
    sh(*ns, "ip", "route", "add", "224.0.0.0/4", "dev", "eth0")


def lab() -> dict:
    sh("ip", "link", "set", "lo", "up")
    sh("ip", "link", "add", "br0", "type", "bridge")
    sh("ip", "addr", "add", "192.0.2.1/24", "dev", "br0")
    sh("ip", "-6", "addr", "add", "2001:db8::1/64", "dev", "br0", "nodad")
    sh("ip", "link", "set", "br0", "up")
    sh("ip", "route", "add", "224.0.0.0/4", "dev", "br0")
    procs: list[subprocess.Popen] = []
    out: dict = {}
    try:
        for i in range(1, NODES + 1):
            p = subprocess.Popen(
                ["unshare", "--net", sys.executable, HERE, "serve", str(i)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            procs.append(p)
            assert p.stdout.readline().strip() == "up"
            wire(p.pid, i)
            p.stdin.write("go\n")
            p.stdin.flush()
            assert p.stdout.readline().strip() == "ready"
        lib = subprocess.Popen(
            [
                "unshare",
                "--net",
                "sh",
                "-c",
                "echo up; read go; exec coap-server-notls -A :: -p 5683 -g 224.0.1.187 -G eth0",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        procs.append(lib)
        assert lib.stdout.readline().strip() == "up"
        wire(lib.pid, NODES + 1)
        lib.stdin.write("go\n")
        lib.stdin.flush()
        time.sleep(0.5)  # libcoap binds and joins
        out.update(ask())
    finally:
        for p in procs[:NODES]:
            try:
                p.stdin.write("stop\n")
                p.stdin.flush()
                last = p.stdout.readline()
                out.setdefault("server_stats", []).append(json.loads(last) if last else None)
            except (OSError, ValueError):
                pass
        for p in procs:
            if p.poll() is None:
                p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    return out


def ask() -> dict:
    import greencoap

    out: dict = {}
    t0 = time.monotonic()
    with greencoap.Client(timeout=5) as c:
        answers = [
            (r.peer[0], r.text, time.monotonic() - t0, str(r.mtype))
            for r in c.multicast("GET", "coap://224.0.1.187/hello", timeout=1.5)
        ]
        out["v4_hello"] = answers
        out["v6_hello"] = [
            (r.peer[0], r.text)
            for r in c.multicast("GET", "coap://[ff02::fd%br0]/hello", timeout=1.5)
        ]
        out["only_on_1"] = [
            (r.peer[0], r.text)
            for r in c.multicast("GET", "coap://224.0.1.187/only-on-1", timeout=1.5)
        ]
        out["nowhere"] = [
            r.peer[0] for r in c.multicast("GET", "coap://224.0.1.187/nowhere", timeout=1.5)
        ]
        # libcoap waits out a leisure of up to 5 s (RFC 7252 §8.2's default)
        links = c.discover("coap://224.0.1.187", timeout=6)
        out["discovered"] = sorted({link.target for link in links})
    cli = subprocess.run(
        [sys.executable, "-m", "greencoap", "discover", "coap://224.0.1.187", "--timeout", "6"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    out["cli"] = {"rc": cli.returncode, "stdout": cli.stdout, "stderr": cli.stderr}
    example = os.path.join(os.path.dirname(HERE), "..", "..", "examples", "multicast.py")
    ex = subprocess.run(
        [sys.executable, example, "coap://224.0.1.187", "1.5"],  # libcoap may be later
        capture_output=True,
        text=True,
        timeout=30,
    )
    out["example"] = {"rc": ex.returncode, "stdout": ex.stdout, "stderr": ex.stderr}
    nobody = subprocess.run(
        [sys.executable, example, "coap://224.0.1.99", "0.5"],  # a group no one joined
        capture_output=True,
        text=True,
        timeout=30,
    )
    out["example_nobody"] = {"rc": nobody.returncode, "stderr": nobody.stderr}
    libc = subprocess.run(
        ["coap-client-notls", "-N", "-m", "get", "-B", "2", "coap://224.0.1.187/hello"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    out["libcoap_client"] = {"rc": libc.returncode, "stdout": libc.stdout}
    return out


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    else:
        print(json.dumps(lab()))
