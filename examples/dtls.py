"""DTLS 1.2 with a pre-shared key (``coaps://``, TLS_PSK_WITH_AES_128_CCM_8):
a server that knows two devices' keys, a client per device, and a wrong key.

    python examples/dtls.py

Self-contained (a server on free ports). Prints::

    sensor-1: 2.05 Content 'hello sensor-1'
    sensor-2: 2.05 Content 'hello sensor-2'
    wrong key: HandshakeError
"""

import greencoap
from greencoap import Router, Server

keys = {"sensor-1": b"secret-1", "sensor-2": b"secret-2"}
router = Router()


@router.get("/hello")
def hello(request):
    return f"hello {request.identity}"  # the authenticated PSK identity


server = Server(router, host="127.0.0.1", port=0, dtls_port=0, psk=keys).start()
uri = f"coaps://127.0.0.1:{server.dtls_port}/hello"
try:
    for identity, key in keys.items():
        with greencoap.Client(timeout=10, psk=(identity, key)) as client:
            r = client.get(uri)
            print(f"{identity}: {r.code} {r.text!r}")
    with greencoap.Client(timeout=10, psk=("sensor-1", b"wrong")) as client:
        try:
            client.get(uri)
        except greencoap.HandshakeError as e:
            print(f"wrong key: {type(e).__name__}")
finally:
    server.stop()
