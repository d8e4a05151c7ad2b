"""greencoap: blocking-style CoAP client and server on a greenlet hub.

Everything public is re-exported here; nothing inside the package imports
this module.
"""

from .client import (
    Client,
    default_client,
    delete,
    fetch,
    get,
    ipatch,
    observe,
    patch,
    ping,
    post,
    put,
    request,
)
from .codes import Code, Type
from .errors import (
    ClientClosedError,
    CoapError,
    HandshakeError,
    MessageFormatError,
    RequestTimeoutError,
    ResetError,
    ResponseError,
    UriError,
)
from .hub import Greenlet, GreenletExit, LoopExit, Timeout, get_hub, joinall, sleep, spawn
from .linkformat import Link, LinkFormatError
from .message import Message
from .observation import Observation
from .options import Block, ContentFormat, OptionList, OptionNumber
from .protocol.blockwise import BlockwiseError, BodyTooLargeError, RepresentationChangedError
from .response import Request, Response
from .router import Router
from .server import Server
from .sync import AsyncResult, Empty, Event, Full, Queue
from .uri import URI, parse_uri

__version__ = "0.1.0"

__all__ = [
    "AsyncResult",
    "Block",
    "BlockwiseError",
    "BodyTooLargeError",
    "Client",
    "ClientClosedError",
    "Code",
    "CoapError",
    "ContentFormat",
    "Empty",
    "Event",
    "Full",
    "Greenlet",
    "GreenletExit",
    "HandshakeError",
    "Link",
    "LinkFormatError",
    "LoopExit",
    "Message",
    "MessageFormatError",
    "Observation",
    "OptionList",
    "OptionNumber",
    "Queue",
    "RepresentationChangedError",
    "Request",
    "RequestTimeoutError",
    "ResetError",
    "Response",
    "ResponseError",
    "Router",
    "Server",
    "Timeout",
    "Type",
    "URI",
    "UriError",
    "default_client",
    "delete",
    "fetch",
    "get",
    "get_hub",
    "ipatch",
    "joinall",
    "observe",
    "parse_uri",
    "patch",
    "ping",
    "post",
    "put",
    "request",
    "sleep",
    "spawn",
]
