"""CoAPthon3's public API on greencoap: change ``coapthon`` to
``greencoap.compat.coapthon`` in the imports, or call :func:`install` once
and leave the legacy code untouched.

The module tree mirrors CoAPthon3 1.0.2's public modules:
``defines``, ``utils``, ``serializer``, ``messages.{message,request,response,option}``,
``client.helperclient`` (:class:`HelperClient`), ``server.coap``
(:class:`CoAP`) and ``resources.resource`` (:class:`Resource`).  What differs
on purpose (RFC conformance, no thread per request, DTLS) is in
``docs/coapthon.md``.
"""

from __future__ import annotations

import importlib
import sys

#: the CoAPthon3 modules this package provides, by their legacy names
MODULES = (
    "defines",
    "utils",
    "serializer",
    "messages",
    "messages.message",
    "messages.option",
    "messages.request",
    "messages.response",
    "client",
    "client.helperclient",
    "server",
    "server.coap",
    "resources",
    "resources.resource",
)


def install() -> None:
    """Make ``import coapthon...`` load these modules (for code that cannot
    be edited).  Idempotent; a real ``coapthon`` already imported is
    replaced in ``sys.modules``."""
    sys.modules["coapthon"] = sys.modules[__name__]
    for name in MODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        sys.modules[f"coapthon.{name}"] = module


__all__ = ["MODULES", "install"]
