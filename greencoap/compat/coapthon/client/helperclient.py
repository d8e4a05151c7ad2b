"""CoAPthon3's ``coapthon.client.helperclient.HelperClient`` on greencoap.

Same methods and signatures; what legacy code sees is the same (a
:class:`~greencoap.compat.coapthon.messages.response.Response` back, or
``None`` when no answer came in time; ``**kwargs`` set request attributes;
the callback form calls back on a thread).  What changes underneath:

* one greencoap :class:`~greencoap.Client` does the work: RFC 7252
  retransmission and deduplication, block-wise transfers both ways
  (CoAPthon3's BlockLayer only does Block2 on GET), Observe with the §3.4
  freshness rule, IPv6, DTLS with ``psk=(identity, key)`` (an extra
  keyword: CoAPthon3 has no DTLS of its own);
* no thread per request or per retransmission: callbacks run on a small
  pool of threads (``callback_threads``, 4), the requests themselves on
  greencoap's hub thread;
* it is safe to use from many threads at once;
* :meth:`cancel_observing` ends that observation, not the client (CoAPthon3
  stops the whole client);
* :meth:`stop` leaves no thread and no socket behind.
"""

from __future__ import annotations

import queue as _queue
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from greencoap.client import Client
from greencoap.errors import ClientClosedError, RequestTimeoutError, ResetError
from greencoap.hub import acquire_hub_thread, os_thread_ident, release_hub_thread, spawn
from greencoap.message import Message as CoapMessage

from .. import defines
from .._convert import from_coap, payload_bytes, to_coap
from ..messages.message import Message
from ..messages.request import Request
from ..messages.response import Response

_URI_OPTIONS = frozenset((3, 7, 11, 15))
_NON = defines.Types["NON"]


class _Owned:
    """What a HelperClient owns and must give back: its greencoap client
    (made on the shared hub thread, which is its home: every call runs
    there, whichever thread makes it), its share of that thread, its
    callback threads."""

    def __init__(self, timeout: float | None, psk: Any, callback_threads: int) -> None:
        self.hub_thread: Any = acquire_hub_thread()
        self.client: Client = self.hub_thread.call(partial(Client, timeout=timeout, psk=psk))
        self.callback_threads = callback_threads
        self.pool: ThreadPoolExecutor | None = None
        self.lock = threading.Lock()

    def hub(self) -> Any:
        if self.hub_thread is None:
            raise ClientClosedError("the HelperClient was stopped")
        return self.hub_thread

    def callbacks(self) -> ThreadPoolExecutor:
        with self.lock:
            if self.pool is None:
                self.pool = ThreadPoolExecutor(self.callback_threads, "coapthon-callback")
            return self.pool

    def close(self) -> None:
        ht = self.hub_thread
        hub = getattr(ht, "hub", None)
        if hub is not None and not hub.closed and os_thread_ident() != ht.ident:
            try:  # on the hub thread, and wait: stop() leaves no socket behind
                ht.call(self.client.close, timeout=5.0)
            except Exception:  # noqa: BLE001 - the hub thread is gone: close from here
                self.client.close()
        else:
            self.client.close()
        with self.lock:
            hub_thread, self.hub_thread = self.hub_thread, None
            pool, self.pool = self.pool, None
        if hub_thread is not None:
            release_hub_thread(hub_thread)
        if pool is not None:
            pool.shutdown(wait=False)

    def collected(self) -> None:
        """The HelperClient was garbage-collected without stop(): close on
        the hub thread's next turn (the collection may happen anywhere,
        the middle of the hub's loop included)."""
        ht = self.hub_thread
        hub = getattr(ht, "hub", None)
        if hub is not None and not hub.closed:
            hub.run_callback_threadsafe(self.close)
        else:
            self.close()


class HelperClient:
    """Requests to one server (``server`` is ``(host, port)``), blocking or
    with a callback."""

    def __init__(
        self,
        server: tuple,
        sock: Any = None,
        cb_ignore_read_exception: Callable | None = None,
        cb_ignore_write_exception: Callable | None = None,
        *,
        psk: tuple | None = None,
        timeout: float | None = None,
        callback_threads: int = 4,
    ) -> None:
        """``sock`` is accepted and not used (greencoap makes its own
        socket; for DTLS give ``psk=(identity, key)``); the two
        ``cb_ignore_*`` callbacks are kept but nothing calls them (greencoap
        counts socket errors instead of raising them).  ``timeout`` is the
        default for calls that give none (RFC 7252's 93 s otherwise)."""
        self.server = (server[0], int(server[1]))
        self._owned = _Owned(timeout, psk, callback_threads)
        self._client = self._owned.client
        # a HelperClient dropped without stop() (CoAPthon3 code that ends with
        # cancel_observing, which stopped the client there) lets go of its
        # sockets and threads when it is collected
        weakref.finalize(self, self._owned.collected)
        self._scheme = "coaps" if psk is not None else "coap"
        self._cb_ignore_read_exception = cb_ignore_read_exception
        self._cb_ignore_write_exception = cb_ignore_write_exception
        self._callback_threads = callback_threads
        self._observations: dict[bytes, Any] = {}
        self._stopped = False
        #: responses that no blocking call or callback took (later notifications
        #: of a blocking ``observe``), as CoAPthon3's HelperClient.queue
        self.queue: _queue.Queue = _queue.Queue()

    # -- making requests -----------------------------------------------------------
    def mk_request(self, method: Any, path: str) -> Request:
        """A CON request for ``path`` to this client's server."""
        request = Request()
        request.destination = self.server
        request.code = method.number
        request.uri_path = path
        return request

    def mk_request_non(self, method: Any, path: str) -> Request:
        """A NON request for ``path``."""
        request = self.mk_request(method, path)
        request.type = _NON
        return request

    @staticmethod
    def _apply(request: Request, kwargs: dict) -> Request:
        for k, v in kwargs.items():
            if hasattr(request, k):
                setattr(request, k, v)
        return request

    def get(
        self,
        path: str,
        callback: Callable | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Response | None:
        """GET ``path``."""
        request = self._apply(self.mk_request(defines.Codes.GET, path), kwargs)
        return self.send_request(request, callback, timeout)

    def get_non(
        self,
        path: str,
        callback: Callable | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Response | None:
        """GET ``path`` as a NON request."""
        request = self._apply(self.mk_request_non(defines.Codes.GET, path), kwargs)
        return self.send_request(request, callback, timeout)

    def delete(
        self,
        path: str,
        callback: Callable | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Response | None:
        """DELETE ``path``."""
        request = self._apply(self.mk_request(defines.Codes.DELETE, path), kwargs)
        return self.send_request(request, callback, timeout)

    def post(
        self,
        path: str,
        payload: Any,
        callback: Callable | None = None,
        timeout: float | None = None,
        no_response: bool = False,
        **kwargs: Any,
    ) -> Response | None:
        """POST ``payload`` (str, bytes or ``(content_type, payload)``) to ``path``."""
        return self._with_body(
            defines.Codes.POST, path, payload, callback, timeout, no_response, kwargs
        )

    def put(
        self,
        path: str,
        payload: Any,
        callback: Callable | None = None,
        timeout: float | None = None,
        no_response: bool = False,
        **kwargs: Any,
    ) -> Response | None:
        """PUT ``payload`` to ``path``."""
        return self._with_body(
            defines.Codes.PUT, path, payload, callback, timeout, no_response, kwargs
        )

    def _with_body(
        self,
        method: Any,
        path: str,
        payload: Any,
        callback: Any,
        timeout: Any,
        no_response: bool,
        kwargs: dict,
    ) -> Response | None:
        request = self.mk_request(method, path)
        request.payload = payload
        if no_response:
            request.add_no_response()
            request.type = _NON
        self._apply(request, kwargs)
        return self.send_request(request, callback, timeout, no_response=no_response)

    def discover(
        self, callback: Callable | None = None, timeout: float | None = None, **kwargs: Any
    ) -> Response | None:
        """GET ``/.well-known/core``."""
        request = self._apply(self.mk_request(defines.Codes.GET, defines.DISCOVERY_URL), kwargs)
        return self.send_request(request, callback, timeout)

    def observe(
        self, path: str, callback: Callable | None, timeout: float | None = None, **kwargs: Any
    ) -> Response | None:
        """Observe ``path``: ``callback(response)`` for the registration's
        response and every notification (on a callback thread).  Without a
        callback, returns the registration's response; later notifications go
        to :attr:`queue`.  End it with :meth:`cancel_observing`."""
        request = self.mk_request(defines.Codes.GET, path)
        request.observe = 0
        self._apply(request, kwargs)
        first = self._hub().call(self._start_observation, request, callback, timeout)
        return None if callback is not None else first

    # -- sending ---------------------------------------------------------------------
    def send_request(
        self,
        request: Request,
        callback: Callable | None = None,
        timeout: float | None = None,
        no_response: bool = False,
    ) -> Response | None:
        """Send ``request``; return its response (None: none in time), or
        call ``callback(response)`` on a callback thread and return None at
        once.  A ``mid`` or ``token`` preset on the request is used as is."""
        self._check()
        if request.observe == 0 and request.code == defines.Codes.GET.number:
            first = self._hub().call(self._start_observation, request, callback, timeout)
            return None if callback is not None else first
        if no_response:
            self._client.run(self._fire, request)
            return None
        if callback is None:
            return self._client.run(self._exchange, request, timeout, timeout=timeout)
        self._hub().hub.run_callback_threadsafe(
            spawn, self._exchange_then, request, timeout, callback
        )
        return None

    def send_empty(self, empty: Message) -> None:
        """Send an empty message (ACK, RST or a CON ping) as it is."""
        self._check()
        self._client.run(self._fire, empty, True)

    def cancel_observing(self, response: Response, send_rst: bool) -> None:
        """End the observation ``response`` belongs to: with ``send_rst``,
        RST its notification (the server drops the observer, RFC 7641 §3.6);
        else deregister with a GET carrying Observe=1 (§3.6).  The client
        goes on (CoAPthon3 stops it)."""
        obs = self._observations.pop(response.token, None) if response is not None else None
        if send_rst and response is not None and response.mid is not None:
            rst = Message()
            rst.destination = response.source or self.server
            rst.type = defines.Types["RST"]
            rst.code = defines.Codes.EMPTY.number
            rst.mid = response.mid
            self._client.run(self._fire, rst, True)
            if obs is not None:
                obs.close_locally()  # the RST told the server
        elif obs is not None:
            obs.cancel()

    def stop(self) -> None:
        """Close the client: its socket, its callback threads, its observations."""
        if self._stopped:
            return
        self._stopped = True
        for obs in list(self._observations.values()):
            obs.cancelled = True
        self._observations.clear()
        self._owned.close()
        self.queue.put(None)

    close = stop

    # -- on greencoap's side -------------------------------------------------------------
    def _check(self) -> None:
        if self._stopped:
            raise ClientClosedError("the HelperClient was stopped")

    def _hub(self) -> Any:
        return self._owned.hub()

    def _callbacks(self) -> ThreadPoolExecutor:
        return self._owned.callbacks()

    def _uri(self, request: Request) -> str:
        host, port = request.destination or self.server
        host = f"[{host}]" if ":" in host else host
        uri = f"{self._scheme}://{host}:{port}/{request.uri_path}"
        query = request.uri_query
        return uri + "?" + query if query else uri

    def _peer(self, request: Request) -> tuple:
        host, port = request.destination or self.server
        return self._client.resolve(host, int(port))

    def _exchange(self, request: Request, timeout: float | None) -> Response | None:
        """One request, on the client's hub: block-wise and Echo handled by
        greencoap unless the request presets its MID or token (then exactly
        that message goes out)."""
        coap = to_coap(request)
        try:
            if request.mid is not None or request.token:
                peer = self._peer(request)
                ep = self._client.endpoint
                t = self._client.timeout if timeout is None else timeout
                reply = ep.request(coap, peer, t, mid=request.mid)
                return from_coap(reply, peer)
            options = [o for o in coap.options if o[0] not in _URI_OPTIONS]
            r = self._client.request(
                coap.code,
                self._uri(request),
                payload_bytes(request.payload),
                confirmable=request.type != _NON,
                timeout=timeout,
                options=options,
            )
        except (RequestTimeoutError, ResetError, ClientClosedError):
            return None  # CoAPthon3: no response
        return from_coap(r.message, r.peer)

    def _exchange_then(self, request: Request, timeout: float | None, callback: Callable) -> None:
        response = self._exchange(request, timeout)
        if not self._stopped:
            self._callbacks().submit(callback, response)

    def _fire(self, msg: Message, keep_mid: bool = False) -> None:
        host, port = msg.destination or self.server
        peer = self._client.resolve(host, int(port))
        coap: CoapMessage = to_coap(msg)
        self._client.endpoint.send(coap, peer, keep_mid=keep_mid and msg.mid is not None)

    def _start_observation(
        self, request: Request, callback: Callable | None, timeout: float | None
    ) -> Response | None:
        """Register (on the hub thread) and hand each notification on; the
        registration's response is returned."""
        coap = to_coap(request)
        options = [o for o in coap.options if o[0] not in _URI_OPTIONS and o[0] != 6]
        obs = self._client.observe(self._uri(request), timeout=timeout, options=options)
        items = obs.iter()
        try:
            first = next(items)
        except (RequestTimeoutError, ResetError, ClientClosedError, StopIteration):
            return None
        peer = self._peer(request)
        first_msg = from_coap(first.message, peer)
        if obs.active and first_msg.token is not None:
            self._observations[first_msg.token] = obs
        if callback is not None:
            self._callbacks().submit(callback, first_msg)
        if obs.active:
            spawn(self._follow, obs, items, callback, peer)
        return first_msg

    def _follow(self, obs: Any, items: Any, callback: Callable | None, peer: tuple) -> None:
        try:
            for r in items:
                if self._stopped:
                    return
                msg = from_coap(r.message, peer)
                if callback is not None:
                    self._callbacks().submit(callback, msg)
                else:
                    self.queue.put(msg)
        except (RequestTimeoutError, ResetError, ClientClosedError):
            pass
        finally:
            for token, o in list(self._observations.items()):
                if o is obs:
                    del self._observations[token]
