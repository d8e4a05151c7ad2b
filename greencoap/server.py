"""The CoAP server (layer 4): a router served on a UDP socket.

Handlers are plain blocking functions; each request runs on a parked,
reusable worker greenlet of the hub, so a handler may ``sleep()`` or call
another device without holding up other requests.  Bad input never takes
the server down: malformed CON → RST, malformed NON → dropped, unrecognised
critical option → 4.02, handler exception → 5.00 with its traceback logged;
each is counted in :attr:`Server.stats`.
"""

from __future__ import annotations

import logging
import types
from typing import Any

from .codes import Code
from .endpoint import DEFAULT_SOCKET_BUFFER, Endpoint, make_udp_socket
from .errors import CoapError, MessageFormatError
from .hub import get_hub
from .linkformat import filter_links, format_link_format
from .message import Message
from .observers import ObserverRegistry
from .options import OptionNumber as O
from .protocol.messaging import TransmissionParameters
from .response import Request, Response, as_response
from .router import Router

log = logging.getLogger("greencoap.server")

#: Options this server understands in requests (RFC 7252 §5.4.1: any other
#: critical option is answered 4.02 Bad Option).
UNDERSTOOD_OPTIONS = frozenset(
    {
        O.IF_MATCH,
        O.URI_HOST,
        O.ETAG,
        O.IF_NONE_MATCH,
        O.OBSERVE,
        O.URI_PORT,
        O.URI_PATH,
        O.CONTENT_FORMAT,
        O.URI_QUERY,
        O.ACCEPT,
        O.BLOCK2,
        O.BLOCK1,
        O.SIZE2,
        O.SIZE1,
        O.NO_RESPONSE,
        O.REQUEST_TAG,
        O.ECHO,
        O.HOP_LIMIT,
    }
)


class Server:
    """Serve ``router`` on ``host``:``port`` (``"::"`` is dual-stack IPv6+IPv4).

    ``start()`` binds and returns at once (the hub serves while the caller's
    greenlets block); ``serve_forever()`` starts and parks until ``stop()``
    or Ctrl-C.  ``port=0`` picks a free port (see :attr:`port`).

    A handler that blocks and is still running ``separate_delay`` seconds
    (default 0.5, well below ACK_TIMEOUT) after it started makes the server
    acknowledge its CON request with an empty ACK; the response then goes as
    a separate CON, retransmitted until the client ACKs it.  ``None``
    disables this.
    """

    def __init__(
        self,
        router: Router,
        host: str = "::",
        port: int = 5683,
        *,
        ack_timeout: float = 2.0,
        ack_random_factor: float = 1.5,
        max_retransmit: int = 4,
        buffer_size: int | None = DEFAULT_SOCKET_BUFFER,
        reuse_port: bool = False,
        separate_delay: float | None = 0.5,
        con_every: int = 20,
    ) -> None:
        self.router = router
        if not any(r.path == "/.well-known/core" for r in router.routes):
            router.add(Code.GET, "/.well-known/core", self._well_known_core, ct=40)
        self.host = host
        self._port = port
        self.params = TransmissionParameters(
            ack_timeout=ack_timeout,
            ack_random_factor=ack_random_factor,
            max_retransmit=max_retransmit,
        )
        self.buffer_size = buffer_size
        self.reuse_port = reuse_port
        self.separate_delay = separate_delay
        self.endpoint: Endpoint | None = None
        self.hub = None
        self._stopped = None
        self._stats = {
            "handler_errors": 0,
            "bad_option": 0,
            "not_found": 0,
            "bad_request": 0,
            "observers": 0,
            "observe_registrations": 0,
        }
        self.observers = ObserverRegistry(self, con_every)
        self._last_stats: dict[str, int] = {}

    @property
    def port(self) -> int:
        """The bound port (useful with ``port=0``)."""
        return self._port

    @property
    def stats(self) -> dict[str, int]:
        """Counters: requests, duplicates, malformed, pings, handler errors, …"""
        s = dict(self._stats)
        s.update(self.endpoint.stats if self.endpoint is not None else self._last_stats)
        return s

    def start(self) -> Server:
        """Bind the socket and start serving on this thread's hub."""
        if self.endpoint is not None:
            return self
        from .sync import Event

        self.hub = get_hub()
        sock = make_udp_socket(
            self.host, self._port, reuse_port=self.reuse_port, buffer_size=self.buffer_size
        )
        self.endpoint = Endpoint(
            sock,
            params=self.params,
            on_request=self._handle,
            hub=self.hub,
            separate_delay=self.separate_delay,
        )
        self._port = self.endpoint.address[1]
        self._stopped = Event()
        return self

    def serve_forever(self, timeout: float | None = None) -> None:
        """Start, then park this greenlet until :meth:`stop` (or ``timeout`` s)."""
        self.start()
        try:
            self._stopped.wait(timeout)
        finally:
            self.stop()

    def notify(self, path: str) -> None:
        """Re-render ``path`` for all its observers (push-style resources).

        Callable from any OS thread; the handlers run on the server's hub.
        """
        hub = self.hub
        if hub is None:
            return
        hub.run_callback_threadsafe(self.observers.notify, "/" + path.strip("/"))

    def stop(self) -> None:
        """End observations (a final 5.03 each), stop serving, close the socket."""
        if self.endpoint is not None:
            self.observers.close()
            self._last_stats = self.endpoint.stats
            self.endpoint.close()
            self.endpoint = None
        if self._stopped is not None:
            self._stopped.set()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _well_known_core(self, request: Request) -> Response:
        """RFC 6690 discovery: the router's links, filtered by the query (§4.1)."""
        links = self.router.links()
        query = list(request.query.items())
        if query:
            links = filter_links(links, query)
        return Response(
            Code.CONTENT, format_link_format(links).encode(), content_format=40
        )

    # -- request handling (on worker greenlets) ------------------------
    def _handle(self, msg: Message, peer: tuple) -> None:
        ep = self.endpoint
        if ep is None:
            return
        ep.respond(msg, peer, self.handle_request(msg, peer).to_message())

    def handle_request(self, msg: Message, peer: tuple) -> Response:
        """Run the router for one request message and return the response."""
        stats = self._stats
        raw_path = []
        for number, value in msg.options:
            if number == 11:
                raw_path.append(value)
            elif number & 1 and number not in UNDERSTOOD_OPTIONS:
                stats["bad_option"] += 1
                return Response(Code.BAD_OPTION, f"unrecognised critical option {number}")
        if msg.bad_options:
            for number in msg.bad_options:
                if number & 1:
                    stats["bad_option"] += 1
                    return Response(Code.BAD_OPTION, f"option {number} has an invalid length")
        method = msg.code
        try:
            route, params = self.router.resolve_raw(method, tuple(raw_path))
        except LookupError as e:
            stats["not_found"] += 1
            return Response(e.args[0])
        except UnicodeDecodeError:
            stats["bad_request"] += 1
            return Response(Code.BAD_REQUEST, "Uri-Path is not valid UTF-8")
        try:
            if msg.code == 1 and (route.observable or route.attrs.get("observable")):
                observe = msg.uint_opt(6)
                if observe is not None:
                    if observe == 0:
                        return self.observers.register(Request(msg, peer, params), route, params)
                    self.observers.drop((peer, msg.token), "deregistered")
            result = route.handler(Request(msg, peer, params), **params)
            if result.__class__ is Response:
                return result
            if isinstance(result, types.GeneratorType):
                # an observable resource read without Observe: its first value
                try:
                    first = next(result)
                except StopIteration as stop:
                    first = stop.value
                result.close()
                result = first
            return as_response(result, method)
        except CoapError as e:
            code = e.code if e.code is not None else Code.INTERNAL_SERVER_ERROR
            return Response(code, e.message)
        except MessageFormatError as e:  # e.g. a Uri-Query that is not UTF-8
            stats["bad_request"] += 1
            return Response(Code.BAD_REQUEST, str(e))
        except Exception:
            stats["handler_errors"] += 1
            log.exception("handler for %s %s failed", Code(method), route.path)
            return Response(Code.INTERNAL_SERVER_ERROR)
