"""Content-Format names as the command line shows them (parsing them is
:func:`greencoap.options.content_format_number`)."""

from __future__ import annotations

from ..options import ContentFormat


def format_name(number: int | None) -> str:
    """The media type of ``number`` (the number itself when unregistered)."""
    if number is None:
        return "-"
    try:
        return f"{ContentFormat(number)}"
    except ValueError:
        return str(number)
