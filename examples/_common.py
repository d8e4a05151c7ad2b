"""What the examples share: the base URI from the command line and one clear
line (and exit status 2) when no CoAP server answers there."""

from __future__ import annotations

import sys

import greencoap


def base_uri(default: str = "coap://127.0.0.1:5683") -> str:
    """The first command-line argument, or the demo server's usual address."""
    return sys.argv[1].rstrip("/") if len(sys.argv) > 1 else default


def require_server(base: str) -> None:
    """Exit with one line when nothing answers a CoAP ping at ``base``."""
    try:
        greencoap.ping(base, timeout=2)
    except greencoap.CoapError:
        print(
            f"no CoAP server answers at {base}; start one with: greencoap demo-server",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
