"""A Locust load test against a CoAP server (Locust runs on gevent; so does
greencoap here).

    locust -f examples/locustfile.py --headless -u 20 -r 20 -t 10s \\
        --host coap://127.0.0.1:5683

Needs the demo server. Each user GETs ``/hello`` and POSTs to ``/echo``;
Locust's table shows them as ``GET /hello`` and ``POST /echo`` with their
response times and failures.
"""

from locust import between, task

from greencoap.contrib.locust import CoapUser


class Device(CoapUser):
    wait_time = between(0.01, 0.05)

    @task(3)
    def hello(self):
        self.client.get("/hello")

    @task
    def echo(self):
        self.client.post("/echo", b"load")
