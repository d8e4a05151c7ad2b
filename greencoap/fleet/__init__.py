"""Device fleets: thousands of simulated CoAP devices in one process.

A device is a greencoap server on its own UDP socket, built from a
*template* (``template(index, name) -> Router`` or ``(Router, state)``), so
that each has its own values; it may register with a Resource Directory
(RFC 9176, or as an LwM2M client), push telemetry to its observers, and
misbehave on purpose (slow answers, loss, going offline, rebooting)::

    from greencoap.fleet import Fleet

    with Fleet(count=1000, base_port=20000, register="coap://rd.example/rd") as fleet:
        fleet.wait_registered(timeout=60)
        fleet.inject("loss", fraction=0.1, rate=0.3)
        ...

* :class:`Fleet` — N devices on one hub: start, stop (deregistering), stats;
* :class:`Device` — one device (also what a Locust ``CoapDeviceUser`` is);
* :mod:`greencoap.fleet.behaviours` — :class:`Telemetry`, the default
  :func:`sensor` template;
* :mod:`greencoap.fleet.rd` — a small test Resource Directory;
* ``greencoap fleet`` — the command line (:mod:`greencoap.fleet.cli`).
"""

from .behaviours import DeviceState, Telemetry, firmware_image, sensor
from .device import Device, DeviceServer, links_of
from .fleet import FAULTS, Fleet, FleetError
from .rd import ResourceDirectory

__all__ = [
    "FAULTS",
    "Device",
    "DeviceServer",
    "DeviceState",
    "Fleet",
    "FleetError",
    "ResourceDirectory",
    "Telemetry",
    "firmware_image",
    "links_of",
    "sensor",
]
