"""The server's plain path (Server._handle for a request ServerPipeline.plain
takes) against its full path (_handle_full): the same requests, over real
sockets, to two servers on one router, one with the plain path turned off,
must get the same replies -- handlers returning Responses, text, JSON, raw
bytes or a generator, raising CoapError or a bug, a body too large for one
datagram, an Echo challenge to an unverified address, NON and CON."""

from __future__ import annotations

import logging

import pytest

from greencoap import CoapError, Code, Response, Router, Server, Type
from greencoap.message import Message
from greencoap.options import OptionNumber as O

from .test_server import exchange

_ECHO = int(O.ECHO)


def router() -> Router:
    r = Router()
    r.add("GET", "/hello", lambda req: Response(Code.CONTENT, b"hi", content_format=0))
    r.add("GET", "/text", lambda req: "text")
    r.add("GET", "/json", lambda req: {"a": [1, 2]}, ct=50)
    r.add("POST", "/echo", lambda req: Response(Code.CHANGED, req.payload))
    r.add("PUT", "/things/:id", lambda req, id: Response(Code.CHANGED, id.encode()))
    r.add("GET", "/big", lambda req: bytes(range(256)) * 8)
    r.add("GET", "/query", lambda req: ",".join(req.query))

    def forbidden(req):
        raise CoapError(Code.FORBIDDEN, "no")

    def bug(req):
        raise ValueError("a bug")

    def clock(req):
        yield "tick"

    r.add("GET", "/forbidden", forbidden)
    r.add("GET", "/bug", bug)
    r.add("GET", "/clock", clock, observable=True)
    r.add("DELETE", "/loc", lambda req: Response(Code.DELETED, location_path="/a/b"))
    return r


def requests() -> list[bytes]:
    def req(mtype, code, mid, path, options=(), payload=b""):
        opts = [(int(O.URI_PATH), seg.encode()) for seg in path.strip("/").split("/")]
        opts += [(int(n), v) for n, v in options]
        opts.sort(key=lambda o: o[0])
        return Message(mtype, code, mid, mid.to_bytes(2, "big"), opts, payload).encode()

    out = []
    for i, t in enumerate((Type.CON, Type.NON)):
        base = 0x100 * (i + 1)
        out += [
            req(t, Code.GET, base + 1, "hello"),
            req(t, Code.GET, base + 2, "text"),
            req(t, Code.GET, base + 3, "json"),
            req(t, Code.POST, base + 4, "echo", [(O.CONTENT_FORMAT, b"")], b"payload"),
            req(t, Code.PUT, base + 5, "things/42"),
            req(t, Code.GET, base + 6, "big"),  # block 0 of 2 KiB, or a 4.01 challenge
            req(t, Code.GET, base + 7, "query", [(O.URI_QUERY, b"a=1"), (O.URI_QUERY, b"b")]),
            req(t, Code.GET, base + 8, "forbidden"),
            req(t, Code.GET, base + 9, "bug"),
            req(t, Code.GET, base + 10, "clock"),
            req(t, Code.DELETE, base + 11, "loc"),
            req(t, Code.GET, base + 12, "hello", [(O.URI_HOST, b"h"), (O.URI_PORT, b"\x16")]),
            req(t, Code.GET, base + 13, "hello", [(O.URI_HOST, b"h"), (O.URI_HOST, b"i")]),
            req(t, Code.GET, base + 14, "nowhere"),
            req(t, Code.POST, base + 15, "hello"),
        ]
    return out


def comparable(data: bytes) -> tuple:
    """A reply as compared: a NON's MID is the server's own, and an Echo
    value is made with each server's own key."""
    msg = Message.decode(data)
    mid = msg.mid if msg.mtype == Type.ACK else None
    opts = [(n, b"<echo>" if n == _ECHO else v) for n, v in msg.options]
    return (msg.mtype, msg.code, mid, msg.token, opts, msg.payload)


@pytest.mark.parametrize("echo_factor", [None, 3.0])
def test_the_plain_path_answers_as_the_full_path(hub, caplog, echo_factor):
    caplog.set_level(logging.CRITICAL)  # the /bug handler's traceback
    servers = []
    for plain in (True, False):
        srv = Server(router(), host="127.0.0.1", port=0, echo_factor=echo_factor).start()
        srv._plain_path = plain
        servers.append(srv)
    try:
        datagrams = requests()
        replies = [
            sorted(comparable(d) for d in exchange(hub, s.port, datagrams, 3.0, len(datagrams)))
            for s in servers
        ]
        assert len(replies[0]) == len(datagrams)
        assert replies[0] == replies[1]
        codes = {r[1] for r in replies[0]}
        assert {Code.CONTENT, Code.FORBIDDEN, Code.INTERNAL_SERVER_ERROR, Code.BAD_OPTION} <= codes
        assert (Code.UNAUTHORIZED in codes) == (echo_factor is not None)  # /big challenged
        plain, full = (s.stats for s in servers)
        for key in ("requests_received", "handler_errors", "bad_option", "not_found"):
            assert plain.get(key, 0) == full.get(key, 0), key
    finally:
        for s in servers:
            s.stop()
