"""Content-Format names for the command line: ``application/json``,
``json``, ``text/plain;charset=utf-8``, ``text``, ``60`` ..."""

from __future__ import annotations

from ..options import ContentFormat, content_format_number


def parse_format(text: str) -> int:
    """A Content-Format number from a number, a media type or a short name
    (see :func:`~greencoap.options.content_format_number`)."""
    return content_format_number(text)


def format_name(number: int | None) -> str:
    """The media type of ``number`` (the number itself when unregistered)."""
    if number is None:
        return "-"
    try:
        return f"{ContentFormat(number)}"
    except ValueError:
        return str(number)
