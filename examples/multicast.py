"""Multicast discovery (RFC 7252 §8): every CoAP device on the link, from one
request to the All-CoAP-Nodes group.

    python examples/multicast.py [coap://224.0.1.187] [seconds]
    python examples/multicast.py "coap://[ff02::fd%eth0]"

Needs servers that listen to the group (``Server(multicast=True)``, or
libcoap's ``coap-server -g 224.0.1.187``). Prints each device that answered
and its resources::

    192.0.2.11: /hello
    192.0.2.12: /hello
    2 devices answered within 2 s

When none answers within the window it says so in one line (exit status 2).
"""

import sys
from collections import defaultdict

import greencoap

group = sys.argv[1] if len(sys.argv) > 1 else "coap://224.0.1.187"
window = float(sys.argv[2]) if len(sys.argv) > 2 else 2.0
devices = defaultdict(list)
with greencoap.Client() as client:
    for link in client.discover(group, timeout=window):
        u = greencoap.parse_uri(link.target)
        devices[u.host].append("/" + "/".join(u.path))
if not devices:
    print(f"no CoAP server answered {group} within {window:g} s", file=sys.stderr)
    raise SystemExit(2)
for host, paths in sorted(devices.items()):
    print(f"{host}: {' '.join(sorted(paths))}")
print(f"{len(devices)} devices answered within {window:g} s")
