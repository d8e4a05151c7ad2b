"""Tests for greencoap.linkformat: RFC 6690 parsing, serialising, filtering and resolution."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from greencoap.errors import CoapError, UriError
from greencoap.linkformat import (
    Link,
    LinkFormatError,
    filter_links,
    format_link_format,
    match_filter,
    parse_link_format,
)

# -- RFC 6690 §5 examples ---------------------------------------------------

RFC_EXAMPLES = [
    '</sensors/temp>;if="sensor",</sensors/light>;if="sensor"',
    "</sensors>;ct=40",
    '</sensors/temp>;rt="temperature-c";if="sensor",</sensors/light>;rt="light-lux";if="sensor"',
    '<http://www.example.com/sensors/t123>;anchor="/sensors/temp";rel="describedby"',
    '</t>;anchor="/sensors/temp";rel="alternate"',
]


def test_rfc6690_interfaces() -> None:
    links = parse_link_format(RFC_EXAMPLES[0])
    assert links == [
        Link("/sensors/temp", [("if", "sensor")]),
        Link("/sensors/light", [("if", "sensor")]),
    ]
    assert [link.if_ for link in links] == [["sensor"], ["sensor"]]
    assert links[0].href == links[0].target == "/sensors/temp"


def test_rfc6690_ct() -> None:
    (link,) = parse_link_format("</sensors>;ct=40")
    assert link.target == "/sensors"
    assert link.ct == [40]
    assert link.get("ct") == "40"
    assert link.rt == [] and link.if_ == [] and link.sz is None and not link.obs


def test_rfc6690_rt_and_if() -> None:
    temp, light = parse_link_format(RFC_EXAMPLES[2])
    assert temp.rt == ["temperature-c"] and temp.if_ == ["sensor"]
    assert light.rt == ["light-lux"] and light.if_ == ["sensor"]
    assert temp.params == [("rt", "temperature-c"), ("if", "sensor")]


def test_rfc6690_anchor_rel() -> None:
    (link,) = parse_link_format(RFC_EXAMPLES[3])
    assert link.target == "http://www.example.com/sensors/t123"
    assert link.anchor == "/sensors/temp"
    assert link.rel == ["describedby"]
    (alt,) = parse_link_format(RFC_EXAMPLES[4])
    assert alt.target == "/t" and alt.anchor == "/sensors/temp" and alt.rel == ["alternate"]


@pytest.mark.parametrize("text", RFC_EXAMPLES)
def test_rfc_examples_serialise_back_verbatim(text: str) -> None:
    assert format_link_format(parse_link_format(text)) == text


# -- real servers -----------------------------------------------------------

LIBCOAP = (
    '</>;title="General Info";ct=0,'
    '</time>;if="clock";rt="ticks";title="Internal Clock";ct=0;obs,'
    "</async>;ct=0"
)


def test_libcoap_well_known_core() -> None:
    root, time, async_ = parse_link_format(LIBCOAP)
    assert root.target == "/" and root.title == "General Info" and root.ct == [0]
    assert time.if_ == ["clock"] and time.rt == ["ticks"]
    assert time.title == "Internal Clock" and time.ct == [0] and time.obs
    assert time.params[-1] == ("obs", None)
    assert async_ == Link("/async", ct=0)
    assert format_link_format([root, time, async_]) == LIBCOAP


def test_libcoap_with_newlines_and_spaces() -> None:
    text = (
        '</>;title="General Info";ct=0,\n'
        '</time> ; if="clock" ;\trt="ticks";obs ,\r\n'
        "</async>;ct=0\n"
    )
    links = parse_link_format(text)
    assert [link.target for link in links] == ["/", "/time", "/async"]
    assert links[1].params == [("if", "clock"), ("rt", "ticks"), ("obs", None)]


def test_aiocoap_shape() -> None:
    text = "</.well-known/core>;ct=40,</other/block>,</other/separate>,</time>;obs"
    links = parse_link_format(text)
    assert links == [
        Link("/.well-known/core", ct=40),
        Link("/other/block"),
        Link("/other/separate"),
        Link("/time", obs=True),
    ]
    assert format_link_format(links) == text


def test_bytes_input() -> None:
    assert parse_link_format(b"</a>;ct=0") == [Link("/a", ct=0)]
    assert parse_link_format(bytearray(b"</a>")) == [Link("/a")]
    (link,) = parse_link_format('</a>;title="caf\u00e9"'.encode())
    assert link.title == "caf\u00e9"
    with pytest.raises(LinkFormatError, match="UTF-8"):
        parse_link_format(b'</a>;title="\xff"')


@pytest.mark.parametrize("text", ["", " ", "\r\n", b""])
def test_empty(text: str | bytes) -> None:
    assert parse_link_format(text) == []


def test_empty_target() -> None:
    assert parse_link_format("<>") == [Link("")]


# -- values -----------------------------------------------------------------


def test_multiple_values_and_ct_list() -> None:
    (link,) = parse_link_format('</s>;rt="a b";rt=c;ct="0 41";ct=50;rel=x;rel="y z";if="p q"')
    assert link.rt == ["a", "b", "c"]
    assert link.get("rt") == "a b"
    assert link.get_all("rt") == ["a b", "c"]
    assert link.ct == [0, 41, 50]
    assert link.rel == ["x", "y", "z"]
    assert link.if_ == ["p", "q"]


def test_quoted_string_escapes_and_commas() -> None:
    text = r'</a>;title="say \"hi\", then; \\leave",</b>;title="x,y"'
    a, b = parse_link_format(text)
    assert a.title == 'say "hi", then; \\leave'
    assert b.title == "x,y"
    assert parse_link_format(format_link_format([a, b])) == [a, b]
    assert r"\"hi\"" in a.to_text()


def test_quoted_escape_of_ordinary_char() -> None:
    (link,) = parse_link_format(r'</a>;title="\a\b"')
    assert link.title == "ab"


def test_param_names_case_insensitive() -> None:
    (link,) = parse_link_format('</a>;RT="x";Ct=0;OBS')
    assert link.params == [("rt", "x"), ("ct", "0"), ("obs", None)]
    assert link.get("RT") == "x" and "Obs" in link and link.obs


def test_ptoken_values() -> None:
    (link,) = parse_link_format("</a>;foo=<b>;x=a/b?c=d&e#f[1]{2}|~")
    assert link.get("foo") == "<b>"
    assert link.get("x") == "a/b?c=d&e#f[1]{2}|~"


def test_get_missing_and_flags() -> None:
    link = Link("/a", obs=True, sz=1024)
    assert link.get("obs") == "" and link.get("nope") is None and link.get("nope", "d") == "d"
    assert link.get_all("nope") == []
    assert link.sz == 1024
    assert "title" not in link and link.title is None and link.anchor is None


def test_bad_numbers_in_properties() -> None:
    with pytest.raises(LinkFormatError, match="ct"):
        _ = Link("/a", ct="text/plain").ct
    with pytest.raises(LinkFormatError, match="ct"):
        _ = Link("/a", ct=70000).ct
    with pytest.raises(LinkFormatError, match="sz"):
        _ = Link("/a", sz="big").sz


# -- constructor, serialisation, repr -----------------------------------------


def test_keyword_constructor() -> None:
    link = Link("/sensors/temp", rt="temperature-c", if_="sensor", ct=0, obs=True, title="Temp")
    assert link.params == [
        ("rt", "temperature-c"),
        ("if", "sensor"),
        ("ct", "0"),
        ("obs", None),
        ("title", "Temp"),
    ]
    assert link.to_text() == '</sensors/temp>;rt="temperature-c";if="sensor";ct=0;obs;title="Temp"'
    assert str(link) == link.to_text()


def test_constructor_lists_and_omissions() -> None:
    link = Link("/a", [("x-unit", "deg'C")], rt=["a", "b"], ct=(0, 41), obs=False, sz=None)
    assert link.params == [("x-unit", "deg'C"), ("rt", "a b"), ("ct", "0 41")]
    assert link.to_text() == '</a>;x-unit=deg\'C;rt="a b";ct="0 41"'
    assert Link("/a", [("RT", "x")]).params == [("rt", "x")]


def test_constructor_rejects_bad_input() -> None:
    with pytest.raises(LinkFormatError):
        Link("/a b")
    with pytest.raises(LinkFormatError):
        Link("/a>")
    with pytest.raises(LinkFormatError):
        Link("/%zz")
    with pytest.raises(LinkFormatError):
        Link("/a", [("bad name", "x")])
    with pytest.raises(LinkFormatError):
        Link("/a", [("", "x")])
    with pytest.raises(LinkFormatError):
        Link("/a", title="line\nbreak")
    with pytest.raises(TypeError):
        Link("/a", ct=1.5)
    with pytest.raises(TypeError):
        Link(b"/a")  # type: ignore[arg-type]


def test_serialisation_quoting() -> None:
    assert Link("/a", foo="bar").to_text() == "</a>;foo=bar"
    assert Link("/a", foo="").to_text() == '</a>;foo=""'
    assert Link("/a", foo="a,b").to_text() == '</a>;foo="a,b"'
    assert Link("/a", foo="a;b").to_text() == '</a>;foo="a;b"'
    assert Link("/a", foo='q"\\').to_text() == '</a>;foo="q\\"\\\\"'
    assert format_link_format([]) == ""
    assert format_link_format([Link("/a"), Link("/b")]) == "</a>,</b>"


def test_repr_and_eq() -> None:
    link = Link("/a", rt="x")
    assert repr(link) == "Link('/a', [('rt', 'x')])"
    assert repr(Link("/a")) == "Link('/a')"
    assert eval(repr(link)) == link  # noqa: S307 - our own repr
    assert link != Link("/a", rt="y")
    assert link != Link("/b", rt="x")
    assert Link("/a", rt="x", ct=0) != Link("/a", ct=0, rt="x")  # order is kept
    assert link != "</a>;rt=x"


def test_error_is_coap_and_value_error() -> None:
    assert issubclass(LinkFormatError, CoapError)
    assert issubclass(LinkFormatError, ValueError)


# -- malformed input ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "offset", "fragment"),
    [
        ("/a>", 0, "expected '<'"),
        ("</a>,/b>", 5, "expected '<'"),
        ("</a", 0, "unterminated '<'"),
        ('</a>;title="abc', 11, "unterminated quoted-string"),
        ("</a>;ti@tle=x", 7, "expected ',' or ';'"),
        ("</a>;=x", 5, "parameter name"),
        ("</a>;", 5, "parameter name"),
        ("</a>,", 5, "expected '<'"),
        ("</a>,\n", 6, "expected '<'"),
        ("</a>garbage", 4, "expected ',' or ';'"),
        ("</a>;ct=0 x", 10, "expected ',' or ';'"),
        ("</a>;ct=", 8, "a value"),
        ("</a>;ct=,</b>", 8, "a value"),
        ("</a>;rt=a b", 10, "expected ',' or ';'"),
        ("</a>;rt = x", 8, "expected ',' or ';'"),
        ("</a b>", 3, "URI-reference"),
        ('</a">', 3, "URI-reference"),
        ("</%zz>", 2, "'%' followed by two hex digits"),
        ("</a>,,</b>", 5, "expected '<'"),
        (",</a>", 0, "expected '<'"),
        ('</a>;title="x\ny"', 13, "control"),
        ('</a>;title="x\\', 11, "unterminated quoted-string"),
        ("</caf\u00e9>", 5, "URI-reference"),
    ],
)
def test_malformed(text: str, offset: int, fragment: str) -> None:
    with pytest.raises(LinkFormatError) as info:
        parse_link_format(text)
    assert fragment in str(info.value)
    assert info.value.offset == offset
    assert f"offset {offset}" in str(info.value)


def test_type_error_for_other_input() -> None:
    with pytest.raises(TypeError):
        parse_link_format(42)  # type: ignore[arg-type]


# -- property tests -----------------------------------------------------------

_TARGET = st.text(alphabet="/abcdefghijklmnopqrstuvwxyz0123456789_.-", max_size=20)
_NAME = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$&+-.^_`|~",
    min_size=1,
    max_size=8,
)
_VALUE = st.none() | st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs")),
    max_size=20,
)
_LINK = st.builds(Link, _TARGET, st.lists(st.tuples(_NAME, _VALUE), max_size=5))


@given(st.lists(_LINK, max_size=6))
def test_round_trip(links: list[Link]) -> None:
    text = format_link_format(links)
    assert parse_link_format(text) == links
    assert parse_link_format(text.encode("utf-8")) == links
    # Whitespace around separators does not change the meaning.
    spaced = ",\n ".join(link.to_text() for link in links)
    assert parse_link_format(spaced) == links


@given(st.text(max_size=60))
def test_random_text_only_raises_link_format_error(text: str) -> None:
    try:
        links = parse_link_format(text)
    except LinkFormatError:
        return
    assert parse_link_format(format_link_format(links)) == links


_GRAMMAR_SOUP = st.text(alphabet='<>;,="\\ /ab\n%0*', max_size=40)


@given(_GRAMMAR_SOUP)
def test_grammar_soup_only_raises_link_format_error(text: str) -> None:
    try:
        links = parse_link_format(text)
    except LinkFormatError:
        return
    assert parse_link_format(format_link_format(links)) == links


@given(st.binary(max_size=60))
def test_random_bytes_only_raise_link_format_error(data: bytes) -> None:
    try:
        parse_link_format(data)
    except LinkFormatError:
        pass


# -- filtering (RFC 6690 §4.1) -----------------------------------------------

DOC = parse_link_format(
    '</sensors/temp>;rt="temperature-c";if="sensor";ct=0,'
    '</sensors/light>;rt="light-lux core.s";if="sensor";ct="0 41";obs,'
    '</actuators/led>;rt="switch";if="core.a",'
    '</t>;anchor="/sensors/temp";rel="alternate"'
)


def _targets(links: list[Link]) -> list[str]:
    return [link.target for link in links]


def test_filter_rt_prefix() -> None:
    assert _targets(filter_links(DOC, {"rt": "temp*"})) == ["/sensors/temp"]
    assert _targets(filter_links(DOC, {"rt": "core.*"})) == ["/sensors/light"]
    assert _targets(filter_links(DOC, {"rt": "*"})) == [
        "/sensors/temp",
        "/sensors/light",
        "/actuators/led",
    ]


def test_filter_rt_exact_matches_any_element() -> None:
    assert _targets(filter_links(DOC, [("rt", "core.s")])) == ["/sensors/light"]
    assert _targets(filter_links(DOC, [("rt", "light")])) == []
    assert _targets(filter_links(DOC, [("rt", "temperature")])) == []


def test_filter_href_prefix_and_exact() -> None:
    assert _targets(filter_links(DOC, {"href": "/sensors/*"})) == [
        "/sensors/temp",
        "/sensors/light",
    ]
    assert _targets(filter_links(DOC, {"href": "/t"})) == ["/t"]
    assert _targets(filter_links(DOC, {"href": "/sensors"})) == []


def test_filter_exact_if_and_ct() -> None:
    assert _targets(filter_links(DOC, {"if": "sensor"})) == ["/sensors/temp", "/sensors/light"]
    assert _targets(filter_links(DOC, {"if": "core.a"})) == ["/actuators/led"]
    assert _targets(filter_links(DOC, {"ct": "41"})) == ["/sensors/light"]
    assert _targets(filter_links(DOC, {"anchor": "/sensors/temp"})) == ["/t"]
    assert _targets(filter_links(DOC, {"anchor": "/sensors"})) == []


def test_filter_no_match_and_combinations() -> None:
    assert filter_links(DOC, {"rt": "humidity"}) == []
    assert filter_links(DOC, {"title": "x*"}) == []
    assert _targets(filter_links(DOC, ["if=sensor", "ct=0"])) == [
        "/sensors/temp",
        "/sensors/light",
    ]
    assert _targets(filter_links(DOC, ["if=sensor", "obs"])) == ["/sensors/light"]
    assert filter_links(DOC, {}) == DOC


def test_match_filter_directly() -> None:
    link = DOC[1]
    assert match_filter(link, "RT", "light-lux")
    assert match_filter(link, "rt", "light*")
    assert not match_filter(link, "rt", "lux*")
    assert match_filter(link, "obs", None)
    assert not match_filter(DOC[0], "obs", None)
    assert match_filter(link, "href", "/sensors/light")
    assert match_filter(link, "href", "*")


# -- resolution ------------------------------------------------------------------


def test_resolve() -> None:
    temp = Link("/sensors/temp")
    assert temp.resolve("coap://[::1]:5683") == "coap://[::1]/sensors/temp"
    assert temp.resolve("coap://[::1]:61616") == "coap://[::1]:61616/sensors/temp"
    assert temp.resolve("coap://example.com/.well-known/core") == (
        "coap://example.com/sensors/temp"
    )
    assert Link("light").resolve("coap://h/sensors/temp") == "coap://h/sensors/light"
    assert Link("../x").resolve("coaps://h:1/a/b/c") == "coaps://h:1/a/x"
    assert Link("").resolve("coap://h/a") == "coap://h/a"


def test_resolve_absolute_target_unchanged() -> None:
    (link,) = parse_link_format(RFC_EXAMPLES[3])
    assert link.resolve("coap://[::1]") == "http://www.example.com/sensors/t123"
    assert Link("coap://other:9/x").resolve("coap://h/") == "coap://other:9/x"


def test_resolve_bad_base() -> None:
    with pytest.raises(UriError):
        Link("/a").resolve("not a uri")
