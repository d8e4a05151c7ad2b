"""Build hook: compile the optional io_uring core (``greencoap._uring``).

When liburing or a C compiler is missing, the install still succeeds and
greencoap runs on its epoll backend (with one warning at run time);
``GREENCOAP_REQUIRE_URING=1`` makes a failed build an error instead.
"""

import os
import sys
import warnings

from setuptools import setup
from setuptools.command.build_ext import build_ext

REQUIRE = os.environ.get("GREENCOAP_REQUIRE_URING", "") not in ("", "0")


def _fail(msg):
    if REQUIRE:
        raise SystemExit(f"greencoap: {msg} (GREENCOAP_REQUIRE_URING=1)")
    warnings.warn(f"greencoap: {msg}; the io_uring backend is disabled, epoll will be used",
                  stacklevel=1)


class OptionalBuildExt(build_ext):
    """build_ext that leaves the io_uring extension out instead of failing."""

    def run(self):
        try:
            super().run()
        except Exception as e:  # noqa: BLE001
            _fail(f"building the io_uring core failed: {e}")

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as e:  # noqa: BLE001
            _fail(f"building {ext.name} failed: {e}")


def extensions():
    if not os.path.exists("/usr/include/liburing.h"):
        _fail("liburing-dev is not installed (apt-get install liburing-dev)")
        return []
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "greencoap"))
    try:
        from _uring_build import ffibuilder
    finally:
        sys.path.pop(0)
    return [ffibuilder.distutils_extension()]


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
