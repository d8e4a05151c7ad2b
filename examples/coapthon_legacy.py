"""A CoAPthon3 program moved to greencoap by changing its imports.

    python examples/coapthon_legacy.py [port]

Everything below is written against CoAPthon3 1.0.2's API — a server with
two resources (one of them blocks in ``time.sleep`` like a slow database
call) and a HelperClient used from a pool of worker threads.  The only
lines that differ from the CoAPthon3 version are the three imports marked
``was:``.  The program serves on 127.0.0.1, runs its clients, prints what
they got and stops.

Under CoAPthon3 itself this program hangs (it did in our run, killed after
60 s): CoAPthon3's HelperClient is not meant for concurrent callers, who
share its one response queue.
"""

import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from greencoap.compat.coapthon import defines  # was: from coapthon import defines
from greencoap.compat.coapthon.client.helperclient import (  # was: from coapthon.client...
    HelperClient,
)
from greencoap.compat.coapthon.resources.resource import (  # was: from coapthon.resources...
    Resource,
)
from greencoap.compat.coapthon.server.coap import CoAP  # was: from coapthon.server.coap ...


class Thermostat(Resource):
    """A setpoint that clients read (GET), change (PUT) and observe."""

    def __init__(self, name="Thermostat", coap_server=None):
        super().__init__(name, coap_server, visible=True, observable=True, allow_children=False)
        self.payload = "20.5"
        self.resource_type = "thermostat"
        self.content_type = "text/plain"

    def render_GET(self, request):
        return self

    def render_PUT(self, request):
        self.edit_resource(request)
        return self


class Report(Resource):
    """A slow resource: its render_GET blocks for 2 s (a database query)."""

    def __init__(self, name="Report", coap_server=None):
        super().__init__(name, coap_server, visible=True, observable=False, allow_children=False)

    def render_GET(self, request):
        time.sleep(2)  # blocks this request only: the others go on being served
        self.payload = "monthly report: 42 kWh"
        return self


def main(port: int) -> None:
    server = CoAP(("127.0.0.1", port))
    server.add_resource("thermostat/", Thermostat())
    server.add_resource("report/", Report())
    serving = threading.Thread(target=server.listen, kwargs={"timeout": 10}, daemon=True)
    serving.start()

    client = HelperClient(server=("127.0.0.1", port))  # one client, shared by threads
    try:
        background = ThreadPoolExecutor(1)
        slow = background.submit(client.get, "report")
        t0 = time.monotonic()
        with ThreadPoolExecutor(8) as pool:  # eight worker threads, one client
            answers = list(pool.map(lambda _: client.get("thermostat").payload, range(40)))
        print(f"40 GETs from 8 threads in {time.monotonic() - t0:.2f} s: {set(answers)}")

        notes = []
        client.observe("thermostat", notes.append)  # the callback runs on a thread
        time.sleep(0.2)
        response = client.put("thermostat", (defines.Content_types["text/plain"], "21.0"))
        print("PUT ->", defines.Codes.LIST[response.code].name)
        deadline = time.monotonic() + 5
        while len(notes) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        print("observed:", [n.payload for n in notes])
        client.cancel_observing(notes[-1], True)  # ends the observation, not the client

        print("slow GET ->", slow.result(timeout=10).payload)
        background.shutdown()
        print("discover ->", client.discover().payload)
    finally:
        client.stop()
        server.close()
        serving.join(5)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5683)
