"""A slow handler and a separate response (RFC 7252 §5.2.2): a handler that
blocks (sleeps, calls another device) holds up nobody; after 0.5 s the
server acknowledges the request with an empty ACK and sends the answer as a
CON of its own when it is ready.

    python examples/slow_handler.py

Self-contained (a server on a free port, and a client). Prints::

    slow: 2.05 Content 'done after 1.5 s' (separate response: True) in 1.5 s
    fast, meanwhile: 2.05 Content 'quick' in 0.00 s
"""

import time

import greencoap
from greencoap import Router, Server

router = Router()


@router.get("/slow")
def slow(request):
    greencoap.sleep(1.5)  # parks this handler only
    return "done after 1.5 s"


@router.get("/fast")
def fast(request):
    return "quick"


server = Server(router, host="127.0.0.1", port=0).start()
base = f"coap://127.0.0.1:{server.port}"
try:
    with greencoap.Client(timeout=10) as client:
        t0 = time.monotonic()
        pending = greencoap.spawn(client.get, base + "/slow")
        greencoap.sleep(0.6)  # past the server's separate-response delay
        t1 = time.monotonic()
        quick = client.get(base + "/fast")
        fast_took = time.monotonic() - t1
        r = pending.get()
        separate = r.mtype == greencoap.Type.CON  # an ACK would have carried it
        print(
            f"slow: {r.code} {r.text!r} (separate response: {separate}) "
            f"in {time.monotonic() - t0:.1f} s"
        )
        print(f"fast, meanwhile: {quick.code} {quick.text!r} in {fast_took:.2f} s")
finally:
    server.stop()
