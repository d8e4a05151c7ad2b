"""A blocking script: GET, POST and PUT against a CoAP server, as plain calls.

    python examples/get.py [coap://127.0.0.1:5683]

Needs the demo server (``greencoap demo-server``). Prints::

    GET /hello: 2.05 Content 'Hello, world!'
    POST /echo: 2.05 Content {'sent': 'from a script'}
    PUT /store: 2.04 Changed, GET /store gives it back: True
"""

from _common import base_uri, require_server

import greencoap

base = base_uri()
require_server(base)
with greencoap.Client(timeout=5) as client:
    r = client.get(f"{base}/hello")
    print(f"GET /hello: {r.code} {r.text!r}")
    r = client.post(f"{base}/echo", {"sent": "from a script"})  # a dict goes as JSON
    print(f"POST /echo: {r.code} {r.json()}")
    body = b"\x00\x01binary\xff"
    r = client.put(f"{base}/store", body)
    same = client.get(f"{base}/store").payload == body
    print(f"PUT /store: {r.code}, GET /store gives it back: {same}")
