"""Locust platform scenario: every user is a device that registers at --host.

    # one process
    locust -f loadtest/platform.py --host coap://127.0.0.1:5683/rd \
        --headless -u 1000 -r 200 -t 60s
    # distributed: a master and one worker per core
    locust -f loadtest/platform.py --host coap://127.0.0.1:5683/rd \
        --master --expect-workers 2 --headless -u 2000 -r 200 -t 60s
    locust -f loadtest/platform.py --worker      # twice, on the same or other hosts

--host is the platform: a Resource Directory (RFC 9176; ``greencoap rd`` or
``aiocoap-rd``) or an IoT platform's registration endpoint.  Each user is a
device of the default sensor template on a socket of its own, registers on
start (Locust's RD / register row), refreshes before its lifetime ends, serves
what the platform asks (SERVE rows), notifies its observers every few seconds
(NOTIFY rows) and deregisters when the run stops.

LOCUST_DEVICE_LIFETIME (s, default 300), LOCUST_DEVICE_INTERVAL (s between
telemetry, default 5) and LOCUST_TELEMETRY_PATH (also POST each reading to
this path on the platform) tune it.
"""

import os

from locust import constant, task

from greencoap.contrib.locust import CoapDeviceUser

LIFETIME = int(os.environ.get("LOCUST_DEVICE_LIFETIME", "300"))
INTERVAL = float(os.environ.get("LOCUST_DEVICE_INTERVAL", "5"))
TELEMETRY_PATH = os.environ.get("LOCUST_TELEMETRY_PATH")


class PlatformDevice(CoapDeviceUser):
    """A sensor device on the platform."""

    lifetime = LIFETIME
    wait_time = constant(INTERVAL)

    @task
    def telemetry(self):
        self.notify("/sensors/temp")  # to whoever observes it
        if TELEMETRY_PATH:
            reading = self.device.state.telemetry[0].value()
            self.push(TELEMETRY_PATH, f'{{"temp": {reading}}}', content_format=50)
