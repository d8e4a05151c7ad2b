"""An observer (RFC 7641): a for loop over notifications.

    python examples/observe.py [coap://127.0.0.1:5683] [count]

Needs the demo server. Observes ``/counter`` (a new value every 0.1 s here)
and prints each notification with its Observe sequence number::

    notification 1: counter = 0
    notification 2: counter = 1
    ...
"""

import sys

from _common import base_uri, require_server

import greencoap

base = base_uri()
count = int(sys.argv[2]) if len(sys.argv) > 2 else 5
require_server(base)
with greencoap.Client(timeout=5) as client:
    with client.observe(f"{base}/counter?interval=0.1") as observation:
        for n, note in enumerate(observation, 1):
            print(f"notification {note.observe}: counter = {note.text}")
            if n == count:
                break  # leaving the block deregisters
