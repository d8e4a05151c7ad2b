"""Tests for greencoap.uri: RFC 7252 §6 parsing, composition, options and resolution."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from greencoap.errors import CoapError, UriError
from greencoap.uri import (
    DEFAULT_PORTS,
    URI,
    compose_uri,
    is_ip_literal,
    parse_uri,
    resolve,
    uri_from_options,
)


def test_basic_parse() -> None:
    uri = parse_uri("coap://example.net:61616/a/b?x=1&y")
    assert uri == URI("coap", "example.net", 61616, ("a", "b"), ("x=1", "y"))
    assert str(uri) == "coap://example.net:61616/a/b?x=1&y"
    assert uri.geturi() == str(uri)


def test_defaults() -> None:
    assert parse_uri("coap://h").port == 5683
    assert parse_uri("coaps://h").port == 5684
    assert parse_uri("COAP://h").scheme == "coap"
    assert parse_uri("coaps://h").secure and not parse_uri("coap://h").secure


@pytest.mark.parametrize(
    "text",
    [
        # RFC 7252 §6.3: these three are equivalent.
        "coap://example.com:5683/~sensors/temp.xml",
        "coap://EXAMPLE.com/%7Esensors/temp.xml",
        "coap://EXAMPLE.com:/%7esensors/temp.xml",
    ],
)
def test_rfc7252_6_3_equivalence(text: str) -> None:
    uri = parse_uri(text)
    assert uri == URI("coap", "example.com", 5683, ("~sensors", "temp.xml"), ())
    assert str(uri) == "coap://example.com/~sensors/temp.xml"


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("coap://h", ()),
        ("coap://h/", ()),
        ("coap://h/a", ("a",)),
        ("coap://h/a/", ("a", "")),
        ("coap://h//", ("", "")),
        ("coap://h/a%2Fb/c", ("a/b", "c")),
        ("coap://h/%C3%BC", ("ü",)),
        ("coap://h/ü", ("ü",)),
    ],
)
def test_path_segments(text: str, path: tuple[str, ...]) -> None:
    assert parse_uri(text).path == path


@pytest.mark.parametrize(
    ("text", "query"),
    [
        ("coap://h/x", ()),
        ("coap://h/x?", ()),
        ("coap://h/x?a", ("a",)),
        ("coap://h/x?a&&b", ("a", "", "b")),
        ("coap://h/x?a%26b=c%3Dd", ("a&b=c=d",)),
        ("coap://h/x?q=/p?r", ("q=/p?r",)),
    ],
)
def test_query_items(text: str, query: tuple[str, ...]) -> None:
    assert parse_uri(text).query == query


def test_ipv6_literal() -> None:
    uri = parse_uri("coap://[2001:DB8::1]:5684/x")
    assert uri.host == "2001:db8::1" and uri.port == 5684
    assert str(uri) == "coap://[2001:db8::1]:5684/x"
    assert parse_uri("coap://[::1]").host == "::1"
    assert parse_uri(str(uri)) == uri


def test_ipv6_zone() -> None:
    uri = parse_uri("coap://[fe80::1%25eth0]/x")
    assert uri.host == "fe80::1%eth0"
    assert str(uri) == "coap://[fe80::1%25eth0]/x"
    assert is_ip_literal(uri.host)


def test_ipv4_and_names() -> None:
    assert parse_uri("coap://192.0.2.1/").host == "192.0.2.1"
    assert parse_uri("coap://Sensor.Example/").host == "sensor.example"


def test_default_scheme() -> None:
    assert parse_uri("localhost:5690/x", default_scheme="coap") == URI(
        "coap", "localhost", 5690, ("x",), ()
    )
    assert parse_uri("//h/x", default_scheme="coaps") == URI("coaps", "h", 5684, ("x",), ())
    assert parse_uri("coap://h/x", default_scheme="coaps").scheme == "coap"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("coap://h/x#frag", "fragments"),
        ("coap://h/#", "fragments"),
        ("http://h/x", "unsupported scheme 'http'"),
        ("coap+tcp://h/x", "unsupported scheme"),
        ("mailto:someone@example.org", "unsupported scheme"),
        ("coap:///x", "missing host"),
        ("coap://:5683/x", "missing host"),
        ("coap:x", "missing host"),
        ("/just/a/path", "not an absolute URI"),
        ("h/x", "not an absolute URI"),
        ("coap://h:port/", "bad port"),
        ("coap://h:70000/", "bad port 70000"),
        ("coap://h:-1/", "bad port"),
        ("coap://h/%zz", "bad percent-encoding"),
        ("coap://h/a%4", "bad percent-encoding"),
        ("coap://h/?%", "bad percent-encoding in query"),
        ("coap://h/%ff", "not valid UTF-8"),
        ("coap://user@h/", "userinfo"),
        ("coap://::1/", "must be in brackets"),
        ("coap://[::g]/", "bad IPv6 literal"),
        ("coap://[::1/", "unterminated IPv6 literal"),
        ("coap://[::1]x/", "after IPv6 literal"),
        ("coap://h/a b", "whitespace or a control character"),
    ],
)
def test_errors(text: str, match: str) -> None:
    with pytest.raises(UriError, match=match) as info:
        parse_uri(text)
    assert isinstance(info.value, CoapError) and isinstance(info.value, ValueError)


def test_compose() -> None:
    assert compose_uri("coap", "h") == "coap://h/"
    assert compose_uri("coap", "h", 5683, ["a b", "c/d"], ["x&y", "k=v"]) == (
        "coap://h/a%20b/c%2Fd?x%26y&k=v"
    )
    assert compose_uri("coaps", "::1", 5684) == "coaps://[::1]/"
    assert compose_uri("coaps", "::1", 5683) == "coaps://[::1]:5683/"
    with pytest.raises(UriError, match="unsupported scheme"):
        compose_uri("http", "h")
    with pytest.raises(UriError, match="missing host"):
        compose_uri("coap", "")
    with pytest.raises(UriError, match="bad port"):
        compose_uri("coap", "h", 65536)


def test_options() -> None:
    uri = parse_uri("coap://Example.net:61616/a/b?x=1")
    assert uri.options() == [(11, b"a"), (11, b"b"), (15, b"x=1")]
    assert uri.options(include_host=True) == [
        (3, b"example.net"),
        (7, b"\xf0\xb0"),  # 61616
        (11, b"a"),
        (11, b"b"),
        (15, b"x=1"),
    ]
    assert parse_uri("coap://[::1]/").options(include_host=True) == []
    assert parse_uri("coap://10.0.0.1:5683/x").options(include_host=True) == [(11, b"x")]


def test_uri_from_options() -> None:
    opts = [(3, b"Example.net"), (7, b"\x16\x34"), (11, b"a"), (11, b""), (15, b"q")]
    uri = uri_from_options(opts, "coap", "192.0.2.1", 5683)
    assert uri == URI("coap", "example.net", 5684, ("a", ""), ("q",))
    assert uri_from_options([], "coaps", "2001:db8::1", 5684).geturi() == "coaps://[2001:db8::1]/"
    assert uri_from_options([(11, b"x")], "coap", "h").port == 5683
    with pytest.raises(UriError, match="not valid UTF-8"):
        uri_from_options([(11, b"\xff")], "coap", "h")


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("d", "coap://h/a/b/d"),
        ("./d", "coap://h/a/b/d"),
        ("../d", "coap://h/a/d"),
        ("../../../d", "coap://h/d"),
        ("/x?y", "coap://h/x?y"),
        ("?q2", "coap://h/a/b/c?q2"),
        ("", "coap://h/a/b/c?q"),
        ("//other:1/p", "coap://other:1/p"),
        ("coaps://z/w", "coaps://z/w"),
        (".", "coap://h/a/b/"),
        ("..", "coap://h/a/"),
    ],
)
def test_resolve(ref: str, expected: str) -> None:
    assert str(resolve("coap://h/a/b/c?q", ref)) == expected
    assert resolve(parse_uri("coap://h/a/b/c?q"), ref) == parse_uri(expected)


def test_resolve_errors() -> None:
    with pytest.raises(UriError, match="fragments"):
        resolve("coap://h/a", "b#c")
    with pytest.raises(UriError, match="unsupported scheme"):
        resolve("coap://h/a", "http://h/")


def test_is_ip_literal() -> None:
    assert is_ip_literal("127.0.0.1") and is_ip_literal("::1") and is_ip_literal("[::1]")
    assert not is_ip_literal("localhost") and not is_ip_literal("1.2.3")


segment_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)


@given(
    st.lists(segment_text, max_size=5).filter(lambda p: p != [""]),
    st.lists(segment_text, max_size=4).filter(lambda q: q != [""]),
    st.sampled_from(["coap", "coaps"]),
    st.integers(0, 65535),
)
def test_percent_encoding_round_trip(
    path: list[str], query: list[str], scheme: str, port: int
) -> None:
    text = compose_uri(scheme, "h.example", port, path, query)
    uri = parse_uri(text)
    assert uri.path == tuple(path)
    assert uri.query == tuple(query)
    assert uri.port == port
    assert str(uri) == text
    # And through options, as a server would see it.
    default = DEFAULT_PORTS[scheme]
    assert uri_from_options(uri.options(include_host=True), scheme, "192.0.2.1", default) == uri
