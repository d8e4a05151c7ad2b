"""Resource discovery (RFC 6690): what a server offers, from its
``/.well-known/core``, filtered by resource type.

    python examples/discover.py [coap://127.0.0.1:5683]

Needs the demo server. Prints every resource, then the temperature sensors::

    coap://127.0.0.1:5683/hello  rt=greeting
    ...
    3 temperature sensors: /sensors/1 /sensors/2 /sensors/3
"""

from _common import base_uri, require_server

import greencoap

base = base_uri()
require_server(base)
with greencoap.Client(timeout=5) as client:
    for link in client.discover(base):
        attrs = " ".join(f"{k}={v}" if v is not None else k for k, v in link.params)
        print(f"{link.target}  {attrs}")
    sensors = client.discover(base, rt="temperature")
    paths = " ".join(link.target[len(base) :] for link in sensors)
    print(f"{len(sensors)} temperature sensors: {paths}")
