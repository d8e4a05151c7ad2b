"""Public API hygiene: options by name, content formats by name, payload
types, timeouts, the module-level functions and the typing marker — each
against a real server on every hub."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

import greencoap
from greencoap import Client, Code, ContentFormat, OptionList, Response, Router, Server


@pytest.fixture
def srv(any_hub):
    router = Router()
    seen = {}

    def echo(request):
        seen["cf"] = request.content_format
        seen["accept"] = request.accept
        seen["payload"] = request.payload
        return Response(
            Code.CONTENT,
            request.payload,
            content_format=request.content_format or 0,
            max_age=30,
            etag=b"\x01\x02",
        )

    for method in ("GET", "POST", "FETCH", "PATCH", "IPATCH"):
        router.add(method, "/echo", echo)
    server = Server(router, host="127.0.0.1", port=0).start()
    server.seen = seen
    server.uri = f"coap://127.0.0.1:{server.port}"
    yield server
    server.stop()


def test_response_options_are_readable_by_name_and_still_a_list(srv):
    with Client(timeout=5) as c:
        r = c.post(srv.uri + "/echo", "hi")
    opts = r.options
    assert isinstance(opts, OptionList) and isinstance(opts, list)
    assert opts.etag == b"\x01\x02" and opts.max_age == 30 and opts.content_format == 0
    assert opts.get(14) == bytes([30]) and opts.get(999) is None and opts.get(999, b"x") == b"x"
    assert opts.get_all(4) == [b"\x01\x02"]
    assert (4, b"\x01\x02") in opts and sorted(n for n, _ in opts) == [4, 12, 14]


@pytest.mark.parametrize(
    "given", [ContentFormat.JSON, 50, "application/json", "json", "APPLICATION/JSON"]
)
def test_content_format_and_accept_take_members_numbers_and_names(srv, given):
    with Client(timeout=5) as c:
        r = c.post(srv.uri + "/echo", b"{}", content_format=given, accept=given)
    assert r.ok and srv.seen["cf"] == 50 and srv.seen["accept"] == 50
    with Client(timeout=5) as c, pytest.raises(ValueError, match="unknown content format"):
        c.post(srv.uri + "/echo", b"{}", content_format="application/nonsense")


def test_payload_types(srv):
    with Client(timeout=5) as c:
        assert c.post(srv.uri + "/echo", {"a": [1, 2]}).json() == {"a": [1, 2]}
        assert srv.seen["cf"] == 50  # JSON values go as application/json
        c.post(srv.uri + "/echo", 5)
        assert srv.seen["payload"] == b"5"  # not five NUL bytes
        c.post(srv.uri + "/echo", bytearray(b"\x00\x01"))
        assert srv.seen["payload"] == b"\x00\x01" and srv.seen["cf"] is None
        c.post(srv.uri + "/echo", "é")
        assert srv.seen["payload"] == "é".encode() and srv.seen["cf"] == 0
        for bad in (object(), {1, 2}, {"x": object()}):
            with pytest.raises(TypeError, match="payload"):
                c.post(srv.uri + "/echo", bad)


def test_negative_timeouts_are_refused(srv):
    for bad in (-1, -0.001, math.nan):
        with pytest.raises(ValueError, match="negative"):
            Client(timeout=bad)
    with Client(timeout=5) as c:
        with pytest.raises(ValueError):
            c.get(srv.uri + "/echo", timeout=-1)
        with pytest.raises(ValueError):
            c.ping(srv.uri, timeout=-1)
        with pytest.raises(ValueError):
            c.observe(srv.uri + "/echo", timeout=-2)
        with pytest.raises(TypeError):
            c.get(srv.uri + "/echo", timeout="soon")


def test_module_level_functions(srv):
    try:
        assert greencoap.fetch(srv.uri + "/echo", "f", timeout=5).payload == b"f"
        assert greencoap.patch(srv.uri + "/echo", "p", timeout=5).payload == b"p"
        assert greencoap.ipatch(srv.uri + "/echo", "i", timeout=5).payload == b"i"
        assert 0 < greencoap.ping(srv.uri, timeout=5) < 5
        assert isinstance(greencoap.observe(srv.uri + "/echo"), greencoap.Observation)
    finally:
        greencoap.default_client().close()


def test_the_package_says_it_is_typed():
    assert (Path(greencoap.__file__).parent / "py.typed").is_file()
