"""A fleet of devices, a Resource Directory, and a gateway that observes them.

    python examples/fleet_gateway.py [--devices 1000] [--duration 20]

Everything runs in this one process, on one hub, on 127.0.0.1:

* a small RD (:class:`greencoap.fleet.ResourceDirectory`);
* a fleet of ``--devices`` sensors (the default template) that register
  with it, spread over a second or two;
* a "gateway": it looks the devices up in the RD (``/rd-lookup/res?rt=
  sensor.temp``), observes every device's temperature and prints how many
  notifications per second arrive, until ``--duration`` seconds are up.

Then the fleet stops (each device removes its registration) and the RD is
shown empty.  The devices' telemetry changes every few seconds, so with
1,000 devices expect a few hundred notifications per second.
"""

from __future__ import annotations

import argparse
import time

from greencoap import Client, Server, spawn
from greencoap.fleet import Fleet, ResourceDirectory
from greencoap.hub import sleep
from greencoap.linkformat import parse_link_format


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--duration", type=float, default=20.0)
    args = ap.parse_args()

    rd = ResourceDirectory()
    rd_server = Server(rd.router, host="127.0.0.1", port=0, echo_factor=None).start()
    rd_uri = f"coap://127.0.0.1:{rd_server.port}"
    fleet = Fleet(count=args.devices, register=rd_uri + "/rd", lifetime=120).start()
    t0 = time.monotonic()
    fleet.wait_registered(timeout=60)
    print(f"{fleet.registered()} devices registered in {time.monotonic() - t0:.1f} s")

    received = [0]
    with Client(timeout=10) as gateway:
        lookup = gateway.get(rd_uri + "/rd-lookup/res?rt=sensor.temp")
        targets = [link.resolve(link.anchor) for link in parse_link_format(lookup.text)]
        print(f"the RD lists {len(targets)} temperature sensors; observing them all")

        def follow(uri: str) -> None:
            for _ in gateway.observe(uri):
                received[0] += 1

        watchers = [spawn(follow, uri) for uri in targets]
        end = time.monotonic() + args.duration
        last, last_t = 0, time.monotonic()
        while time.monotonic() < end:
            sleep(1.0)
            now = time.monotonic()
            rate = (received[0] - last) / (now - last_t)
            last, last_t = received[0], now
            print(f"  {rate:7.0f} notifications/s   ({received[0]} in all)")
        for w in watchers:
            w.kill()
    fleet.stop()
    print(f"fleet stopped: {len(rd)} registrations left in the RD")
    rd_server.stop()


if __name__ == "__main__":
    main()
