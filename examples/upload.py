"""A block-wise upload (RFC 7959 Block1) and download (Block2): 100 KB in
1 KiB blocks, checked byte for byte.

    python examples/upload.py [coap://127.0.0.1:5683]

Needs the demo server. Prints::

    uploaded 102400 bytes in 100 blocks: 2.04 Changed
    downloaded 102400 bytes, identical: True
"""

import os

from _common import base_uri, require_server

import greencoap

base = base_uri()
require_server(base)
body = os.urandom(100 * 1024)
with greencoap.Client(timeout=30, block_size=1024) as client:
    r = client.put(f"{base}/store", body)  # larger than a block: Block1, block by block
    print(f"uploaded {len(body)} bytes in {len(body) // 1024} blocks: {r.code}")
    back = client.get(f"{base}/store").payload  # Block2, reassembled
    print(f"downloaded {len(back)} bytes, identical: {back == body}")
