"""Locust integration: :class:`CoapUser`, the CoAP counterpart of ``HttpUser`` (layer 4).

    from locust import task
    from greencoap.contrib.locust import CoapUser

    class Device(CoapUser):
        @task
        def hello(self):
            self.client.get("/hello")

    $ locust -f locustfile.py --host coap://127.0.0.1:5683 --headless -u 50 -t 30s

Every request fires ``environment.events.request`` with the keys HttpUser
uses.  4.xx/5.xx, RST and timeouts are reported as failures with stable
messages (no tokens or message IDs, so Locust groups them) and never raised;
a response object is always returned.  ``catch_response=True`` gives a
context manager with ``success()`` / ``failure()`` exactly as HttpSession's.

Settings are class attributes (``timeout``, ``ack_timeout``,
``ack_random_factor``, ``max_retransmit``, ``nstart``, ``block_size``,
``psk_identity`` and ``psk_key`` for ``coaps://`` hosts) or ``--coap-*``
command-line options (``--host coaps://dev:5684 --coap-psk-identity me
--coap-psk-key secret`` load-tests over DTLS: each user sets up its own
session).  Nothing is created at import time (``--processes``
forks after import); each user gets its own client in ``__init__``, running
on gevent's hub.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import gevent
from locust import User, events
from locust.exception import LocustError, StopTest

from ..client import Client
from ..codes import Code
from ..errors import CoapError, RequestTimeoutError, ResetError, UriError
from ..response import Response
from ..uri import compose_uri, parse_uri

_METHODS = {
    c.name: c
    for c in (Code.GET, Code.POST, Code.PUT, Code.DELETE, Code.FETCH, Code.PATCH, Code.IPATCH)
}


class CoapRequestError(Exception):
    """A failed CoAP request as reported to Locust (stable message, groupable)."""


class CatchResponseError(Exception):
    """``response.failure("text")`` with a plain string."""


class CoapResponse:
    """What ``self.client.<method>()`` returns: always an object, never raised.

    ``code`` (a :class:`Code`, None when no response came), ``payload``,
    ``text``, ``ok``, ``error`` (the failure reported, or None), ``json()``,
    and the underlying greencoap :class:`Response` as ``response``.  With
    ``catch_response=True`` it is a context manager offering ``success()``
    and ``failure(exc)``.
    """

    def __init__(
        self,
        response: Response | None,
        error: Exception | None,
        meta: dict,
        event: Any,
        catch: bool,
    ) -> None:
        self.response = response
        self.error = error
        self.request_meta = meta
        self._event = event
        self._catch = catch
        self._entered = False
        self._manual: bool | Exception | None = None

    @property
    def code(self) -> Code | None:
        return self.response.code if self.response is not None else None

    @property
    def payload(self) -> bytes:
        return self.response.payload if self.response is not None else b""

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8", "replace")

    @property
    def ok(self) -> bool:
        return self.error is None

    def json(self) -> Any:
        return self.response.json() if self.response is not None else None

    def _report(self) -> None:
        self._event.fire(**self.request_meta)

    def __enter__(self) -> CoapResponse:
        if not self._catch:
            raise LocustError("to use a with-block for requests, pass catch_response=True")
        self._entered = True
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if self._manual is not None:
            self.request_meta["exception"] = None if self._manual is True else self._manual
            self._report()
            return exc is None
        if exc is not None:
            return False  # unknown exceptions in the with-block propagate
        self.request_meta["exception"] = self.error
        self._report()
        return True

    def success(self) -> None:
        """Report this request as successful, whatever its code."""
        if not self._entered:
            raise LocustError("success() needs a with-block and catch_response=True")
        self._manual = True

    def failure(self, exc: Exception | str) -> None:
        """Report this request as failed with ``exc`` (a string is wrapped)."""
        if not self._entered:
            raise LocustError("failure() needs a with-block and catch_response=True")
        self._manual = exc if isinstance(exc, Exception) else CatchResponseError(exc)

    def __repr__(self) -> str:
        return f"<CoapResponse {self.code} error={self.error!r}>"


def parse_host(host: str | None) -> str:
    """``coap://h:p`` / ``coaps://h:p`` / ``h`` / ``h:p`` / ``[v6]:p`` → ``scheme://host:port``."""
    if not host:
        raise StopTest(
            "CoapUser needs a host: set `host` on the class or pass --host coap://HOST:PORT"
        )
    text = host if "://" in host else "coap://" + host
    try:
        u = parse_uri(text)
    except UriError as e:
        raise StopTest(f"CoapUser: bad host {host!r}: {e}") from None
    return compose_uri(u.scheme, u.host, u.port, (), ()).rstrip("/")


class CoapSession:
    """``self.client`` of a :class:`CoapUser`: paths resolved against the host."""

    def __init__(
        self,
        base_url: str,
        request_event: Any,
        user: Any,
        client: Client,
        shared_key: Any = None,
    ) -> None:
        self.base_url = base_url
        self._urls: dict[str, str] = {}
        self.request_event = request_event
        self.user = user
        self.coap = client
        self._shared_key = shared_key
        self._pools: list[ObservationPool] = []

    def _url(self, path: str) -> str:
        url = self._urls.get(path)
        if url is None:
            if "://" in path:
                url = path
            else:
                url = self.base_url + (path if path.startswith("/") else "/" + path)
            if len(self._urls) > 1024:
                self._urls.clear()
            self._urls[path] = url  # the same string object: its hash is cached
        return url

    def request(
        self,
        method: str,
        path: str,
        payload: bytes | str | None = None,
        *,
        name: str | None = None,
        catch_response: bool = False,
        context: dict | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> CoapResponse:
        """Send a request, report it to Locust, return a :class:`CoapResponse`."""
        url = self._url(path)
        code = _METHODS.get(method)
        if code is None:
            code = _METHODS[method.upper()]
        start_time = time.time()
        t0 = time.perf_counter()
        response: Response | None = None
        error: Exception | None = None
        try:
            response = self.coap.request(code, url, payload, timeout=timeout, **kwargs)
            if response.code >= 128:
                error = CoapRequestError(str(response.code))
        except RequestTimeoutError:
            error = CoapRequestError("timeout: no response")
        except ResetError:
            error = CoapRequestError("reset: the server answered RST")
        except CoapError as e:
            error = CoapRequestError(f"{type(e).__name__}: {e}")
        response_time = (time.perf_counter() - t0) * 1000
        ctx = self.user.context() if self.user is not None else {}
        if context:
            ctx = {**ctx, **context}
        meta = {
            "request_type": code.name,
            "name": name or path,
            "response_time": response_time,
            "response_length": len(response.payload) if response is not None else 0,
            "response": response,
            "context": ctx,
            "exception": error,
            "start_time": start_time,
            "url": url,
        }
        r = CoapResponse(response, error, meta, self.request_event, catch_response)
        if not catch_response:
            r._report()
        return r

    def get(self, path: str, **kwargs: Any) -> CoapResponse:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, payload: bytes | str | None = None, **kwargs: Any) -> CoapResponse:
        return self.request("POST", path, payload, **kwargs)

    def put(self, path: str, payload: bytes | str | None = None, **kwargs: Any) -> CoapResponse:
        return self.request("PUT", path, payload, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> CoapResponse:
        return self.request("DELETE", path, **kwargs)

    def fetch(self, path: str, payload: bytes | str | None = None, **kwargs: Any) -> CoapResponse:
        return self.request("FETCH", path, payload, **kwargs)

    def observe(
        self,
        path: str,
        *,
        name: str | None = None,
        timeout: float | None = None,
        context: dict | None = None,
    ) -> LocustObservation:
        """Observe ``path``; iterate the result for :class:`CoapResponse` objects.

        The registration is reported as an ``OBSERVE`` request and every
        notification as its own ``NOTIFY`` event (response_time: ms since the
        previous item), so Locust shows the notification rate and gaps.
        Leaving the ``with`` block deregisters.
        """
        return LocustObservation(self, path, name or path, timeout, context)

    def hold_observations(
        self,
        path: str,
        count: int,
        *,
        name: str | None = None,
        timeout: float | None = None,
        retry: float = 1.0,
    ) -> ObservationPool:
        """Hold ``count`` observations of ``path`` open in the background
        (observe load): each registration is reported as ``OBSERVE``, each
        notification as ``NOTIFY`` with its *age* as response time (how long
        the previous state had been the newest one when it arrived), so
        Locust shows the notification rate and how stale observers get.  An
        observation that ends is registered again after ``retry`` s.  They
        are all deregistered by ``pool.close()`` or when the user stops."""
        pool = ObservationPool(self, path, count, name or path, timeout, retry)
        self._pools.append(pool)
        return pool

    def close(self) -> None:
        for pool in self._pools:
            pool.close()
        self._pools.clear()
        if self._shared_key is not None:
            _release_shared(self._shared_key)
        else:
            self.coap.close()


class ObservationPool:
    """What :meth:`CoapSession.hold_observations` returns."""

    def __init__(
        self,
        session: CoapSession,
        path: str,
        count: int,
        name: str,
        timeout: float | None,
        retry: float,
    ) -> None:
        if count < 1:
            raise ValueError("hold at least one observation")
        self.session = session
        self.path = path
        self.name = name
        self.timeout = timeout
        self.retry = retry
        self.started = time.monotonic()
        #: notifications received by all of them (registrations not counted)
        self.notifications = 0
        self.registrations = 0
        self._closed = False
        self._greenlets = [gevent.spawn(self._hold) for _ in range(count)]

    def _hold(self) -> None:
        while not self._closed:
            try:
                with self.session.observe(self.path, name=self.name, timeout=self.timeout) as o:
                    first = True
                    for item in o.iter(self.timeout):
                        if first:
                            self.registrations += 1
                            first = False
                        elif item.ok:
                            self.notifications += 1
                        if self._closed or not item.ok:
                            break
            except CoapError:
                pass  # reported by the observation already
            if not self._closed:
                gevent.sleep(self.retry)

    def rate(self) -> float:
        """Notifications per second since the pool started."""
        return self.notifications / max(1e-9, time.monotonic() - self.started)

    def close(self) -> None:
        """Deregister them all."""
        self._closed = True
        gevent.killall(self._greenlets, block=True, timeout=5)


class LocustObservation:
    """What :meth:`CoapSession.observe` returns: a context manager and iterator."""

    def __init__(
        self, session: CoapSession, path: str, name: str, timeout: float | None, context: Any
    ) -> None:
        self.session = session
        self.url = session._url(path)
        self.name = name
        self.timeout = timeout
        self.context = context
        self.observation = session.coap.observe(self.url, timeout=timeout)

    def __iter__(self) -> Any:
        return self.iter()

    def iter(self, timeout: float | None = None) -> Any:
        """Yield a :class:`CoapResponse` per item; ``timeout`` bounds each wait."""
        session = self.session
        kind = "OBSERVE"
        t0 = time.perf_counter()
        items = self.observation.iter(timeout)
        while True:
            start_time = time.time()
            error: Exception | None = None
            response: Response | None = None
            try:
                response = next(items)
                if response.code >= 128:
                    error = CoapRequestError(str(response.code))
            except StopIteration:
                return
            except RequestTimeoutError:
                error = CoapRequestError("timeout: no notification")
            except CoapError as e:
                error = CoapRequestError(f"{type(e).__name__}: {e}")
            now = time.perf_counter()
            ctx = session.user.context() if session.user is not None else {}
            if self.context:
                ctx = {**ctx, **self.context}
            meta = {
                "request_type": kind,
                "name": self.name,
                "response_time": (now - t0) * 1000,
                "response_length": len(response.payload) if response is not None else 0,
                "response": response,
                "context": ctx,
                "exception": error,
                "start_time": start_time,
                "url": self.url,
            }
            r = CoapResponse(response, error, meta, session.request_event, False)
            r._report()
            yield r
            if response is None:
                return
            kind = "NOTIFY"
            t0 = now

    def cancel(self) -> None:
        """Deregister (GET with Observe=1)."""
        self.observation.cancel()

    def __enter__(self) -> LocustObservation:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.observation.close()


_OPTIONS = (
    ("timeout", float, "seconds a request may take (default 10)"),
    ("ack_timeout", float, "RFC 7252 ACK_TIMEOUT in seconds (default 2)"),
    ("ack_random_factor", float, "RFC 7252 ACK_RANDOM_FACTOR (default 1.5)"),
    ("max_retransmit", int, "RFC 7252 MAX_RETRANSMIT (default 4)"),
    ("nstart", int, "requests in flight per user and peer (default 1024)"),
    ("block_size", int, "block size for block-wise transfers, 16..1024 (default: server's)"),
    ("psk_identity", str, "PSK identity for a coaps:// host (DTLS 1.2)"),
    ("psk_key", str, "pre-shared key for a coaps:// host (text)"),
)


@events.init_command_line_parser.add_listener
def _add_options(parser: Any) -> None:
    group = parser.add_argument_group("CoAP (greencoap)")
    for attr, typ, text in _OPTIONS:
        group.add_argument(f"--coap-{attr.replace('_', '-')}", type=typ, default=None, help=text)


class CoapUser(User):
    """A Locust user that speaks CoAP through greencoap; see the module docstring."""

    abstract = True
    timeout: float = 10.0
    ack_timeout: float = 2.0
    ack_random_factor: float = 1.5
    max_retransmit: int = 4
    nstart: int = 1024
    block_size: int | None = None
    psk_identity: str | None = None
    psk_key: str | bytes | None = None
    #: False (the default): each user has a client, so a socket and source
    #: port, of its own, as separate devices would; True: the users of a
    #: process share one client (one socket)
    share_client: bool = False

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.client: Any = None
        if startup_error() is not None:
            return  # the run is stopping; the reason was said once, at start
        base = parse_host(self.host)
        gevent.get_hub()  # greencoap must park on gevent's hub, even without monkey-patching
        opts = getattr(environment, "parsed_options", None)
        settings = {}
        for attr, _, _ in _OPTIONS:
            value = getattr(opts, f"coap_{attr}", None) if opts is not None else None
            settings[attr] = value if value is not None else getattr(self, attr)
        identity, key = settings.pop("psk_identity"), settings.pop("psk_key")
        if (identity is None) != (key is None):
            raise StopTest("CoapUser: set both psk_identity and psk_key (or neither)")
        if identity is not None:
            settings["psk"] = (identity, key)
        shared_key = None
        if self.share_client:
            shared_key = tuple(sorted((k, str(v)) for k, v in settings.items()))
            client = _acquire_shared(shared_key, settings)
        else:
            client = Client(**settings)
        self.client = CoapSession(base, environment.events.request, self, client, shared_key)

    def run(self) -> None:
        if self.client is None:
            return  # refused at start (see startup_error)
        super().run()

    def on_stop(self) -> None:
        if self.client is not None:
            self.client.close()


_shared: dict[Any, list] = {}


def _acquire_shared(key: Any, settings: dict) -> Client:
    entry = _shared.get(key)
    if entry is None:
        entry = _shared[key] = [Client(**settings), 0]
    entry[1] += 1
    return entry[0]


def _release_shared(key: Any) -> None:
    entry = _shared.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] <= 0:
        del _shared[key]
        entry[0].close()


# -- mistakes fail once, at start --------------------------------------------------------

logger = logging.getLogger("greencoap.locust")
_startup: dict[str, str | None] = {"error": None}


def startup_error() -> str | None:
    """Why this run cannot work (found at test start), or None."""
    return _startup["error"]


def _problems(environment: Any) -> list[str]:
    from .locust_device import find_rd

    opts = getattr(environment, "parsed_options", None)
    out: list[str] = []
    for cls in environment.user_classes or ():
        host = environment.host or getattr(cls, "host", None)
        if issubclass(cls, CoapUser):
            try:
                base = parse_host(host)
            except StopTest as e:
                out.append(str(e))
                continue
            identity = getattr(opts, "coap_psk_identity", None) or cls.psk_identity
            key = getattr(opts, "coap_psk_key", None) or cls.psk_key
            if base.startswith("coaps://") and (identity is None or key is None):
                out.append(
                    f"{cls.__name__}: the host {host} is coaps:// (DTLS): give "
                    "--coap-psk-identity and --coap-psk-key (or psk_identity/psk_key on the class)"
                )
        elif issubclass(cls, CoapDeviceUser) and cls.register:
            if not host:
                out.append(
                    f"{cls.__name__} registers its devices: pass --host with the RD, "
                    "e.g. --host coap://rd-host:5683/rd"
                )
                continue
            try:
                find_rd(host, cls.device_host)
            except Exception as e:  # noqa: BLE001 - FleetError, UriError: said once
                out.append(f"{cls.__name__}: {e} (is the RD running at --host {host}?)")
    return list(dict.fromkeys(out))


@events.test_start.add_listener
def _check_at_start(environment: Any, **_: Any) -> None:
    _startup["error"] = None
    problems = _problems(environment)
    if not problems:
        return
    message = "; ".join(problems)
    _startup["error"] = message
    logger.error("greencoap: %s", message)
    environment.process_exit_code = 2
    runner = environment.runner
    if runner is not None and type(runner).__name__ != "WorkerRunner":
        gevent.spawn_later(0.1, runner.quit)


from .locust_device import CoapDeviceUser, find_rd  # noqa: E402 - it builds on the above

__all__ = [
    "CoapDeviceUser",
    "CoapRequestError",
    "CoapResponse",
    "CoapSession",
    "CoapUser",
    "ObservationPool",
    "find_rd",
    "startup_error",
]
