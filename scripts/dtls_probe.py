#!/usr/bin/env python3
"""Interop probe for the sans-I/O DTLS engine (greencoap.protocol.dtls).

A tiny blocking UDP driver — plain ``socket`` and ``time``, no hub — to check
the engine against real peers (OpenSSL ``s_server``/``s_client``, libcoap's
``coap-server-openssl``/``coap-client-openssl``/``coap-client-gnutls``).

Client role: handshake, then (unless ``--handshake-only``) one CoAP GET; the
decrypted response is printed::

    python scripts/dtls_probe.py client 127.0.0.1 15684 --identity identity \\
        --key secret --path /.well-known/core

Server role: a :class:`DtlsServer` behind a UDP socket that answers every
decrypted CoAP CON request with a 2.05 ACK carrying "hi"; it exits after
``--requests`` requests or ``--seconds`` seconds::

    python scripts/dtls_probe.py server 127.0.0.1 15700 --key secret

Exit status 0 on success, 1 on failure.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from greencoap.codes import Code, Type  # noqa: E402
from greencoap.message import Message  # noqa: E402
from greencoap.protocol.dtls import (  # noqa: E402
    ESTABLISHED,
    HANDSHAKING,
    DtlsServer,
    DtlsSession,
)


def log(*args: object) -> None:
    print(*args, file=sys.stderr, flush=True)


def wait(sock: socket.socket, deadline: float | None, limit: float) -> bytes | None:
    """One datagram, or None when the engine deadline (or ``limit``) comes first."""
    now = time.monotonic()
    timeout = limit - now if deadline is None else min(deadline, limit) - now
    sock.settimeout(max(timeout, 0.001))
    try:
        data, _ = sock.recvfrom(65535)
        return data
    except TimeoutError:
        return None
    except ConnectionRefusedError:  # ICMP port unreachable: nobody there (yet)
        time.sleep(min(max(timeout, 0.0), 0.2))
        return None


def run_client(args: argparse.Namespace) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((args.host, args.port))
    session = DtlsSession(
        "client",
        psk=(args.identity.encode(), args.key.encode()),
        mtu=args.mtu,
        now=time.monotonic(),
        extended_master_secret=not args.no_ems,
    )
    limit = time.monotonic() + args.seconds

    def flush() -> None:
        for d in session.outbox:
            sock.send(d)
        session.outbox = []

    session.start(time.monotonic())
    flush()
    while session.state is HANDSHAKING and time.monotonic() < limit:
        data = wait(sock, session.next_deadline(), limit)
        if data is None:
            session.expire(time.monotonic())
        else:
            session.receive(data, time.monotonic())
        flush()
    if session.state is not ESTABLISHED:
        log("handshake failed:", session.error or "probe time limit", session.stats)
        return 1
    log(
        f"established: identity={session.identity!r} hint={session.peer_hint!r} "
        f"ems={session.uses_extended_master_secret}"
    )
    if args.handshake_only:
        session.close()
        flush()
        return 0
    request = Message(Type.CON, Code.GET, mid=int.from_bytes(os.urandom(2), "big"), token=b"pr")
    request.uri_path = [s for s in args.path.split("/") if s]
    sock.send(session.send(request.encode()))
    sent_at = time.monotonic()
    code = 1
    while time.monotonic() < limit:
        data = wait(sock, sent_at + 2, limit)
        if data is None:
            if time.monotonic() >= sent_at + 2:  # CoAP retransmission, roughly
                sock.send(session.send(request.encode()))
                sent_at = time.monotonic()
            continue
        for payload in session.receive(data, time.monotonic()):
            response = Message.decode(payload)
            if response.mtype == Type.ACK and not response.code:
                continue  # empty ACK: separate response follows
            print(f"{Code(response.code)} {response.payload.decode('utf-8', 'replace')}")
            code = 0
            break
        flush()
        if code == 0 or session.state is not ESTABLISHED:
            break
    session.close()
    flush()
    if code:
        log("no response:", session.error, session.stats)
    return code


def run_server(args: argparse.Namespace) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((args.host, args.port))
    key = args.key.encode()

    def lookup(identity: bytes) -> bytes | None:
        log(f"psk_lookup({identity!r})")
        return key if not args.identity or identity == args.identity.encode() else None

    server = DtlsServer(lookup, hint=args.hint.encode(), mtu=args.mtu)
    limit = time.monotonic() + args.seconds
    answered = 0
    log(f"listening on {args.host}:{args.port}")
    while time.monotonic() < limit and answered < args.requests:
        deadline = server.next_deadline()
        timeout = limit if deadline is None else min(deadline, limit)
        sock.settimeout(max(timeout - time.monotonic(), 0.001))
        try:
            data, peer = sock.recvfrom(65535)
        except TimeoutError:
            server.expire(time.monotonic())
        else:
            session, payloads = server.receive(data, peer, time.monotonic())
            for payload in payloads:
                try:
                    request = Message.decode(payload)
                except Exception as e:  # noqa: BLE001
                    log("undecodable CoAP:", e)
                    continue
                log(f"request from {peer}: {Code(request.code)} /{'/'.join(request.uri_path)}")
                if request.mtype == Type.CON and session is not None:
                    response = Message(
                        Type.ACK, Code.CONTENT, request.mid, request.token, payload=b"hi"
                    )
                    sock.sendto(session.send(response.encode()), peer)
                    answered += 1
        for d, p in server.outbox:
            sock.sendto(d, p)
        server.outbox = []
    for peer, session in server.sessions.items():
        log(f"session {peer}: {session.state.name} identity={session.identity!r}")
    stats = {k: v for k, v in server.stats.items() if v}
    log("stats:", stats)
    server.close()
    for d, p in server.outbox:
        sock.sendto(d, p)
    return 0 if answered else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("role", choices=("client", "server"))
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--identity", default="identity")
    p.add_argument("--key", default="secret")
    p.add_argument("--hint", default="", help="server: identity hint to send")
    p.add_argument("--path", default="/.well-known/core")
    p.add_argument("--mtu", type=int, default=1200)
    p.add_argument("--no-ems", action="store_true", help="client: do not offer RFC 7627")
    p.add_argument("--handshake-only", action="store_true")
    p.add_argument("--seconds", type=float, default=8.0, help="give up after this long")
    p.add_argument("--requests", type=int, default=1, help="server: exit after this many")
    args = p.parse_args()
    if args.role == "server" and args.identity == "identity" and "--identity" not in sys.argv:
        args.identity = ""  # server: any identity unless one is named
    return run_client(args) if args.role == "client" else run_server(args)


if __name__ == "__main__":
    sys.exit(main())
