"""Locustfile for bench/locust.py: ``GET /hello`` through greencoap's ``CoapUser``.

    locust -f bench/locust_coapuser.py --host coap://127.0.0.1:5683 --headless -u 50 -t 10s

Each user runs its own greencoap ``Client`` on gevent's hub (greencoap's
gevent backend) and reports every request through Locust's request event.
"""

from locust import constant, task

from greencoap.contrib.locust import CoapUser


class HelloCoapUser(CoapUser):
    """GET /hello back to back (no think time)."""

    wait_time = constant(0)

    @task
    def hello(self):
        self.client.get("/hello")
