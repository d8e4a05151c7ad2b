"""A tour of greencoap: plain blocking calls that run concurrently.

    python examples/tour.py coap://127.0.0.1:5683

Expects the demo server (``python -m greencoap.demo``) at the given base URI.
"""

import sys
import time

import greencoap

base = sys.argv[1] if len(sys.argv) > 1 else "coap://127.0.0.1:5683"

with greencoap.Client(timeout=10) as client:
    # wait for the server to come up (it was just started in the background)
    for _ in range(50):
        try:
            client.get(f"{base}/hello", timeout=0.2)
            break
        except greencoap.RequestTimeoutError:
            pass
    print(f"hub backend: {greencoap.get_hub().backend}")

    r = client.get(f"{base}/hello")
    print(f"GET  {base}/hello -> {r.code}: {r.text!r}")

    r = client.post(f"{base}/echo", payload=b"ping from the tour", content_format=0)
    print(f"POST {base}/echo -> {r.code}: {r.text!r} (content format {r.content_format})")

    r = client.get(f"{base}/sensors/42")
    print(f"GET  {base}/sensors/42 -> {r.code}: {r.json()}")

    n, ms = 1000, 200
    print(f"\n{n} greenlets, each a blocking GET of /slow?ms={ms} ...")
    t0 = time.perf_counter()
    greenlets = [greencoap.spawn(client.get, f"{base}/slow?ms={ms}") for _ in range(n)]
    greencoap.joinall(greenlets, timeout=30)
    elapsed = time.perf_counter() - t0
    ok = sum(1 for g in greenlets if g.successful() and g.value.code == greencoap.Code.CONTENT)
    print(
        f"  {ok}/{n} answered 2.05 in {elapsed:.3f} s wall time "
        f"({n / elapsed:,.0f} req/s; one call takes {ms / 1000:.3f} s)"
    )

    print("\nthe same, 5 calls one after another for contrast ...")
    t0 = time.perf_counter()
    for _ in range(5):
        client.get(f"{base}/slow?ms={ms}")
    elapsed = time.perf_counter() - t0
    print(f"  5 sequential calls took {elapsed:.3f} s")

    r = client.get(f"{base}/no/such/resource")
    print(f"\nGET  {base}/no/such/resource -> {r.code}")
    if ok != n:
        sys.exit(1)
