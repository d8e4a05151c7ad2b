"""A server with routes: ``:params``, an observable generator, JSON, and the
generated ``/.well-known/core``.

    python examples/server.py [port] [seconds]

Serves on 127.0.0.1 (port 5684 by default) for the given seconds (default:
until Ctrl-C) and prints its address::

    serving coap://127.0.0.1:5684 (try: greencoap get coap://127.0.0.1:5684/rooms/kitchen)
"""

import sys

import greencoap
from greencoap import Code, Response, Router, Server

router = Router()
temperatures = {"kitchen": 21.5, "garage": 12.0}


@router.get("/rooms/:name", rt="temperature", ct=50)
def room(request, name):  # a :param arrives as a keyword argument
    if name not in temperatures:
        return Response(Code.NOT_FOUND, f"no room {name}")
    return {"room": name, "celsius": temperatures[name]}  # a dict goes as JSON


@router.put("/rooms/:name")
def set_room(request, name):
    try:
        temperatures[name] = float(request.payload)
    except ValueError:
        return Response(Code.BAD_REQUEST, "a temperature in degrees Celsius")
    return Response(Code.CHANGED)


@router.get("/clock", rt="clock")
def clock(request):
    """Observable: each value yielded is a notification (one a second)."""
    n = 0
    while True:
        yield str(n)
        n += 1
        greencoap.sleep(1)


port = int(sys.argv[1]) if len(sys.argv) > 1 else 5684
seconds = float(sys.argv[2]) if len(sys.argv) > 2 else None
server = Server(router, host="127.0.0.1", port=port).start()
print(
    f"serving coap://127.0.0.1:{server.port} "
    f"(try: greencoap get coap://127.0.0.1:{server.port}/rooms/kitchen)",
    flush=True,
)
try:
    if seconds is None:
        server.serve_forever()
    else:
        greencoap.sleep(seconds)
except KeyboardInterrupt:
    pass
finally:
    server.stop()
