"""Built-in device behaviours and the default device template.

A *template* is a function ``template(index, name) -> Router`` or
``-> (Router, state)``: called once per device (and again when a device
reboots), it returns the device's routes and whatever state they keep, so
every device has values of its own.  A state may carry a ``telemetry`` list
of :class:`Telemetry`: the fleet pushes a notification to a telemetry
path's observers whenever its value changes (checked every ``interval``
seconds), so a gateway observing thousands of resources gets real
notifications.

:func:`sensor` is the default template: a telemetry sensor, a writable
actuator, a firmware image to download (Block2) and a firmware upload
target (Block1), and a device description.
"""

from __future__ import annotations

import hashlib
import json
import math
import zlib
from time import monotonic
from typing import Any

from ..codes import Code
from ..response import Request, Response
from ..router import Router

__all__ = ["DeviceState", "Telemetry", "firmware_image", "sensor"]

#: size of the default template's firmware image (served block-wise)
FIRMWARE_SIZE = 64 * 1024


class Telemetry:
    """A reading whose value follows a per-device schedule: a sine of
    ``period`` seconds around ``base`` (± ``amplitude``), with a phase drawn
    from the device index, rounded to ``digits``; ``interval`` is how often
    the fleet looks whether it changed (and notifies observers if so)."""

    __slots__ = (
        "path",
        "unit",
        "base",
        "amplitude",
        "period",
        "phase",
        "digits",
        "interval",
        "epoch",
        "last",
        "due",
    )

    def __init__(
        self,
        path: str,
        *,
        index: int = 0,
        unit: str = "",
        base: float = 20.0,
        amplitude: float = 5.0,
        period: float = 600.0,
        digits: int = 1,
        interval: float = 5.0,
        epoch: float | None = None,
    ) -> None:
        if interval <= 0 or period <= 0:
            raise ValueError("a telemetry interval and period must be positive")
        self.path = path
        self.unit = unit
        self.base = base
        self.amplitude = amplitude
        self.period = period
        self.phase = (zlib.crc32(f"{path}#{index}".encode()) % 3600) / 3600 * 2 * math.pi
        self.digits = digits
        self.interval = interval
        self.epoch = monotonic() if epoch is None else epoch
        self.last: float | None = None  # the value last served or notified
        self.due = 0.0  # when the fleet looks next

    def value(self, now: float | None = None) -> float:
        """The reading at ``now`` (monotonic seconds)."""
        t = (monotonic() if now is None else now) - self.epoch
        v = self.base + self.amplitude * math.sin(2 * math.pi * t / self.period + self.phase)
        return round(v, self.digits)

    def changed(self, now: float) -> bool:
        """True when the value moved since it was last served (the fleet asks)."""
        return self.value(now) != self.last

    def render(self) -> Response:
        """The current value as text/plain (remembered as served)."""
        v = self.last = self.value()
        return Response(Code.CONTENT, f"{v:.{self.digits}f}".encode(), content_format=0)


def firmware_image(name: str, size: int = FIRMWARE_SIZE, version: str = "1.0.0") -> bytes:
    """A device's firmware image: ``size`` bytes that depend on its name and
    version (so a download can be checked), made when asked, never stored."""
    seed = hashlib.sha256(f"{name}/{version}".encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


class DeviceState:
    """What the default template keeps per device."""

    def __init__(self, index: int, name: str, firmware_size: int = FIRMWARE_SIZE) -> None:
        self.index = index
        self.name = name
        self.booted = monotonic()
        self.led = "off"
        self.firmware_version = "1.0.0"
        self.firmware_size = firmware_size
        self.uploaded: dict[str, Any] | None = None  # the last firmware upload
        self.telemetry = [
            Telemetry(
                "/sensors/temp", index=index, unit="Cel", base=21.0, amplitude=5.0, period=120.0
            ),
            Telemetry(
                "/sensors/humidity",
                index=index,
                unit="%RH",
                base=45.0,
                amplitude=10.0,
                digits=0,
                period=900.0,
            ),
        ]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "index": self.index,
            "uptime": round(monotonic() - self.booted, 1),
            "firmware": self.firmware_version,
            "led": self.led,
        }


def sensor(index: int, name: str) -> tuple[Router, DeviceState]:
    """The default template: one device's routes and state.

    * ``GET /sensors/temp``, ``GET /sensors/humidity`` — observable
      telemetry (text/plain), notified when the value changes;
    * ``GET|PUT /actuators/led`` — ``on`` / ``off`` (4.00 otherwise);
    * ``GET /firmware`` — a 64 KiB image (block-wise), ``GET /firmware/version``;
    * ``PUT /firmware/upload`` — a block-wise upload: 2.04 with its size and
      SHA-256, and ``GET /firmware/upload`` tells what arrived;
    * ``GET /device`` — JSON: name, index, uptime, firmware, led.
    """
    state = DeviceState(index, name)
    router = Router()
    for t in state.telemetry:
        router.add("GET", t.path, _telemetry_handler(t), observable=True, rt=_rt(t), ct=0)

    def led_get(request: Request) -> Response:
        return Response(Code.CONTENT, state.led.encode(), content_format=0)

    def led_put(request: Request) -> Response:
        value = request.payload.strip().lower()
        if value not in (b"on", b"off"):
            return Response(Code.BAD_REQUEST, b"on or off")
        state.led = value.decode()
        return Response(Code.CHANGED)

    router.add("GET", "/actuators/led", led_get, rt="actuator.led", ct=0)
    router.add("PUT", "/actuators/led", led_put)

    def firmware(request: Request) -> Response:
        body = firmware_image(state.name, state.firmware_size, state.firmware_version)
        etag = zlib.crc32(body).to_bytes(4, "big")
        return Response(Code.CONTENT, body, content_format=42, etag=etag)

    def firmware_version(request: Request) -> Response:
        return Response(Code.CONTENT, state.firmware_version.encode(), content_format=0)

    def upload(request: Request) -> Response:
        body = request.payload
        state.uploaded = {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
        return Response(Code.CHANGED, json.dumps(state.uploaded).encode(), content_format=50)

    def uploaded(request: Request) -> Response:
        return Response(Code.CONTENT, json.dumps(state.uploaded).encode(), content_format=50)

    def device(request: Request) -> Response:
        return Response(Code.CONTENT, json.dumps(state.describe()).encode(), content_format=50)

    router.add("GET", "/firmware", firmware, rt="firmware", ct=42)
    router.add("GET", "/firmware/version", firmware_version, ct=0)
    router.add("PUT", "/firmware/upload", upload, rt="firmware.upload")
    router.add("GET", "/firmware/upload", uploaded, ct=50)
    router.add("GET", "/device", device, rt="device", ct=50)
    return router, state


def _rt(t: Telemetry) -> str:
    return "sensor." + t.path.rsplit("/", 1)[-1]


def _telemetry_handler(t: Telemetry):  # noqa: ANN202
    def handler(request: Request) -> Response:
        return t.render()

    return handler
