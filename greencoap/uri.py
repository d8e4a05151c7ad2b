"""``coap://`` and ``coaps://`` URIs and their mapping to options (layer 1: codec, RFC 7252 §6).

Holds :class:`URI` (scheme, host, port, decoded path segments and query
items), :func:`parse_uri` (the §6.4 decomposition rules, strict),
:func:`compose_uri` and :func:`uri_from_options` (the §6.5 composition rules),
:func:`resolve` for relative references (RFC 3986 §5.2, as used for
Location-Path and links) and :func:`is_ip_literal`.

Path segments and query items are stored percent-decoded, exactly as they
travel in Uri-Path / Uri-Query options; percent-encoding happens only when a
URI is turned into text.
"""

from __future__ import annotations

import ipaddress
import re
from typing import NamedTuple
from urllib.parse import quote, unquote_to_bytes

from .errors import UriError
from .options import OptionNumber, encode_uint

__all__ = [
    "DEFAULT_PORTS",
    "URI",
    "compose_uri",
    "is_ip_literal",
    "parse_uri",
    "resolve",
    "uri_from_options",
]

#: Default UDP port per scheme (RFC 7252 §6.1, §6.2).
DEFAULT_PORTS = {"coap": 5683, "coaps": 5684}

_URI_HOST = int(OptionNumber.URI_HOST)
_URI_PORT = int(OptionNumber.URI_PORT)
_URI_PATH = int(OptionNumber.URI_PATH)
_URI_QUERY = int(OptionNumber.URI_QUERY)

# RFC 3986 appendix B: scheme, authority, path, query, fragment.
_SPLIT = re.compile(r"^(?:([^:/?#]+):)?(?://([^/?#]*))?([^?#]*)(?:\?([^#]*))?(?:#(.*))?$", re.S)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*$")
_SCHEME_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_CONTROL = re.compile(r"[\x00-\x20\x7f]")

# Characters left unescaped besides the RFC 3986 unreserved set (quote() adds those).
_SAFE_SEGMENT = "!$&'()*+,;=:@"  # pchar
_SAFE_QUERY = "!$'()*+,;=:@/?"  # query chars minus "&", the Uri-Query separator
_SAFE_HOST = "!$&'()*+,;="  # reg-name


def is_ip_literal(host: str) -> bool:
    """True if ``host`` is an IPv4 or IPv6 address (brackets and a zone id allowed)."""
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _pct_decode(text: str, what: str) -> str:
    """Percent-decode one component; malformed escapes and invalid UTF-8 raise UriError."""
    if _CONTROL.search(text):
        raise UriError(f"{what} contains whitespace or a control character: {text!r}")
    if "%" not in text:
        return text
    if _BAD_PERCENT.search(text):
        raise UriError(f"bad percent-encoding in {what}: {text!r}")
    try:
        return unquote_to_bytes(text).decode("utf-8")
    except UnicodeDecodeError:
        raise UriError(f"percent-encoding in {what} is not valid UTF-8: {text!r}") from None


def _parse_host(authority: str) -> tuple[str, str]:
    """Split an authority into (normalised host, port text)."""
    if "@" in authority:
        raise UriError("userinfo ('user@') is not allowed in coap URIs")
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise UriError(f"unterminated IPv6 literal: {authority!r}")
        literal, rest = authority[1:end], authority[end + 1 :]
        if rest and not rest.startswith(":"):
            raise UriError(f"unexpected text after IPv6 literal: {authority!r}")
        address, _, zone = literal.partition("%25")
        try:
            host = ipaddress.IPv6Address(address).compressed
        except ValueError:
            raise UriError(f"bad IPv6 literal: [{literal}]") from None
        if zone:
            host += "%" + _pct_decode(zone, "IPv6 zone id")
        return host, rest[1:]
    if authority.count(":") > 1:
        raise UriError(f"an IPv6 address must be in brackets: {authority!r}")
    host, _, port = authority.partition(":")
    if "[" in host or "]" in host:
        raise UriError(f"misplaced bracket in host: {authority!r}")
    host = _pct_decode(host, "host").lower()
    if not host:
        raise UriError("missing host")
    return host, port


def _parse_port(text: str, scheme: str) -> int:
    if not text:
        return DEFAULT_PORTS[scheme]
    if not text.isascii() or not text.isdigit():
        raise UriError(f"bad port {text!r}: not a decimal number")
    port = int(text)
    if port > 65535:
        raise UriError(f"bad port {port}: above 65535")
    return port


def _split_path(path: str) -> tuple[str, ...]:
    """§6.4 step 8: "" and "/" mean no segments; otherwise one per "/"-separated part."""
    if path in ("", "/"):
        return ()
    if not path.startswith("/"):
        raise UriError(f"path must start with '/': {path!r}")
    return tuple(_pct_decode(seg, "path") for seg in path[1:].split("/"))


def _split_query(query: str | None) -> tuple[str, ...]:
    """§6.4 step 9: each "&"-separated part of a non-empty query is one Uri-Query."""
    if not query:
        return ()
    return tuple(_pct_decode(item, "query") for item in query.split("&"))


class URI(NamedTuple):
    """A decomposed coap/coaps URI.

    ``host`` is lowercase, IPv6 without brackets; ``port`` is always set (the
    scheme default if the text had none); ``path`` and ``query`` hold the
    decoded Uri-Path segments and Uri-Query items.
    """

    scheme: str
    host: str
    port: int
    path: tuple[str, ...] = ()
    query: tuple[str, ...] = ()

    def geturi(self) -> str:
        """The URI as text (RFC 7252 §6.5 composition)."""
        return compose_uri(self.scheme, self.host, self.port, self.path, self.query)

    def __str__(self) -> str:
        return self.geturi()

    @property
    def path_string(self) -> str:
        """The percent-encoded path as in the URI text, ``"/"`` for the root."""
        if not self.path:
            return "/"
        return "".join("/" + quote(seg, safe=_SAFE_SEGMENT) for seg in self.path)

    @property
    def default_port(self) -> bool:
        """True if ``port`` is the scheme's default."""
        return self.port == DEFAULT_PORTS[self.scheme]

    @property
    def secure(self) -> bool:
        """True for ``coaps``."""
        return self.scheme == "coaps"

    def options(self, include_host: bool = False) -> list[tuple[int, bytes]]:
        """The Uri-Host/Uri-Port/Uri-Path/Uri-Query options for a request to this URI.

        Uri-Host is added only if ``include_host`` and the host is a name, not
        an IP literal; Uri-Port only if ``include_host`` and the port is not
        the default.  (A request sent to host:port itself needs neither.)
        """
        out: list[tuple[int, bytes]] = []
        if include_host:
            if not is_ip_literal(self.host):
                out.append((_URI_HOST, self.host.encode("utf-8")))
            if self.port != DEFAULT_PORTS[self.scheme]:
                out.append((_URI_PORT, encode_uint(self.port)))
        out.extend((_URI_PATH, seg.encode("utf-8")) for seg in self.path)
        out.extend((_URI_QUERY, item.encode("utf-8")) for item in self.query)
        return out


def parse_uri(uri: str, default_scheme: str | None = None) -> URI:
    """Decompose an absolute coap/coaps URI (RFC 7252 §6.4).

    With ``default_scheme``, a URI without a scheme (``"host:5683/x"`` or
    ``"//host/x"``) is read as that scheme.  Raises :class:`UriError` for a
    fragment, another scheme, userinfo, a missing host, a bad port, or bad
    percent-encoding.
    """
    if not isinstance(uri, str):
        raise UriError(f"URI must be a str, not {type(uri).__name__}")
    text = uri.strip()
    prefix = _SCHEME_PREFIX.match(text)
    if default_scheme is not None and not (prefix and text.startswith("//", prefix.end())):
        text = f"{default_scheme}:{text}" if text.startswith("//") else f"{default_scheme}://{text}"
    match = _SPLIT.match(text)
    if match is None:  # pragma: no cover - the pattern matches every string
        raise UriError(f"unparsable URI: {uri!r}")
    scheme, authority, path, query, fragment = match.groups()
    if fragment is not None:
        raise UriError(f"fragments ('#') are not allowed in coap URIs: {uri!r}")
    if scheme is None or not _SCHEME.match(scheme):
        raise UriError(f"not an absolute URI (no scheme): {uri!r}")
    scheme = scheme.lower()
    if scheme not in DEFAULT_PORTS:
        hint = " (missing 'coap://'?)" if authority is None else ""
        raise UriError(f"unsupported scheme {scheme!r}: only coap and coaps{hint}")
    if authority is None:
        raise UriError(f"missing host: {uri!r}")
    host, port_text = _parse_host(authority)
    port = _parse_port(port_text, scheme)
    return URI(scheme, host, port, _split_path(path), _split_query(query))


def _host_text(host: str) -> str:
    if ":" in host:  # IPv6, maybe with a zone id
        address, _, zone = host.partition("%")
        return f"[{address}%25{quote(zone, safe='')}]" if zone else f"[{address}]"
    return quote(host, safe=_SAFE_HOST)


def compose_uri(
    scheme: str,
    host: str,
    port: int | None = None,
    path: tuple[str, ...] | list[str] = (),
    query: tuple[str, ...] | list[str] = (),
) -> str:
    """Write a URI from its parts (RFC 7252 §6.5), percent-encoding as needed.

    IPv6 hosts get brackets, the default port is omitted, and an empty path
    becomes ``"/"``.  (So ``path=("",)`` also gives ``"/"``: the one path that
    does not survive a round trip, as §6.5 specifies.)
    """
    scheme = scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise UriError(f"unsupported scheme {scheme!r}: only coap and coaps")
    if not host:
        raise UriError("missing host")
    parts = [scheme, "://", _host_text(host)]
    if port is not None and port != DEFAULT_PORTS[scheme]:
        if not 0 <= port <= 65535:
            raise UriError(f"bad port {port}: outside 0..65535")
        parts.append(f":{port}")
    if path:
        for seg in path:
            parts.append("/")
            parts.append(quote(seg, safe=_SAFE_SEGMENT))
    else:
        parts.append("/")
    if query:
        parts.append("?")
        parts.append("&".join(quote(item, safe=_SAFE_QUERY) for item in query))
    return "".join(parts)


def uri_from_options(
    options: list[tuple[int, bytes]], scheme: str, host: str, port: int | None = None
) -> URI:
    """The request URI of a received request (RFC 7252 §6.5).

    ``scheme``/``host``/``port`` describe where the request arrived (the
    destination endpoint); Uri-Host and Uri-Port options override them.
    """
    scheme = scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise UriError(f"unsupported scheme {scheme!r}: only coap and coaps")
    path: list[str] = []
    query: list[str] = []
    try:
        for number, value in options:
            if number == _URI_PATH:
                path.append(value.decode("utf-8"))
            elif number == _URI_QUERY:
                query.append(value.decode("utf-8"))
            elif number == _URI_HOST:
                host = value.decode("utf-8").lower()
            elif number == _URI_PORT:
                port = int.from_bytes(value, "big")
    except UnicodeDecodeError:
        raise UriError("Uri-Host, Uri-Path or Uri-Query option is not valid UTF-8") from None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        raise UriError("missing host")
    if port is None:
        port = DEFAULT_PORTS[scheme]
    return URI(scheme, host.lower(), port, tuple(path), tuple(query))


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4: drop "." and ".." segments from a merged path."""
    rest = path
    out: list[str] = []
    while rest:
        if rest.startswith("../"):
            rest = rest[3:]
        elif rest.startswith("./"):
            rest = rest[2:]
        elif rest.startswith("/./"):
            rest = rest[2:]
        elif rest == "/.":
            rest = "/"
        elif rest.startswith("/../"):
            rest = rest[3:]
            if out:
                out.pop()
        elif rest == "/..":
            rest = "/"
            if out:
                out.pop()
        elif rest in (".", ".."):
            rest = ""
        else:
            end = rest.find("/", 1)
            if end < 0:
                end = len(rest)
            out.append(rest[:end])
            rest = rest[end:]
    return "".join(out)


def resolve(base: str | URI, ref: str) -> URI:
    """Resolve a URI reference (``"/x?y"``, ``"x"``, ``"?q"``, ``"//h/x"``...) against ``base``.

    Implements the RFC 3986 §5.2 merge for the coap schemes; the result is
    parsed with :func:`parse_uri`, so the same errors apply.
    """
    base_uri = base if isinstance(base, URI) else parse_uri(base)
    match = _SPLIT.match(ref)
    assert match is not None  # the pattern matches every string
    scheme, authority, path, query, fragment = match.groups()
    if fragment is not None:
        raise UriError(f"fragments ('#') are not allowed in coap URIs: {ref!r}")
    if scheme is not None:
        return parse_uri(ref)
    base_text = base_uri.geturi()
    base_match = _SPLIT.match(base_text)
    assert base_match is not None
    _, base_auth, base_path, base_query, _ = base_match.groups()
    if authority is not None:
        target_auth, target_path, target_query = authority, _remove_dot_segments(path), query
    else:
        target_auth = base_auth
        if path == "":
            target_path = base_path
            target_query = query if query is not None else base_query
        else:
            if path.startswith("/"):
                target_path = _remove_dot_segments(path)
            else:
                merged = base_path[: base_path.rfind("/") + 1] + path
                target_path = _remove_dot_segments(merged)
            target_query = query
    text = f"{base_uri.scheme}://{target_auth}{target_path}"
    if target_query is not None:
        text += "?" + target_query
    return parse_uri(text)
