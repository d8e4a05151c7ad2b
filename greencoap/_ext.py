"""Which compiled speed-ups this process uses (shared by the layers that have one).

:func:`speedups` is ``greencoap._speedups`` (built at install time from
``greencoap/_speedups.c``), or None when it was not built or
``GREENCOAP_NO_EXTENSIONS=1`` asks for pure Python.  Each user keeps a pure
Python twin with the same behaviour.
"""

from __future__ import annotations

import os
from types import ModuleType


def speedups() -> ModuleType | None:
    """The C module, or None (absent, or turned off by GREENCOAP_NO_EXTENSIONS=1)."""
    if os.environ.get("GREENCOAP_NO_EXTENSIONS", "") not in ("", "0"):
        return None
    try:
        from . import _speedups  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _speedups


def ccm() -> ModuleType | None:
    """``greencoap._ccm`` (AES-128-CCM-8 on reused OpenSSL contexts, for the
    DTLS record layer), or None (not built, or GREENCOAP_NO_EXTENSIONS=1):
    then cryptography's AESCCM does the same."""
    if os.environ.get("GREENCOAP_NO_EXTENSIONS", "") not in ("", "0"):
        return None
    try:
        from . import _ccm  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _ccm
