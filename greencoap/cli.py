"""The ``greencoap`` command line (layer 4).

    greencoap get coap://127.0.0.1/hello
    greencoap get coaps://127.0.0.1/hello --psk-identity me --psk-key secret
    greencoap post coap://127.0.0.1/echo --payload hi
    greencoap demo-server --host 127.0.0.1 --port 5683
    greencoap fleet --devices 1000 --register coap://127.0.0.1/rd
    greencoap rd --host 127.0.0.1 --port 5683

Exit status: 0 for a 2.xx response, 1 for 4.xx/5.xx, 2 for usage errors,
3 for timeouts/resets/other failures.
"""

from __future__ import annotations

import argparse
import sys

from .client import Client
from .errors import CoapError


def _request(args: argparse.Namespace) -> int:
    payload = args.payload.encode() if args.payload is not None else None
    if args.payload_file:
        with open(args.payload_file, "rb") as f:
            payload = f.read()
    psk = None
    if args.psk_identity is not None or args.psk_key is not None:
        if args.psk_identity is None or args.psk_key is None:
            print("error: --psk-identity and --psk-key go together", file=sys.stderr)
            return 2
        psk = (args.psk_identity, args.psk_key.encode())
    with Client(timeout=args.timeout, psk=psk) as client:
        try:
            r = client.request(
                args.method.upper(),
                args.uri,
                payload,
                content_format=args.content_format,
                accept=args.accept,
                confirmable=not args.non,
            )
        except CoapError as e:
            print(f"error: {e}", file=sys.stderr)
            return 3
    if args.verbose:
        print(f"{r.code} from {r.peer[0]}:{r.peer[1]}")
        for number, value in r.options:
            print(f"  option {number}: {value.hex() or '(empty)'}")
    else:
        print(r.code)
    if r.payload:
        sys.stdout.write(r.text)
        if not r.text.endswith("\n"):
            sys.stdout.write("\n")
    return 0 if r.ok else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``greencoap`` console script."""
    ap = argparse.ArgumentParser(prog="greencoap", description="CoAP client and demo server")
    sub = ap.add_subparsers(dest="command", required=True)
    for method in ("get", "post", "put", "delete", "fetch"):
        p = sub.add_parser(method, help=f"send a {method.upper()} request")
        p.add_argument("uri", help="coap://host[:port]/path?query (or coaps://)")
        p.add_argument("--payload", "-p", help="request payload (text)")
        p.add_argument("--payload-file", help="read the payload from a file")
        p.add_argument("--content-format", "-t", type=int, help="Content-Format number")
        p.add_argument("--accept", "-A", type=int, help="Accept option number")
        p.add_argument("--non", action="store_true", help="send as NON (no retransmission)")
        p.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
        p.add_argument("--psk-identity", help="PSK identity for coaps:// (DTLS)")
        p.add_argument("--psk-key", help="pre-shared key for coaps:// (text, as libcoap's -k)")
        p.add_argument("-v", "--verbose", action="store_true", help="show options and peer")
        p.set_defaults(method=method)
    sub.add_parser("demo-server", help="run the demo server", add_help=False)
    sub.add_parser("fleet", help="run a fleet of simulated devices", add_help=False)
    sub.add_parser("rd", help="run a small test Resource Directory", add_help=False)
    args, rest = ap.parse_known_args(argv)
    if args.command == "demo-server":
        from .demo import main as demo_main

        return demo_main(rest)
    if args.command == "fleet":
        from .fleet.cli import main as fleet_main

        return fleet_main(rest)
    if args.command == "rd":
        from .fleet.rd import main as rd_main

        return rd_main(rest)
    if rest:
        ap.error(f"unrecognized arguments: {' '.join(rest)}")
    return _request(args)


if __name__ == "__main__":
    sys.exit(main())
