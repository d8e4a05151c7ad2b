"""CoAPthon3's ``coapthon.server.coap.CoAP``: a legacy server on greencoap.

Resources are CoAPthon3 :class:`~greencoap.compat.coapthon.resources.resource.Resource`
objects in a tree (``add_resource``/``remove_resource``, ``root.dump()``),
dispatched with CoAPthon3's semantics: GET renders the resource (Accept
picks its representation, 4.06 when there is none; a matching ETag gives
2.03), PUT edits an existing one (4.04 when there is none; If-Match /
If-None-Match give 4.12), POST edits one or creates a child (2.01 with
Location-Path and Location-Query), DELETE removes it; an observable
resource is observed with GET Observe=0 and notified by :meth:`CoAP.notify`
(and after a PUT or POST changed it; a deletion ends its observations with
4.04).  ``/.well-known/core`` lists the visible resources with their
attributes.

What greencoap brings: the legacy ``render_*`` methods (which may block:
``time.sleep``, databases, C code) run on a bounded pool of ``threads`` (16)
threads while the hub goes on serving, so one slow resource never stalls
the others, and a slow one gets an empty ACK and a separate response by
itself; retransmission and deduplication with RFC 7252 timing; block-wise
transfers both ways; IPv6; DTLS with ``dtls_port=`` and ``psk=`` (extra
keywords).  Where CoAPthon3 departs from the RFCs the RFC wins; each case is
in docs/coapthon.md.
"""

from __future__ import annotations

import socket
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from greencoap.codes import Code
from greencoap.linkformat import Link, filter_links, format_link_format
from greencoap.response import Response as CoapResponse
from greencoap.router import Router
from greencoap.server import Server

from .. import defines
from .._convert import from_coap, option_bytes, payload_bytes
from ..messages.request import Request
from ..messages.response import Response
from ..resources.resource import Resource
from ..utils import Tree

_C = defines.Codes


class CoAP:
    """A CoAPthon3 server (see the module docstring)."""

    def __init__(
        self,
        server_address: tuple,
        multicast: bool = False,
        starting_mid: int | None = None,
        sock: Any = None,
        cb_ignore_listen_exception: Any = None,
        *,
        threads: int = 16,
        dtls_port: int | None = None,
        psk: Any = None,
        **server_options: Any,
    ) -> None:
        """Bind ``server_address`` (``(host, port)``) now, as CoAPthon3 does;
        serving starts with :meth:`listen`.  ``starting_mid`` and
        ``cb_ignore_listen_exception`` are accepted and not needed (greencoap
        chooses MIDs per peer and never raises out of its receive loop).
        Other keywords go to :class:`greencoap.Server`."""
        self.server_address = server_address
        self.multicast = multicast
        self.stopped = threading.Event()
        self.to_be_stopped: list = []
        self._cb_ignore_listen_exception = cb_ignore_listen_exception
        root = Resource("root", self, visible=False, observable=False, allow_children=False)
        root.path = "/"
        self.root = Tree()
        self.root["/"] = root
        self._socket = sock if sock is not None else self._bind(server_address, multicast)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="coapthon-resource")
        self._router = Router()
        self._router.add(Code.GET, "/.well-known/core", self._discover, ct=40)
        for method in ("GET", "PUT", "POST", "DELETE"):
            self._router.add(method, "/*path", self._dispatch, observable=method == "GET")
        extra = dict(server_options)
        if dtls_port is not None:
            extra.update(dtls_port=dtls_port, psk=psk)
        self._options = extra
        self._server: Server | None = None

    @staticmethod
    def _bind(address: tuple, multicast: bool) -> socket.socket:
        family = socket.getaddrinfo(address[0], None)[0][0]
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if not multicast:
            sock.bind(address)
            return sock
        sock.bind(("", address[1]))  # a group member listens on every address
        if family == socket.AF_INET:
            mreq = struct.pack("4sl", socket.inet_aton(defines.ALL_COAP_NODES), socket.INADDR_ANY)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        else:
            group = socket.inet_pton(socket.AF_INET6, "ff02::fd")
            sock.setsockopt(
                socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, group + struct.pack("@I", 0)
            )
        return sock

    # -- running -------------------------------------------------------------------------
    def listen(self, timeout: float = 10) -> None:
        """Serve until :meth:`close` (from any thread) or Ctrl-C.  ``timeout``
        is accepted (CoAPthon3 used it to poll its stop flag)."""
        if self.stopped.is_set():
            return
        self._server = Server(self._router, sock=self._socket, **self._options)
        try:
            self._server.serve_forever()
        finally:
            self._server = None

    def close(self) -> None:
        """Stop serving (callable from any thread, or a signal handler)."""
        self.stopped.set()
        for event in self.to_be_stopped:
            event.set()
        server = self._server
        if server is not None and server.hub is not None:
            server.hub.run_callback_threadsafe(server.stop)
        elif self._socket is not None and self._server is None:
            self._socket.close()
        self._pool.shutdown(wait=False)

    # -- the resource tree ------------------------------------------------------------------
    def add_resource(self, path: str, resource: Resource) -> bool:
        """Put ``resource`` at ``path`` (and, as CoAPthon3, at each missing
        prefix of it)."""
        if not isinstance(resource, Resource):
            raise TypeError("add_resource takes a Resource")
        actual = ""
        for segment in path.strip("/").split("/"):
            actual += "/" + segment
            if actual not in self.root:
                resource.path = actual
                self.root[actual] = resource
        return True

    def remove_resource(self, path: str) -> Resource | None:
        """Take the resource at ``path`` away; returns it (None: there was none)."""
        actual = "/" + path.strip("/")
        res = self.root.tree.pop(actual, None)
        return res

    def notify(self, resource: Resource) -> None:
        """Send the resource's new state to its observers (from any thread)."""
        server = self._server
        if server is not None and resource.path:
            server.notify(resource.path)

    # -- dispatch (on greencoap's worker greenlets) -------------------------------------------
    def _legacy(self, request: Any) -> Request:
        msg = from_coap(request.message, request.remote)
        msg.destination = self.server_address
        return msg

    def _dispatch(self, request: Any, path: str) -> CoapResponse:
        legacy = self._legacy(request)
        full = "/" + path.strip("/")
        resource = self.root.tree.get(full)
        if request.observing == "register" and (resource is None or not resource.observable):
            request.observing = None  # not observable: a plain answer
        method = request.message.code
        hub = request_hub()
        try:
            response = hub.run_in_thread(self._render, method, full, legacy, executor=self._pool)
        except RuntimeError:  # the pool shut down: the server is stopping
            return CoapResponse(Code.SERVICE_UNAVAILABLE)
        if method in (Code.PUT, Code.POST) and response.code in (
            _C.CHANGED.number,
            _C.CREATED.number,
        ):
            target = self.root.tree.get(full)
            if target is not None and target.observable:
                self.notify(target)
        elif method == Code.DELETE and response.code == _C.DELETED.number:
            if self._server is not None:
                self._server.notify(full)  # its observers get 4.04: the end
        return _to_coap_response(response)

    def _render(self, method: int, path: str, request: Request) -> Response:
        """CoAPthon3's request semantics (in a pool thread: may block)."""
        response = Response()
        response.destination = request.source
        response.token = request.token
        try:
            if method == Code.GET:
                return self._get(path, request, response)
            if method == Code.PUT:
                return self._put(path, request, response)
            if method == Code.POST:
                return self._post(path, request, response)
            return self._delete(path, request, response)
        except Exception:  # noqa: BLE001 - a legacy resource failed: 5.00, logged
            import logging

            logging.getLogger("greencoap.compat.coapthon").exception("resource at %s failed", path)
            response.code = _C.INTERNAL_SERVER_ERROR.number
            return response

    def _get(self, path: str, request: Request, response: Response) -> Response:
        resource = self.root.tree.get(path)
        if resource is None or path == "/":
            response.code = _C.NOT_FOUND.number
            return response
        resource.actual_content_type = request.accept
        ret = _call(resource, "GET", request, response)
        if ret is None:
            response.code = _C.METHOD_NOT_ALLOWED.number
            return response
        resource, response = ret
        if response.code is None:
            response.code = _C.VALID.number if resource.etag in request.etag else _C.CONTENT.number
            try:
                payload = resource.payload
            except KeyError:
                response.code = _C.NOT_ACCEPTABLE.number
                return response
            response.payload = payload
            act = resource.actual_content_type
            if act is not None and act != defines.Content_types["text/plain"]:
                response.content_type = act
            if response.code == _C.VALID.number:
                response.payload = None
        if resource.etag is not None and not response.etag:
            response.etag = resource.etag
        if resource.max_age is not None:
            response.max_age = resource.max_age
        return response

    def _put(self, path: str, request: Request, response: Response) -> Response:
        resource = self.root.tree.get(path)
        if resource is None:
            response.code = _C.NOT_FOUND.number
            return response
        refused = _preconditions(resource, request)
        if refused is not None:
            response.code = refused
            return response
        ret = _call(resource, "PUT", request, response)
        if ret is None:
            response.code = _C.METHOD_NOT_ALLOWED.number
            return response
        resource, response = ret
        resource.changed = True
        resource.observe_count += 1
        if response.code is None:
            response.code = _C.CHANGED.number
            response.payload = None
        if resource.etag is not None and not response.etag:
            response.etag = resource.etag
        if resource.max_age is not None:
            response.max_age = resource.max_age
        return response

    def _post(self, path: str, request: Request, response: Response) -> Response:
        existing = self.root.tree.get(path)
        if existing is not None:
            node = existing
            refused = _preconditions(existing, request, none_match=False)
            if refused is not None:
                response.code = refused
                return response
        else:  # a new child of the longest existing prefix
            prefixes = [k for k in self.root.tree if path.startswith(k)]
            node = self.root.tree[max(prefixes, key=len)] if prefixes else self.root["/"]
            if not node.allow_children:
                response.code = _C.METHOD_NOT_ALLOWED.number
                return response
        ret = _call(node, "POST", request, response)
        if ret is None:
            response.code = _C.METHOD_NOT_ALLOWED.number
            return response
        resource, response = ret
        if existing is None:
            resource.path, created = path, True
        else:
            created = resource is not existing
            if resource.path is None:
                resource.path = path
        resource.changed = True
        resource.observe_count += 1
        self.root[resource.path] = resource
        if response.code is None:
            response.code = _C.CREATED.number if created else _C.CHANGED.number
            response.payload = None
        if response.code == _C.CREATED.number and not response.location_path:
            response.location_path = resource.path
            if resource.location_query:
                response.location_query = resource.location_query
        if resource.etag is not None and not response.etag:
            response.etag = resource.etag
        if resource.max_age is not None and created:
            response.max_age = resource.max_age
        return response

    def _delete(self, path: str, request: Request, response: Response) -> Response:
        resource = self.root.tree.get(path)
        if resource is None:
            response.code = _C.NOT_FOUND.number
            return response
        ret = _call(resource, "DELETE", request, response, delete=True)
        if ret is None:
            response.code = _C.METHOD_NOT_ALLOWED.number
            return response
        deleted, response = ret
        if deleted is True:
            self.root.tree.pop(path, None)
            resource.deleted = True
            if response.code is None:
                response.code = _C.DELETED.number
                response.payload = None
        elif response.code is None:
            response.code = _C.INTERNAL_SERVER_ERROR.number
        return response

    # -- discovery ---------------------------------------------------------------------------
    def _discover(self, request: Any) -> CoapResponse:
        """``/.well-known/core`` from the tree (RFC 6690 filters on any attribute)."""
        links = []
        for path in self.root.dump():
            if path == "/":
                continue
            resource = self.root[path]
            if resource.visible:
                links.append(_link(path, resource))
        query = list(request.query.items())
        if query:
            links = filter_links(links, query)
        return CoapResponse(Code.CONTENT, format_link_format(links).encode(), content_format=40)


def request_hub() -> Any:
    """The hub of the calling (worker) greenlet."""
    from greencoap.hub import get_hub

    return get_hub()


def _call(
    resource: Resource, method: str, request: Request, response: Response, delete: bool = False
) -> tuple | None:
    """Run a resource's ``render_<method>`` (or its advanced form) with
    CoAPthon3's return conventions; returns ``(resource or bool, response)``
    with ``response.code`` None when the plain form was used, or None when
    the resource does not implement the method."""
    try:
        ret = getattr(resource, f"render_{method}")(request=request)
    except NotImplementedError:
        ret = _NOT_PLAIN
    if ret is not _NOT_PLAIN:
        if isinstance(ret, tuple) and len(ret) == 2 and callable(ret[1]):
            ret = ret[1](request=request)  # a separate response: greencoap ACKs meanwhile
        if delete:
            return (ret is True), response
        return (ret if isinstance(ret, Resource) else resource), response
    try:
        ret = getattr(resource, f"render_{method}_advanced")(request=request, response=response)
    except NotImplementedError:
        return None
    if isinstance(ret, tuple) and len(ret) == 3:
        ret = ret[2](request=request, response=ret[1])
    if not (isinstance(ret, tuple) and len(ret) == 2):
        response.code = _C.INTERNAL_SERVER_ERROR.number
        return (False if delete else resource), response
    first, response = ret
    if response.code is None:
        response.code = {
            "GET": _C.CONTENT,
            "PUT": _C.CHANGED,
            "POST": _C.CREATED,
            "DELETE": _C.DELETED,
        }[method].number
    if delete:
        return first is True, response
    return (first if isinstance(first, Resource) else resource), response


_NOT_PLAIN = object()


def _preconditions(resource: Resource, request: Request, none_match: bool = True) -> int | None:
    """If-Match against the resource's ETag (an empty one: "exists"), and
    If-None-Match (the resource exists): 4.12 when they fail."""
    if_match = request.if_match
    if if_match and None not in if_match and resource.etag not in if_match:
        return _C.PRECONDITION_FAILED.number
    if none_match and request.if_none_match:
        return _C.PRECONDITION_FAILED.number
    return None


def _link(path: str, resource: Resource) -> Link:
    params: list[tuple[str, str | None]] = []
    for key in sorted(resource.attributes):
        value = resource.attributes[key]
        if key == "obs":
            if resource.observable:
                params.append(("obs", None))
        elif key == "ct":
            params.append(("ct", " ".join(str(v) for v in value)))
        elif value is not None:
            params.append((key, str(value)))
    return Link(path, params)


def _to_coap_response(response: Response) -> CoapResponse:
    options = [(o.number, option_bytes(o)) for o in response.options]
    code = response.code if response.code is not None else _C.CONTENT.number
    return CoapResponse(code, payload_bytes(response.payload), options=options)
