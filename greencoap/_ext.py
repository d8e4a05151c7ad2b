"""Which compiled speed-ups this process uses (shared by the layers that have one).

:func:`speedups` is ``greencoap._speedups`` (built at install time from
``greencoap/_speedups.c``) and :func:`ccm` is ``greencoap._ccm`` (AES-128-CCM-8
on reused OpenSSL contexts, for the DTLS record layer; built when OpenSSL's
headers are there), or None when not built or ``GREENCOAP_NO_EXTENSIONS=1``
asks for pure Python.  Each user keeps a pure Python twin (for ``_ccm``:
cryptography's AESCCM) with the same behaviour.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType


def _optional(name: str) -> ModuleType | None:
    """The C module ``greencoap.<name>``, or None (absent, or turned off by
    GREENCOAP_NO_EXTENSIONS=1)."""
    if os.environ.get("GREENCOAP_NO_EXTENSIONS", "") not in ("", "0"):
        return None
    try:
        return importlib.import_module(f"{__package__}.{name}")
    except ImportError:
        return None


def speedups() -> ModuleType | None:
    """``greencoap._speedups``, or None (see the module docstring)."""
    return _optional("_speedups")


def ccm() -> ModuleType | None:
    """``greencoap._ccm``, or None (see the module docstring)."""
    return _optional("_ccm")
