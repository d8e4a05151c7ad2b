"""The subcommands of ``greencoap`` and their shared options (see the
package docstring for the exit statuses)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from ..client import Client
from ..errors import CoapError, HandshakeError, RequestTimeoutError, ResetError, UriError
from ..options import OptionNumber, content_format_number
from ..uri import parse_uri
from . import render
from .formats import format_name

OK, RESPONSE_ERROR, USAGE, NO_ANSWER, LOCAL_IO = 0, 1, 2, 3, 4
METHODS = ("get", "post", "put", "delete", "fetch", "patch", "ipatch")


class Usage(Exception):
    """A mistake on the command line: message to stderr, exit status 2."""


class LocalIO(Exception):
    """A local file could not be read or written: exit status 4."""


# -- options ---------------------------------------------------------------------
def _format(text: str) -> int:
    try:
        return content_format_number(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: it must be more than 0")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: at least 1")
    return value


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("uri", help="coap://host[:port]/path?query, coaps://..., [v6 address]")
    p.add_argument("--timeout", type=_positive, default=10.0, help="seconds (default 10)")
    p.add_argument("--non", action="store_true", help="send as NON (no retransmission)")
    p.add_argument("--psk-identity", help="PSK identity for coaps:// (DTLS 1.2)")
    p.add_argument("--psk-key", help="pre-shared key for coaps:// (text, as libcoap's -k)")
    p.add_argument("--uri-host", help="send this Uri-Host (a virtual host on the server)")
    p.add_argument("--proxy", metavar="URI", help="send through this forward proxy (Proxy-Uri)")
    p.add_argument("--accept", "-A", type=_format, help="Accept: a name or a number")
    p.add_argument("--block-size", type=int, help="Block1/Block2 size: 16..1024")
    p.add_argument("-v", "--verbose", action="count", default=0, help="-v messages, -vv bytes")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    ap = argparse.ArgumentParser(
        prog="greencoap",
        description="CoAP client, demo server, device fleets",
        epilog="exit status: 0 success, 1 4.xx/5.xx, 2 usage, 3 no answer/RST/handshake, "
        "4 local file",
    )
    ap.add_argument("--version", action="version", version=f"greencoap {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for method in METHODS:
        p = sub.add_parser(method, help=f"send a {method.upper()} request")
        _common(p)
        p.add_argument("--payload", "-p", help="TEXT, @FILE or @- (standard input)")
        p.add_argument("--payload-file", help=argparse.SUPPRESS)  # the older spelling of @FILE
        p.add_argument("--content-format", "-t", type=_format, help="a name or a number")
        p.add_argument("-o", "--output", metavar="FILE", help="write the payload to FILE")
        p.add_argument("--raw", action="store_true", help="never pretty-print the payload")
        p.set_defaults(run=run_request, method=method)
    p = sub.add_parser("observe", help="observe a resource, a line per notification")
    _common(p)
    p.add_argument("--count", type=_count, help="stop after N notifications (the first too)")
    p.add_argument("--duration", type=_positive, help="stop after S seconds")
    p.add_argument("--json", action="store_true", help="one JSON object per notification")
    p.set_defaults(run=run_observe, method="get")
    p = sub.add_parser("discover", help="list a server's resources (/.well-known/core)")
    _common(p)
    p.add_argument("--rt", help="only links with this resource type (a trailing * matches)")
    p.add_argument("--if", dest="if_", help="only links with this interface")
    p.add_argument("--json", action="store_true", help="the links as JSON")
    p.set_defaults(run=run_discover, method="get")
    p = sub.add_parser("ping", help="CoAP ping (empty CON, RST back): the round-trip time")
    _common(p)
    p.add_argument("--count", type=_count, default=1, help="pings (default 1)")
    p.add_argument("--interval", type=_positive, default=1.0, help="seconds between them")
    p.set_defaults(run=run_ping, method="get")
    sub.add_parser("demo-server", help="run the demo server", add_help=False)
    sub.add_parser("fleet", help="run a fleet of simulated devices", add_help=False)
    sub.add_parser("rd", help="run a small test Resource Directory", add_help=False)
    return ap


# -- shared work -------------------------------------------------------------------
def _client(args: argparse.Namespace) -> Client:
    psk = None
    if args.psk_identity is not None or args.psk_key is not None:
        if args.psk_identity is None or args.psk_key is None:
            raise Usage("--psk-identity and --psk-key go together")
        psk = (args.psk_identity, args.psk_key.encode())
    target = args.proxy or args.uri
    try:
        scheme = parse_uri(target).scheme
    except UriError as e:
        raise Usage(f"{target!r}: {e}") from None
    if scheme == "coaps" and psk is None:
        raise Usage("coaps:// needs --psk-identity and --psk-key")
    if args.block_size is not None and args.block_size not in (16, 32, 64, 128, 256, 512, 1024):
        raise Usage("--block-size is a power of two from 16 to 1024")
    trace = None
    if args.verbose:
        hexdump = args.verbose >= 2

        def trace(direction: str, data: bytes, peer: Any) -> None:
            _err(render.describe(direction, bytes(data), peer, hexdump))

    return Client(timeout=args.timeout, psk=psk, block_size=args.block_size, trace=trace)


def _options(args: argparse.Namespace) -> tuple[str, list]:
    """The URI to send to and the extra options (Uri-Host, Proxy-Uri)."""
    options: list = []
    if args.uri_host:
        options.append((OptionNumber.URI_HOST, args.uri_host))
    if args.proxy:
        options.append((OptionNumber.PROXY_URI, args.uri))
        return args.proxy, options
    return args.uri, options


def _payload(args: argparse.Namespace) -> bytes | None:
    given = [x for x in (args.payload, args.payload_file) if x is not None]
    if len(given) > 1:
        raise Usage("give the payload once: --payload TEXT, --payload @FILE or --payload @-")
    if not given:
        return None
    if args.payload_file is not None:
        return _read(args.payload_file)
    text = args.payload
    if text == "@-":
        return sys.stdin.buffer.read()
    if text.startswith("@@"):
        return text[1:].encode()  # a literal payload that starts with @
    if text.startswith("@"):
        return _read(text[1:])
    return text.encode()


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise LocalIO(f"cannot read {path}: {e.strerror}") from None


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _status(r: Any) -> str:
    line = str(r.code)
    cf = r.content_format
    if r.payload:
        line += f" ({render.size_text(len(r.payload))}, {format_name(cf)})"
    return line


def _show_payload(r: Any, args: argparse.Namespace) -> None:
    payload = r.payload
    if getattr(args, "output", None):
        try:
            with open(args.output, "wb") as f:
                f.write(payload)
        except OSError as e:
            raise LocalIO(f"cannot write {args.output}: {e.strerror}") from None
        return
    if not payload:
        return
    out = sys.stdout.buffer
    if sys.stdout.isatty():
        shown = None if args.raw else render.pretty(payload, r.content_format)
        data = shown if shown is not None else payload
        out.write(data if data.endswith(b"\n") else data + b"\n")
    else:
        out.write(payload)  # byte for byte: ``> file`` and pipes get what came
    out.flush()


# -- the subcommands ------------------------------------------------------------------
def run_request(args: argparse.Namespace) -> int:
    payload = _payload(args)
    uri, options = _options(args)
    with _client(args) as client:
        r = client.request(
            args.method.upper(),
            uri,
            payload,
            content_format=args.content_format,
            accept=args.accept,
            confirmable=not args.non,
            options=options or None,
        )
    _err(_status(r))
    _show_payload(r, args)
    return OK if r.ok else RESPONSE_ERROR


def run_observe(args: argparse.Namespace) -> int:
    uri, options = _options(args)
    deadline = None if args.duration is None else time.monotonic() + args.duration
    seen = 0
    status = OK
    with _client(args) as client:
        with client.observe(
            uri, timeout=args.timeout, confirmable=not args.non, options=options or None
        ) as obs:
            while args.count is None or seen < args.count:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                try:
                    r = next(obs.iter(timeout=left), None)
                except RequestTimeoutError:
                    if deadline is not None and time.monotonic() >= deadline:
                        break
                    raise
                if r is None:
                    break
                seen += 1
                _notification(r, args)
                if not r.ok:
                    status = RESPONSE_ERROR
                    break
    return status


def _notification(r: Any, args: argparse.Namespace) -> None:
    if args.json:
        try:
            text: Any = r.payload.decode("utf-8")
            key = "payload"
        except UnicodeDecodeError:
            text, key = r.payload.hex(), "payload_hex"
        obj = {
            "code": str(r.code).split()[0],
            "observe": r.observe,
            "content_format": r.content_format,
            key: text,
        }
        line = json.dumps(obj)
    else:
        line = r.payload.decode("utf-8", "replace")
        if not r.ok:
            line = f"{r.code} {line}".rstrip()
    sys.stdout.write(line.rstrip("\n") + "\n")
    sys.stdout.flush()


def run_discover(args: argparse.Namespace) -> int:
    filters = {}
    if args.rt:
        filters["rt"] = args.rt
    if args.if_:
        filters["if_"] = args.if_
    with _client(args) as client:
        links = client.discover(args.uri, timeout=args.timeout, **filters)
    if args.json:
        rows = [{"target": link.target, **dict(link.params)} for link in links]
        sys.stdout.write(json.dumps(rows, indent=2 if sys.stdout.isatty() else None) + "\n")
    else:
        from ..linkformat import format_link_format

        sys.stdout.write(render.link_table(format_link_format(links)))
    sys.stdout.flush()
    return OK


def run_ping(args: argparse.Namespace) -> int:
    answered = 0
    with _client(args) as client:
        for k in range(args.count):
            if k:
                _sleep(args.interval)
            try:
                rtt = client.ping(args.uri, timeout=args.timeout)
            except RequestTimeoutError:
                _err(f"no answer from {args.uri} within {args.timeout:g} s")
                continue
            answered += 1
            sys.stdout.write(f"pong from {args.uri}: {rtt * 1000:.2f} ms\n")
            sys.stdout.flush()
    return OK if answered == args.count else NO_ANSWER


def _sleep(seconds: float) -> None:
    from ..hub import sleep

    sleep(seconds)


# -- entry point ------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``greencoap`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = build_parser()
    passthrough = {"demo-server": "demo", "fleet": "fleet.cli", "rd": "fleet.rd"}
    if argv and argv[0] in passthrough:
        import importlib

        module = importlib.import_module(f"greencoap.{passthrough[argv[0]]}")
        return module.main(argv[1:])
    args = ap.parse_args(argv)
    try:
        return args.run(args)
    except Usage as e:
        _err(f"greencoap {args.command}: {e}")
        return USAGE
    except LocalIO as e:
        _err(f"greencoap {args.command}: {e}")
        return LOCAL_IO
    except UriError as e:
        _err(f"greencoap {args.command}: {e}")
        return USAGE
    except (RequestTimeoutError, ResetError, HandshakeError) as e:
        _err(f"greencoap {args.command}: {e}")
        return NO_ANSWER
    except CoapError as e:
        _err(f"greencoap {args.command}: {e}")
        return NO_ANSWER
    except KeyboardInterrupt:
        return OK if args.command == "observe" else 130
    except BrokenPipeError:
        # the reader went away (``| head -1``): it had what it wanted
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - no flush error at exit
        except OSError:
            pass
        return OK
