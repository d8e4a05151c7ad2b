"""Concurrent fan-out with error handling: 200 requests at once from plain
blocking code, each with its own timeout, failures counted, not fatal.

    python examples/fanout.py [coap://127.0.0.1:5683]

Needs the demo server. Prints how many answered, how many were refused
(4.xx) and how many timed out, and the wall time (about 1 s, the 1 s timeout of
the slowest, not 200 x 0.2 s one after another)::

    200 requests in 1.01 s: 180 answered, 10 refused (4.04), 10 timed out
"""

import time

from _common import base_uri, require_server

import greencoap

base = base_uri()
require_server(base)
paths = ["/slow?ms=200"] * 180 + ["/no-such-resource"] * 10 + ["/slow?ms=3000"] * 10


def fetch(client, path):
    try:
        r = client.get(base + path, timeout=1.0)
    except greencoap.RequestTimeoutError:
        return "timeout"
    return "ok" if r.ok else "refused"


with greencoap.Client() as client:
    t0 = time.monotonic()
    jobs = [greencoap.spawn(fetch, client, p) for p in paths]
    greencoap.joinall(jobs)
    outcome = [g.value for g in jobs]
    took = time.monotonic() - t0
print(
    f"{len(paths)} requests in {took:.2f} s: {outcome.count('ok')} answered, "
    f"{outcome.count('refused')} refused (4.04), {outcome.count('timeout')} timed out"
)
