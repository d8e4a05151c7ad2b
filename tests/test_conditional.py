"""Conditional requests, locations, content negotiation and discovery
(RFC 7252 §5.10.6-9, §5.10.7, §5.10.4-5; RFC 6690), on real sockets."""

from __future__ import annotations

import pytest

from greencoap import Client, Code, Response, Router, Server
from greencoap.options import Block
from greencoap.options import OptionNumber as O

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def srv(hub):
    router = Router()
    doc = {"body": b"v1", "etag": b"e1"}
    things: dict[str, str] = {}

    def current(request):
        return doc["etag"] if doc["body"] is not None else None

    @router.get("/doc", etag=current, ct=0)
    def read(request):
        return Response(Code.CONTENT, doc["body"], content_format=0, etag=doc["etag"], max_age=30)

    @router.put("/doc", etag=current)
    def write(request):
        created = doc["body"] is None
        doc["body"] = request.payload
        doc["etag"] = b"e%d" % (int(doc["etag"][1:]) + 1 if doc["etag"] else 1)
        return Response(Code.CREATED if created else Code.CHANGED, etag=doc["etag"])

    @router.delete("/doc")
    def remove(request):
        doc["body"] = doc["etag"] = None
        return Response(Code.DELETED)

    @router.get("/tagged")  # no etag hook: the returned ETag is compared
    def tagged(request):
        return Response(Code.CONTENT, b"t" * 50, etag=b"tt", max_age=5)

    @router.post("/things")
    def create(request):
        name = f"t{len(things) + 1}"
        things[name] = request.text
        return Response(Code.CREATED, location_path=f"things/{name}", location_query="v=1")

    @router.get("/reading", ct=[50])
    def reading(request):
        return {"celsius": 21.5}

    @router.get("/any")
    def any_(request):
        return {"n": 1}

    @router.get("/text-only", ct=0)
    def text_only(request):
        return "plain"

    @router.get("/lies")  # declares nothing, answers JSON
    def lies(request):
        return Response(Code.CONTENT, b"{}", content_format=50)

    @router.get("/items/:name", rt="item", enumerate=lambda: [{"name": n} for n in sorted(things)])
    def item(request, name):
        return things.get(name, "?")

    s = Server(router, host="127.0.0.1", port=0, echo_factor=None).start()
    s.uri = f"coap://127.0.0.1:{s.port}"
    s.doc = doc
    yield s
    s.stop()


def test_request_and_response_expose_named_values(hub):
    router = Router()
    seen = {}

    @router.put("/x")
    def x(request):
        seen.update(
            etag=request.etag,
            etags=request.etags,
            if_match=request.if_match,
            if_none_match=request.if_none_match,
            accept=request.accept,
            block1=request.block1,
            observe=request.observe,
            size1=request.size1,
        )
        return Response(Code.CREATED, location_path=["a", "b"], location_query=["q=1", "r"])

    s = Server(router, host="127.0.0.1", port=0).start()
    try:
        with Client(timeout=5) as c:
            r = c.put(
                f"coap://127.0.0.1:{s.port}/x",
                b"p",
                if_match=[b"m1", b"m2"],
                etag=b"e",
                options=[(O.ACCEPT, 0)],
            )
        assert r.code == Code.CREATED
        assert r.location_path == ["a", "b"] and r.location_query == ["q=1", "r"]
        assert r.location == "/a/b?q=1&r"
        assert seen["if_match"] == [b"m1", b"m2"] and seen["etag"] == b"e"
        assert seen["etags"] == [b"e"] and seen["if_none_match"] is False
        assert seen["accept"] == 0 and seen["block1"] is None and seen["observe"] is None
    finally:
        s.stop()


def test_response_block2_observe_size2():
    r = Response(
        Code.CONTENT,
        b"x",
        options=[
            (O.BLOCK2, Block(2, True, 6).to_bytes()),
            (O.OBSERVE, b"\x07"),
            (O.SIZE2, b"\x10\x00"),
        ],
    )
    assert r.block2 == Block(2, True, 6) and r.observe == 7 and r.size2 == 4096


def test_if_match_and_if_none_match(hub, srv):
    with Client(timeout=5) as c:
        r = c.put(srv.uri + "/doc", b"v2", if_match=b"nope")
        assert r.code == Code.PRECONDITION_FAILED and srv.doc["body"] == b"v1"
        r = c.put(srv.uri + "/doc", b"v2", if_match=b"e1")
        assert r.code == Code.CHANGED and r.etag == b"e2"
        r = c.put(srv.uri + "/doc", b"v3", if_match=b"")  # "if it exists"
        assert r.code == Code.CHANGED
        r = c.put(srv.uri + "/doc", b"new", if_none_match=True)  # it exists
        assert r.code == Code.PRECONDITION_FAILED
        assert c.delete(srv.uri + "/doc").code == Code.DELETED
        r = c.put(srv.uri + "/doc", b"v9", if_match=b"")  # does not exist now
        assert r.code == Code.PRECONDITION_FAILED
        r = c.put(srv.uri + "/doc", b"fresh", if_none_match=True)
        assert r.code == Code.CREATED and srv.doc["body"] == b"fresh"


def test_get_with_a_current_etag_is_2_03_valid(hub, srv):
    with Client(timeout=5) as c:
        r = c.get(srv.uri + "/doc", etag=b"e1")
        assert r.code == Code.VALID and r.payload == b"" and r.etag == b"e1"
        r = c.get(srv.uri + "/doc", etag=[b"old", b"e0"])
        assert r.code == Code.CONTENT and r.payload == b"v1"
        # a handler without a hook: its returned ETag is compared
        r = c.get(srv.uri + "/tagged", etag=b"tt")
        assert r.code == Code.VALID and r.payload == b"" and r.max_age == 5


def test_client_validates_what_it_keeps(hub, srv):
    with Client(timeout=5) as c:
        first = c.get(srv.uri + "/doc", validate=True)
        assert first.code == Code.CONTENT and not first.validated
        again = c.get(srv.uri + "/doc", validate=True)
        assert again.validated and again.payload == b"v1" and again.code == Code.CONTENT
        assert again.message.code == Code.VALID  # what came over the wire: no body
        c.put(srv.uri + "/doc", b"changed")
        third = c.get(srv.uri + "/doc", validate=True)
        assert not third.validated and third.payload == b"changed"


def test_location_of_a_created_resource(hub, srv):
    with Client(timeout=5) as c:
        r = c.post(srv.uri + "/things", "lamp")
        assert r.code == Code.CREATED
        assert r.location_path == ["things", "t1"] and r.location_query == ["v=1"]


def test_accept_is_honoured(hub, srv):
    with Client(timeout=5) as c:
        r = c.get(srv.uri + "/reading", accept=50)
        assert r.code == Code.CONTENT and r.json() == {"celsius": 21.5}
        r = c.get(srv.uri + "/reading", accept=0)
        assert r.code == Code.NOT_ACCEPTABLE
        r = c.get(srv.uri + "/text-only", accept=50)
        assert r.code == Code.NOT_ACCEPTABLE
        r = c.get(srv.uri + "/lies", accept=0)  # it answered JSON: not what was asked for
        assert r.code == Code.NOT_ACCEPTABLE
        r = c.get(srv.uri + "/any")
        assert r.content_format == 50
    assert srv.stats["not_acceptable"] == 3


def test_json_results_are_served_as_cbor_when_asked(hub, srv):
    cbor2 = pytest.importorskip("cbor2")
    with Client(timeout=5) as c:
        r = c.get(srv.uri + "/reading", accept=60)
        assert r.code == Code.CONTENT and r.content_format == 60
        assert cbor2.loads(r.payload) == {"celsius": 21.5}
        r = c.get(srv.uri + "/any", accept=60)
        assert r.content_format == 60 and cbor2.loads(r.payload) == {"n": 1}


def test_well_known_core_lists_resources_not_templates(hub, srv):
    with Client(timeout=5) as c:
        targets = [link.target for link in c.discover(srv.uri)]
        assert not any(":" in t.split("//", 1)[1].split("/", 1)[1] for t in targets)
        assert srv.uri + "/items/t1" not in targets
        c.post(srv.uri + "/things", "kettle")
        items = [link.target for link in c.discover(srv.uri, rt="item")]
        assert items == [srv.uri + "/items/t1"]
        raw = c.get(srv.uri + "/.well-known/core").text
        assert "/items/:name" not in raw


def test_resources_added_and_removed_at_run_time(hub, srv):
    with Client(timeout=5) as c:

        @srv.router.get("/late", rt="late")
        def late(request):
            return "here"

        assert [link.target for link in c.discover(srv.uri, rt="late")] == [srv.uri + "/late"]
        assert c.get(srv.uri + "/late").text == "here"
        srv.router.remove("GET", "/late")
        assert c.discover(srv.uri, rt="late") == []
        assert c.get(srv.uri + "/late").code == Code.NOT_FOUND


def test_discovery_filters_on_every_attribute(hub, srv):
    with Client(timeout=5) as c:
        by_ct = {link.target for link in c.discover(srv.uri, ct="5*")}
        assert srv.uri + "/reading" in by_ct and srv.uri + "/doc" not in by_ct
        assert [link.target for link in c.discover(srv.uri, href="/text*")] == [
            srv.uri + "/text-only"
        ]


def test_discover_drops_template_links_from_other_servers(hub):
    router = Router()

    @router.get("/.well-known/core", ct=40)
    def core(request):
        return Response(Code.CONTENT, b"</a>,</b/:id>,</d/*rest>", content_format=40)

    s = Server(router, host="127.0.0.1", port=0).start()
    try:
        with Client(timeout=5) as c:
            targets = [link.target for link in c.discover(f"coap://127.0.0.1:{s.port}")]
        assert targets == [f"coap://127.0.0.1:{s.port}/a"]
    finally:
        s.stop()
