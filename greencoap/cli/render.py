"""How the command line shows things: payloads for a person (pretty JSON and
CBOR, link-format as a table) and messages as ``-v`` prints them."""

from __future__ import annotations

import json
from typing import Any

from ..codes import CODES, TYPES
from ..endpoint import display_peer
from ..linkformat import LinkFormatError, parse_link_format
from ..message import Message
from ..options import OPTION_SPECS, Block, OptionFormat, OptionNumber, decode_uint
from .formats import format_name

__all__ = ["describe", "link_table", "pretty", "size_text"]


def pretty(payload: bytes, content_format: int | None) -> bytes | None:
    """``payload`` made readable for a terminal, or None to show it as it is."""
    try:
        if content_format in (50, 51, 52, 110, 111, 11543):
            return (json.dumps(json.loads(payload), indent=2, ensure_ascii=False) + "\n").encode()
        if content_format in (60, 112, 113):
            import cbor2

            value = cbor2.loads(payload)
            return (json.dumps(value, indent=2, ensure_ascii=False, default=repr) + "\n").encode()
        if content_format == 40:
            return link_table(payload).encode()
    except (ValueError, ImportError, LinkFormatError, UnicodeDecodeError, Exception):  # noqa: BLE001
        return None  # not what it says it is: the bytes as they came
    return None


def link_table(payload: bytes | str) -> str:
    """A link-format document as a table: target, then each attribute."""
    links = parse_link_format(payload)
    if not links:
        return "(no links)\n"
    names: list[str] = []
    for link in links:
        for name, _ in link.params:
            if name not in names:
                names.append(name)
    rows = [["target", *names]]
    for link in links:
        values = {}
        for name, value in link.params:
            shown = "✓" if value is None else value
            values[name] = f"{values[name]} {shown}" if name in values else shown
        rows.append([link.target, *(values.get(n, "") for n in names)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n"


def peer_text(peer: Any) -> str:
    """``host:port`` (``[v6]:port``) of a peer address, IPv4-mapped ones unmapped."""
    if isinstance(peer, tuple) and len(peer) >= 2 and isinstance(peer[0], str):
        host, port = display_peer(peer)
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(peer)


def size_text(n: int) -> str:
    return f"{n} byte" if n == 1 else f"{n} bytes"


_NAMES = {"Etag": "ETag", "Oscore": "OSCORE", "Edhoc": "EDHOC", "Q-Block1": "Q-Block1"}


def _option_name(number: int) -> str:
    try:
        name = OptionNumber(number).name.replace("_", "-").title()
    except ValueError:
        return f"Option {number}"
    return _NAMES.get(name, name)


def _option_value(number: int, value: bytes) -> str:
    if number in (OptionNumber.BLOCK1, OptionNumber.BLOCK2):
        b = Block.decode(decode_uint(value))
        return f"{b.num}/{int(b.more)}/{b.size}"
    if number in (OptionNumber.CONTENT_FORMAT, OptionNumber.ACCEPT):
        return format_name(decode_uint(value))
    spec = OPTION_SPECS.get(number)
    fmt = spec[0] if spec else OptionFormat.OPAQUE
    if fmt is OptionFormat.UINT and len(value) <= 8:
        return str(decode_uint(value))
    if fmt is OptionFormat.STRING:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            pass
    if fmt is OptionFormat.EMPTY:
        return "(set)"
    return "0x" + value.hex() if value else "(empty)"


def describe(direction: str, data: bytes, peer: Any, hexdump: bool = False) -> str:
    """One message as ``-v`` shows it: direction, type, code, MID, token, its
    options by name with decoded values, the payload's size (``hexdump``: the
    datagram's bytes too)."""
    arrow = "→" if direction == "out" else "←"
    who = peer_text(peer)
    try:
        msg = Message.decode(data)
    except Exception as e:  # noqa: BLE001 - show what came, whatever it is
        head = f"{arrow} {who} undecodable datagram ({size_text(len(data))}): {e}"
        return head + ("\n    " + data.hex(" ") if hexdump else "")
    try:
        mtype = TYPES[msg.mtype].name
    except (IndexError, TypeError):
        mtype = str(msg.mtype)
    code = "empty" if msg.code == 0 else str(CODES[msg.code])
    token = msg.token.hex() if msg.token else "-"
    lines = [f"{arrow} {who} {mtype} {code} MID 0x{msg.mid:04x} token {token}"]
    for number, value in msg.options:
        lines.append(f"    {_option_name(number)}: {_option_value(number, value)}")
    if msg.payload:
        lines.append(f"    payload: {size_text(len(msg.payload))}")
    if hexdump:
        lines.append("    " + data.hex(" "))
    return "\n".join(lines)
