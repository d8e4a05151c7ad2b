"""The ``greencoap`` command line (layer 4).

    greencoap get coap://127.0.0.1/hello
    greencoap get coap://[::1]/large -o large.bin
    greencoap post coap://127.0.0.1/echo --payload @request.json --content-format json
    greencoap put coap://127.0.0.1/store --payload @- < firmware.bin
    greencoap observe coap://127.0.0.1/counter --count 3
    greencoap discover coap://127.0.0.1 --rt 'sensor*'
    greencoap ping coap://127.0.0.1 --count 3
    greencoap get coaps://127.0.0.1/hello --psk-identity me --psk-key secret
    greencoap demo-server --host 127.0.0.1 --port 5683
    greencoap fleet --devices 1000 --register coap://127.0.0.1/rd
    greencoap rd --host 127.0.0.1 --port 5683

The payload goes to stdout (or ``-o FILE``) byte for byte; the response code
and everything else goes to stderr, so ``greencoap get ... > fw.bin`` is
exact.  On a terminal JSON and CBOR are pretty-printed and link-format is a
table (``--raw`` turns that off).  ``-v`` shows every message sent and
received with its options decoded, ``-vv`` their bytes too.

Exit status (stable): 0 success (2.xx), 1 a 4.xx/5.xx response, 2 usage
error, 3 no answer (timeout), RST or a failed DTLS handshake, 4 a local file
could not be read or written.
"""

from __future__ import annotations

import sys

from .commands import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
