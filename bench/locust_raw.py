"""Locustfile for bench/locust.py: ``GET /hello`` by a hand-written raw-UDP Locust user.

    locust -f bench/locust_raw.py --host coap://127.0.0.1:5683 --headless -u 50 -t 10s

The baseline for what a CoAP Locust user can cost: one ``gevent.socket`` UDP
socket per user, the CoAP bytes packed by hand (CON GET, 2-byte token,
Uri-Path "hello", message ID incrementing), ``sendto`` then ``recvfrom`` until
the ACK with that message ID and token arrives or the timeout passes, and one
``events.request.fire(...)`` per request. No retransmission, no option
parsing beyond the code byte.
"""

import os
import socket
import struct
import time
from urllib.parse import urlsplit

from gevent import socket as gsocket
from locust import User, constant, task
from locust.exception import StopUser

URI_PATH = 11
PATH = b"hello"
# CON (type 0), token length 2; code 0.01 GET; then MID and token are filled in
HEADER = 0x40 | 2
OPTIONS = bytes([URI_PATH << 4 | len(PATH)]) + PATH
CONTENT = 0x45  # 2.05


class CoapFailure(Exception):
    """A non-2.05 answer or no answer, with a stable message Locust can group."""


class RawCoapUser(User):
    """GET /hello back to back over a raw gevent UDP socket."""

    wait_time = constant(0)
    timeout = 5.0

    def __init__(self, environment):
        super().__init__(environment)
        if not self.host:
            raise StopUser("RawCoapUser needs --host coap://HOST:PORT")
        u = urlsplit(self.host if "://" in self.host else "coap://" + self.host)
        self.addr = (u.hostname, u.port or 5683)
        self.sock = gsocket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.mid = int.from_bytes(os.urandom(2), "big")
        self.fire = environment.events.request.fire

    def on_stop(self):
        self.sock.close()

    @task
    def hello(self):
        self.mid = mid = (self.mid + 1) & 0xFFFF
        head = struct.pack("!BBHH", HEADER, 0x01, mid, mid ^ 0x5A5A)  # token: 2 bytes
        key = head[2:6]  # MID + token, what the piggybacked ACK must carry
        sock = self.sock
        exc = None
        length = 0
        t0 = time.perf_counter()
        deadline = t0 + self.timeout
        sock.sendto(head + OPTIONS, self.addr)
        try:
            while True:
                sock.settimeout(max(0.0, deadline - time.perf_counter()))
                data, _ = sock.recvfrom(2048)
                if data[2:6] == key and data[0] & 0x0F == 2:
                    break
            if data[1] != CONTENT:
                exc = CoapFailure(f"{data[1] >> 5}.{data[1] & 31:02d}")
            i = data.find(b"\xff", 6)
            length = len(data) - i - 1 if i >= 0 else 0
        except TimeoutError:
            exc = CoapFailure("timeout: no response")
        self.fire(
            request_type="GET",
            name="/hello",
            response_time=(time.perf_counter() - t0) * 1000,
            response_length=length,
            exception=exc,
            context={},
        )
