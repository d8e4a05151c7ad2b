"""Router: static routes, :params, *rest wildcards, methods, errors, links."""

from __future__ import annotations

import pytest

from greencoap import Code, Router


def make():
    r = Router()

    @r.get("/a/b", rt="x")
    def ab(request):
        return "ab"

    @r.put("/a/b")
    def ab_put(request):
        return None

    @r.get("/users/:id/items/:item")
    def item(request, id, item):
        return f"{id}/{item}"

    @r.get("/files/*path")
    def files(request, path):
        return path

    for deco in (r.fetch, r.patch, r.ipatch, r.post, r.delete):
        deco("/m")(lambda request: None)
    return r


def test_static_dynamic_and_wildcard_matching():
    r = make()
    route, params = r.resolve(Code.GET, ("a", "b"))
    assert route.path == "/a/b" and params == {}
    assert r.resolve_raw(Code.PUT, (b"a", b"b"))[0].handler.__name__ == "ab_put"
    assert r.resolve(Code.GET, ("users", "7", "items", "x"))[1] == {"id": "7", "item": "x"}
    assert r.resolve(Code.GET, ("files", "x", "y.txt"))[1] == {"path": "x/y.txt"}
    assert r.resolve(Code.GET, ("files",))[1] == {"path": ""}
    for m in (Code.FETCH, Code.PATCH, Code.IPATCH, Code.POST, Code.DELETE):
        assert r.resolve(m, ("m",))[0].method == m


def test_not_found_and_method_not_allowed():
    r = make()
    with pytest.raises(LookupError) as e:
        r.resolve(Code.GET, ("nope",))
    assert e.value.args[0] == Code.NOT_FOUND
    with pytest.raises(LookupError) as e:
        r.resolve(Code.DELETE, ("a", "b"))
    assert e.value.args[0] == Code.METHOD_NOT_ALLOWED
    with pytest.raises(LookupError) as e:
        r.resolve(Code.POST, ("users", "1", "items", "2"))
    assert e.value.args[0] == Code.METHOD_NOT_ALLOWED
    with pytest.raises(UnicodeDecodeError):
        r.resolve_raw(Code.GET, (b"\xff",))


def test_registration_errors():
    r = make()
    with pytest.raises(ValueError):
        r.get("/a/b")(lambda request: None)  # routed twice
    with pytest.raises(ValueError):
        r.get("/x/*rest/more")(lambda request: None)  # wildcard not last
    with pytest.raises(ValueError):
        r.add(Code.CONTENT, "/y", lambda request: None)  # not a method


def test_links_merge_methods_and_mark_observables():
    r = make()

    @r.get("/clock", rt="clock")
    def clock(request):
        yield "t"

    links = {link.target: link for link in r.links()}
    assert links["/a/b"].rt == ["x"]
    assert links["/clock"].obs and not links["/a/b"].obs
    # a template is no resource: not listed without an enumeration hook
    assert not any(":" in t for t in links) and len(links) == len(set(links))


def test_template_routes_are_listed_through_their_enumeration_hook():
    r = Router()
    users = ["ann", "bo b"]

    @r.get("/users/:id", rt="user", enumerate=lambda: [{"id": u} for u in users])
    def user(request, id):
        return id

    @r.get("/files/*path", enumerate=lambda: [{"path": "a/b.txt"}])
    def files(request, path):
        return path

    targets = [link.target for link in r.links()]
    assert targets == ["/users/ann", "/users/bo%20b", "/files/a/b.txt"]
    assert all("enumerate" not in link for link in r.links())
    users.append("cy")
    assert "/users/cy" in [link.target for link in r.links()]  # run-time changes show


def test_routes_can_be_removed():
    r = make()
    r.remove("GET", "/a/b")
    with pytest.raises(LookupError):
        r.resolve(Code.GET, ("a", "b"))
    with pytest.raises(KeyError):
        r.remove("GET", "/a/b")
