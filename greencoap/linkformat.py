"""CoRE Link Format documents (layer 1: codec, RFC 6690).

Holds :class:`Link` (one link-value: a target URI-reference and its ordered
link parameters), :func:`parse_link_format` (a strict parser of the RFC 6690
§2 grammar, the payload of ``/.well-known/core`` with content format 40),
:func:`format_link_format` (the inverse), :func:`match_filter` and
:func:`filter_links` (the §4.1 query filtering a server applies to
``/.well-known/core?rt=...``) and :class:`LinkFormatError`.

The grammar, with parmname and ptoken as RFC 6690 / RFC 5988 define them::

    Link            = [ link-value *( "," link-value ) ]
    link-value      = "<" URI-Reference ">" *( ";" link-param )
    link-param      = parmname [ "=" ( ptoken / quoted-string ) ]

The parser is strict except for one thing real servers need: optional
whitespace (spaces, tabs, newlines) around ``,`` and ``;`` and at the ends of
the document.  Pure data: no I/O, imports only other layer-1 modules.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import CoapError
from .uri import resolve as _resolve_uri

__all__ = [
    "Link",
    "LinkFormatError",
    "filter_links",
    "format_link_format",
    "match_filter",
    "parse_link_format",
]


class LinkFormatError(CoapError, ValueError):
    """Text that is not a well-formed CoRE link-format document (RFC 6690 §2).

    ``offset`` is the character offset (into the decoded text) where parsing
    failed, or ``None`` when the problem is not tied to a position.
    """

    def __init__(self, message: str, offset: int | None = None) -> None:
        super().__init__(message)
        self.offset = offset


# RFC 5988 parmname (an RFC 2616 token minus "*", as RFC 6690 uses it).
_PARMNAME_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$&+-.^_`|~"
)
# RFC 6690 ptokenchar.
_PTOKEN_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'()*+-./:<=>?@[]^_`{|}~"
)
# RFC 3986 URI-reference characters (unreserved, reserved and "%" of pct-encoded).
_URIREF_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~:/?#[]@!$&'()*+,;=%"
)
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_WHITESPACE = " \t\r\n"
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")

#: Parameters whose value is a space-separated list (RFC 6690 §3, RFC 7252 §7.2.1).
#: Filtering compares a query value against each element of these.
MULTI_VALUED = frozenset({"rt", "if", "rel", "ct"})

#: Parameters that :meth:`Link.to_text` always writes as quoted strings, as
#: the RFC 6690 examples and common servers (libcoap) do.
_ALWAYS_QUOTED = frozenset({"rt", "if", "rel", "anchor", "title"})


def _is_control(ch: str) -> bool:
    """True for C0 controls except HTAB, and DEL: never allowed in a quoted-string."""
    return (ch < " " and ch != "\t") or ch == "\x7f"


def _check_target(target: str) -> None:
    """Raise unless ``target`` can sit between ``<`` and ``>`` as a URI-reference."""
    for i, ch in enumerate(target):
        if ch not in _URIREF_CHARS:
            raise LinkFormatError(
                f"character {ch!r} at position {i} is not allowed in a URI-reference "
                f"(percent-encode it): {target!r}"
            )
    bad = _BAD_PERCENT.search(target)
    if bad:
        raise LinkFormatError(f"bad percent-encoding at position {bad.start()}: {target!r}")


def _check_name(name: str) -> str:
    """Validate a parameter name and return it lowercased (names are case-insensitive)."""
    if not name or any(ch not in _PARMNAME_CHARS for ch in name):
        raise LinkFormatError(f"bad link parameter name {name!r}")
    return name.lower()


def _attr_value(value: Any) -> str | None:
    """Turn a keyword-argument value of :class:`Link` into a parameter value."""
    if value is True:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Iterable) and not isinstance(value, bytes | bytearray):
        return " ".join(_attr_value_item(v) for v in value)
    raise TypeError(f"unsupported link parameter value {value!r}")


def _attr_value_item(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise TypeError(f"unsupported link parameter list element {value!r}")


def _quote(value: str) -> str:
    """``value`` as an RFC 2616 quoted-string (backslash before ``"`` and ``\\``)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Link:
    """One link-value of a link-format document: a target and its parameters.

    ``target`` is the URI-reference exactly as written between ``<`` and
    ``>`` (usually a path such as ``"/sensors/temp"``).  ``params`` is the
    ordered list of ``(name, value)`` pairs; names are lowercase, ``value``
    is ``None`` for a parameter written without ``=`` (such as ``obs``).
    Repeated parameters are kept, in order.

    Build one from keyword arguments: a trailing ``_`` is dropped (``if_``
    is ``if``), ``True`` gives a valueless flag, ``None``/``False`` omit the
    parameter, ints become decimal text and lists become space-separated::

        Link("/sensors/temp", rt="temperature-c", if_="sensor", ct=[0, 41], obs=True)

    Names that are not identifiers (``"x-unit"``) go in the positional
    ``params`` list, which comes before the keyword ones.
    """

    __slots__ = ("target", "params")

    target: str
    params: list[tuple[str, str | None]]

    def __init__(
        self,
        target: str,
        params: Iterable[tuple[str, str | None]] = (),
        /,
        **attrs: Any,
    ) -> None:
        if not isinstance(target, str):
            raise TypeError(f"link target must be a str, not {type(target).__name__}")
        _check_target(target)
        self.target = target
        self.params = []
        for name, value in params:
            self._append(name, value)
        for key, raw in attrs.items():
            if raw is None or raw is False:
                continue
            self._append(key[:-1] if key.endswith("_") else key, _attr_value(raw))

    def _append(self, name: str, value: str | None) -> None:
        if value is not None:
            if not isinstance(value, str):
                raise TypeError(f"link parameter {name!r} value must be a str or None")
            for i, ch in enumerate(value):
                if _is_control(ch):
                    raise LinkFormatError(
                        f"control character {ch!r} at position {i} in value of {name!r}"
                    )
        self.params.append((_check_name(name), value))

    # -- generic access ---------------------------------------------------

    def __contains__(self, name: object) -> bool:
        """True if a parameter of this (case-insensitive) name is present."""
        return isinstance(name, str) and any(n == name.lower() for n, _ in self.params)

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of parameter ``name``, ``""`` if it has no value, else ``default``."""
        name = name.lower()
        for n, v in self.params:
            if n == name:
                return "" if v is None else v
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value of parameter ``name`` in order (``""`` for a valueless one)."""
        name = name.lower()
        return ["" if v is None else v for n, v in self.params if n == name]

    def _split_all(self, name: str) -> list[str]:
        return [item for value in self.get_all(name) for item in value.split()]

    # -- well-known attributes (RFC 6690 §3, RFC 7252 §7.2, RFC 7641 §6) -----

    @property
    def href(self) -> str:
        """The target URI-reference (the name §4.1 filtering uses for it)."""
        return self.target

    @property
    def rt(self) -> list[str]:
        """Resource types: every space-separated ``rt`` value, across all ``rt`` params."""
        return self._split_all("rt")

    @property
    def if_(self) -> list[str]:
        """Interface descriptions: every space-separated ``if`` value."""
        return self._split_all("if")

    @property
    def rel(self) -> list[str]:
        """Relation types: every space-separated ``rel`` value."""
        return self._split_all("rel")

    @property
    def ct(self) -> list[int]:
        """Content-format numbers from ``ct`` (space-separated; RFC 7252 §7.2.1).

        Raises :class:`LinkFormatError` if one is not a decimal 0..65535.
        """
        out = []
        for item in self._split_all("ct"):
            if not (item.isascii() and item.isdigit()) or int(item) > 65535:
                raise LinkFormatError(f"bad ct value {item!r}: not a content-format number")
            out.append(int(item))
        return out

    @property
    def sz(self) -> int | None:
        """The ``sz`` (maximum size estimate) in bytes, or ``None``.

        Raises :class:`LinkFormatError` if it is not a decimal number.
        """
        value = self.get("sz")
        if value is None:
            return None
        if not (value.isascii() and value.isdigit()):
            raise LinkFormatError(f"bad sz value {value!r}: not a decimal number")
        return int(value)

    @property
    def obs(self) -> bool:
        """True if the resource is marked observable (``obs``, RFC 7641 §6)."""
        return "obs" in self

    @property
    def title(self) -> str | None:
        """The human-readable ``title``, or ``None``."""
        return self.get("title")

    @property
    def anchor(self) -> str | None:
        """The ``anchor`` (context URI-reference overriding the document's), or ``None``."""
        return self.get("anchor")

    # -- URIs and text ----------------------------------------------------

    def resolve(self, base: str) -> str:
        """The absolute URI of this link's target, resolved against ``base`` (RFC 3986 §5).

        ``base`` is usually the URI the document was fetched from (or just
        ``coap://host:port``).  A target that already has a scheme is returned
        unchanged.  Raises :class:`~greencoap.errors.UriError` if the result
        is not a usable coap/coaps URI.  The result is in the normal form of
        :mod:`greencoap.uri`, so a default port is left out.
        """
        if _SCHEME.match(self.target):
            return self.target
        return str(_resolve_uri(base, self.target))

    def to_text(self) -> str:
        """This link as one link-value (``</x>;rt="a";ct=0;obs``)."""
        parts = [f"<{self.target}>"]
        for name, value in self.params:
            if value is None:
                parts.append(f";{name}")
            elif name in _ALWAYS_QUOTED or not value or any(c not in _PTOKEN_CHARS for c in value):
                parts.append(f";{name}={_quote(value)}")
            else:
                parts.append(f";{name}={value}")
        return "".join(parts)

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        if not self.params:
            return f"Link({self.target!r})"
        return f"Link({self.target!r}, {self.params!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Link):
            return NotImplemented
        return self.target == other.target and self.params == other.params

    __hash__ = None  # type: ignore[assignment]  # mutable: params may be edited


class _Parser:
    """A cursor over one document; each method consumes one grammar element."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, expected: str) -> LinkFormatError:
        if self.pos >= len(self.text):
            found = "end of input"
        else:
            found = repr(self.text[self.pos])
        return LinkFormatError(f"expected {expected} at offset {self.pos}, found {found}", self.pos)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in _WHITESPACE:
            self.pos += 1

    def document(self) -> list[Link]:
        links: list[Link] = []
        self.skip_ws()
        if self.pos == len(self.text):
            return links
        while True:
            links.append(self.link_value())
            self.skip_ws()
            if self.pos == len(self.text):
                return links
            if self.peek() != ",":
                raise self.error("',' or ';' or end of input")
            self.pos += 1
            self.skip_ws()

    def link_value(self) -> Link:
        if self.peek() != "<":
            raise self.error("'<'")
        start = self.pos + 1
        end = self.text.find(">", start)
        if end < 0:
            raise LinkFormatError(
                f"unterminated '<' at offset {self.pos}: no '>' follows", self.pos
            )
        for i in range(start, end):
            if self.text[i] not in _URIREF_CHARS:
                self.pos = i
                raise self.error("a URI-reference character or '>'")
        target = self.text[start:end]
        bad = _BAD_PERCENT.search(target)
        if bad:
            self.pos = start + bad.start()
            raise self.error("'%' followed by two hex digits")
        self.pos = end + 1
        link = Link(target)
        while True:
            save = self.pos
            self.skip_ws()
            if self.peek() != ";":
                self.pos = save
                return link
            self.pos += 1
            self.skip_ws()
            link.params.append(self.link_param())

    def link_param(self) -> tuple[str, str | None]:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in _PARMNAME_CHARS:
            self.pos += 1
        if self.pos == start:
            raise self.error("a parameter name")
        name = self.text[start : self.pos].lower()
        if self.peek() != "=":
            return name, None
        self.pos += 1
        if self.peek() == '"':
            return name, self.quoted_string()
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in _PTOKEN_CHARS:
            self.pos += 1
        if self.pos == start:
            raise self.error(f"a value (token or quoted-string) for parameter {name!r}")
        return name, self.text[start : self.pos]

    def quoted_string(self) -> str:
        opening = self.pos
        self.pos += 1
        out: list[str] = []
        text = self.text
        while self.pos < len(text):
            ch = text[self.pos]
            if ch == '"':
                self.pos += 1
                return "".join(out)
            if ch == "\\":
                self.pos += 1
                if self.pos >= len(text):
                    break
                ch = text[self.pos]
            if _is_control(ch):
                raise self.error("a quoted-string character (no control characters)")
            out.append(ch)
            self.pos += 1
        raise LinkFormatError(f"unterminated quoted-string opened at offset {opening}", opening)


def parse_link_format(text: str | bytes) -> list[Link]:
    """Parse a link-format document (RFC 6690 §2) into its links, in order.

    ``bytes`` must be UTF-8.  Empty (or all-whitespace) input gives ``[]``.
    Anything outside the grammar raises :class:`LinkFormatError` naming the
    offset and what was expected there.
    """
    if isinstance(text, bytes | bytearray | memoryview):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LinkFormatError(
                f"link-format is not valid UTF-8 (byte offset {exc.start})", exc.start
            ) from None
    if not isinstance(text, str):
        raise TypeError(f"link-format must be str or bytes, not {type(text).__name__}")
    return _Parser(text).document()


def format_link_format(links: Iterable[Link]) -> str:
    """Serialise links as one link-format document: link-values joined by ``,``."""
    return ",".join(link.to_text() for link in links)


def match_filter(link: Link, name: str, value: str | None) -> bool:
    """Whether ``link`` passes one RFC 6690 §4.1 query filter ``name=value``.

    A ``value`` ending in ``*`` matches by prefix; otherwise it must be
    equal.  ``href`` is matched against the target.  For the space-separated
    attributes (``rt``, ``if``, ``rel``, ``ct``) each element is tried
    separately; other attributes compare whole values.  Any of a repeated
    parameter may match.  ``value=None`` (a query item with no ``=``) only
    asks for the parameter to be present.
    """
    name = name.lower()
    if name == "href":
        candidates = [link.target]
    elif name in MULTI_VALUED:
        candidates = link._split_all(name)
    else:
        candidates = link.get_all(name)
    if value is None:
        return name == "href" or name in link
    if value.endswith("*"):
        prefix = value[:-1]
        if name in MULTI_VALUED and not prefix and name in link:
            return True  # "rt=*": present, even with an empty value
        return any(c.startswith(prefix) for c in candidates)
    return value in candidates


def filter_links(
    links: Iterable[Link],
    query: Mapping[str, str | None] | Iterable[tuple[str, str | None] | str],
) -> list[Link]:
    """The links that pass every filter in ``query`` (RFC 6690 §4.1).

    ``query`` is a mapping, a list of ``(name, value)`` pairs, or a list of
    Uri-Query strings such as ``"rt=temp*"`` (as in ``URI.query``).  An empty
    query keeps every link.
    """
    items = query.items() if isinstance(query, Mapping) else query
    filters: list[tuple[str, str | None]] = []
    for item in items:
        if isinstance(item, str):
            name, sep, value = item.partition("=")
            filters.append((name, value if sep else None))
        else:
            filters.append((item[0], item[1]))
    return [link for link in links if all(match_filter(link, n, v) for n, v in filters)]
