"""Locust load test against the greencoap demo server.

    locust -f loadtest/locustfile.py --host coap://127.0.0.1:5683 --headless -u 50 -r 50 -t 30s
    locust -f loadtest/locustfile.py --host coap://127.0.0.1:5683 --headless -u 200 -t 30s \
        --processes 2          # one worker process per core

Set LOCUST_SLOW_ONLY=1 to run only the /slow task and LOCUST_SLOW_MS to its delay
(used by the tests).
"""

import os

from locust import constant, task

from greencoap.contrib.locust import CoapUser

SLOW_ONLY = os.environ.get("LOCUST_SLOW_ONLY") == "1"
SLOW_MS = int(os.environ.get("LOCUST_SLOW_MS", "100"))


class DemoDevice(CoapUser):
    """A device client: mostly reads, some echoes, a few slow calls."""

    wait_time = constant(0)

    @task(0 if SLOW_ONLY else 10)
    def hello(self):
        self.client.get("/hello")

    @task(0 if SLOW_ONLY else 3)
    def echo(self):
        with self.client.post("/echo", b"load", catch_response=True) as r:
            if r.payload != b"load":
                r.failure("echo mismatch")

    @task(0 if SLOW_ONLY else 2)
    def sensor(self):
        self.client.get("/sensors/7", name="/sensors/:id")

    @task(1)
    def slow(self):
        self.client.get(f"/slow?ms={SLOW_MS}", name="/slow")
