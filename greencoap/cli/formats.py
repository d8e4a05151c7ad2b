"""Content-Format names for the command line: ``application/json``,
``json``, ``text/plain;charset=utf-8``, ``text``, ``60`` ..."""

from __future__ import annotations

from ..options import ContentFormat

#: short names people type, beside the registered media types
ALIASES = {
    "text": ContentFormat.TEXT_PLAIN,
    "text/plain": ContentFormat.TEXT_PLAIN,
    "link": ContentFormat.LINK_FORMAT,
    "link-format": ContentFormat.LINK_FORMAT,
    "xml": ContentFormat.XML,
    "octet": ContentFormat.OCTET_STREAM,
    "octet-stream": ContentFormat.OCTET_STREAM,
    "binary": ContentFormat.OCTET_STREAM,
    "exi": ContentFormat.EXI,
    "json": ContentFormat.JSON,
    "cbor": ContentFormat.CBOR,
    "senml+json": ContentFormat.SENML_JSON,
    "senml+cbor": ContentFormat.SENML_CBOR,
    "lwm2m+tlv": ContentFormat.LWM2M_TLV,
    "lwm2m+json": ContentFormat.LWM2M_JSON,
}


def parse_format(text: str) -> int:
    """A Content-Format number from a number, a media type or a short name;
    ValueError (with examples) otherwise."""
    t = text.strip()
    if t.isdigit():
        n = int(t)
        if n > 0xFFFF:
            raise ValueError(f"{text!r}: a Content-Format number is 0..65535")
        return n
    alias = ALIASES.get(t.lower())
    if alias is not None:
        return int(alias)
    try:
        return int(ContentFormat.from_media_type(t))
    except ValueError:
        raise ValueError(
            f"unknown content format {text!r}: give a number or a name such as "
            "application/json, text/plain;charset=utf-8, application/cbor, "
            "application/link-format (or json, text, cbor, link)"
        ) from None


def format_name(number: int | None) -> str:
    """The media type of ``number`` (the number itself when unregistered)."""
    if number is None:
        return "-"
    try:
        return f"{ContentFormat(number)}"
    except ValueError:
        return str(number)
