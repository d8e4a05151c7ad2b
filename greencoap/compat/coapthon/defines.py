"""CoAPthon3's ``coapthon.defines``: the constants legacy code reads.

Same names and values as CoAPthon3 1.0.2, with two corrections (see
docs/coapthon.md): ``Codes.LIST[66]`` is ``DELETED`` (CoAPthon3 maps it to
the request method ``DELETE``), and the codes CoAPthon3 lacks (4.01, 4.02,
4.03, 4.29, 2.31 …) are there too, so that any response code a real server
sends has a name.
"""

from __future__ import annotations

import collections
import struct

ACK_TIMEOUT = 2
SEPARATE_TIMEOUT = ACK_TIMEOUT / 2
ACK_RANDOM_FACTOR = 1.5
MAX_RETRANSMIT = 4
MAX_TRANSMIT_SPAN = ACK_TIMEOUT * (pow(2, (MAX_RETRANSMIT + 1)) - 1) * ACK_RANDOM_FACTOR
MAX_LATENCY = 120
PROCESSING_DELAY = ACK_TIMEOUT
MAX_RTT = (2 * MAX_LATENCY) + PROCESSING_DELAY
EXCHANGE_LIFETIME = MAX_TRANSMIT_SPAN + (2 * MAX_LATENCY) + PROCESSING_DELAY

DISCOVERY_URL = "/.well-known/core"
ALL_COAP_NODES = "224.0.1.187"
ALL_COAP_NODES_IPV6 = "FF00::FD"
MAX_PAYLOAD = 1024
MAX_NON_NOTIFICATIONS = 10
BLOCKWISE_SIZE = 1024

VERSION_BITS = 2
TYPE_BITS = 2
TOKEN_LENGTH_BITS = 4
CODE_BITS = 8
MESSAGE_ID_BITS = 16
OPTION_DELTA_BITS = 4
OPTION_LENGTH_BITS = 4
PAYLOAD_MARKER = 0xFF
VERSION = 1
REQUEST_CODE_LOWER_BOUND = 1
REQUEST_CODE_UPPER_BOUND = 31
RESPONSE_CODE_LOWER_BOUND = 64
RESPONSE_CODE_UPPER_BOUND = 191

#: link-format attribute → the Resource property that renders it
corelinkformat = {
    "ct": "content_type",
    "rt": "resource_type",
    "if": "interface_type",
    "sz": "maximum_size_estimated",
    "obs": "observing",
}

INTEGER = 0
STRING = 1
OPAQUE = 2
UNKNOWN = 3

FORWARD_PROXY = 0
REVERSE_PROXY = 1

OptionItem = collections.namedtuple("OptionItem", "number name value_type repeatable default")


class OptionRegistry:
    """Every option CoAPthon3 knows: ``(number, name, value_type, repeatable, default)``."""

    RESERVED = OptionItem(0, "Reserved", UNKNOWN, True, None)
    IF_MATCH = OptionItem(1, "If-Match", OPAQUE, True, None)
    URI_HOST = OptionItem(3, "Uri-Host", STRING, True, None)
    ETAG = OptionItem(4, "ETag", OPAQUE, True, None)
    IF_NONE_MATCH = OptionItem(5, "If-None-Match", OPAQUE, False, None)
    OBSERVE = OptionItem(6, "Observe", INTEGER, False, 0)
    URI_PORT = OptionItem(7, "Uri-Port", INTEGER, False, 5683)
    LOCATION_PATH = OptionItem(8, "Location-Path", STRING, True, None)
    URI_PATH = OptionItem(11, "Uri-Path", STRING, True, None)
    CONTENT_TYPE = OptionItem(12, "Content-Type", INTEGER, False, 0)
    MAX_AGE = OptionItem(14, "Max-Age", INTEGER, False, 60)
    URI_QUERY = OptionItem(15, "Uri-Query", STRING, True, None)
    ACCEPT = OptionItem(17, "Accept", INTEGER, False, 0)
    LOCATION_QUERY = OptionItem(20, "Location-Query", STRING, True, None)
    BLOCK2 = OptionItem(23, "Block2", INTEGER, False, None)
    BLOCK1 = OptionItem(27, "Block1", INTEGER, False, None)
    SIZE2 = OptionItem(28, "Size2", INTEGER, False, 0)
    PROXY_URI = OptionItem(35, "Proxy-Uri", STRING, False, None)
    PROXY_SCHEME = OptionItem(39, "Proxy-Schema", STRING, False, None)
    SIZE1 = OptionItem(60, "Size1", INTEGER, False, None)
    NO_RESPONSE = OptionItem(258, "No-Response", INTEGER, False, None)
    RM_MESSAGE_SWITCHING = OptionItem(65524, "Routing", OPAQUE, False, None)

    LIST = {
        item.number: item
        for item in (
            RESERVED,
            IF_MATCH,
            URI_HOST,
            ETAG,
            IF_NONE_MATCH,
            OBSERVE,
            URI_PORT,
            LOCATION_PATH,
            URI_PATH,
            CONTENT_TYPE,
            MAX_AGE,
            URI_QUERY,
            ACCEPT,
            LOCATION_QUERY,
            BLOCK2,
            BLOCK1,
            SIZE2,
            PROXY_URI,
            PROXY_SCHEME,
            SIZE1,
            NO_RESPONSE,
            RM_MESSAGE_SWITCHING,
        )
    }

    @staticmethod
    def get_option_flags(option_num: int) -> tuple[bool, bool, bool]:
        """(critical, unsafe, no-cache-key) of an option number (RFC 7252 §5.4.6)."""
        opt_bytes = bytearray(2)
        if option_num < 256:
            struct.Struct("!B").pack_into(opt_bytes, 0, option_num)
        else:
            struct.Struct("H").pack_into(opt_bytes, 0, option_num)
        critical = (opt_bytes[0] & 0x01) > 0
        unsafe = (opt_bytes[0] & 0x02) > 0
        nocache = (opt_bytes[0] & 0x1E) == 0x1C
        return (critical, unsafe, nocache)


def option_item(number: int) -> OptionItem:
    """The registry entry for ``number``; an unknown option is opaque and
    repeatable (CoAPthon3 drops those; greencoap keeps them)."""
    item = OptionRegistry.LIST.get(number)
    if item is None:
        item = OptionItem(number, f"Option-{number}", OPAQUE, True, None)
    return item


Types = {"CON": 0, "NON": 1, "ACK": 2, "RST": 3, "None": None}

CodeItem = collections.namedtuple("CodeItem", "number name")


class Codes:
    """CoAP codes as ``(number, name)``."""

    ERROR_LOWER_BOUND = 128
    EMPTY = CodeItem(0, "EMPTY")
    GET = CodeItem(1, "GET")
    POST = CodeItem(2, "POST")
    PUT = CodeItem(3, "PUT")
    DELETE = CodeItem(4, "DELETE")
    FETCH = CodeItem(5, "FETCH")
    PATCH = CodeItem(6, "PATCH")
    IPATCH = CodeItem(7, "IPATCH")
    CREATED = CodeItem(65, "CREATED")
    DELETED = CodeItem(66, "DELETED")
    VALID = CodeItem(67, "VALID")
    CHANGED = CodeItem(68, "CHANGED")
    CONTENT = CodeItem(69, "CONTENT")
    CONTINUE = CodeItem(95, "CONTINUE")
    BAD_REQUEST = CodeItem(128, "BAD_REQUEST")
    UNAUTHORIZED = CodeItem(129, "UNAUTHORIZED")
    BAD_OPTION = CodeItem(130, "BAD_OPTION")
    FORBIDDEN = CodeItem(131, "FORBIDDEN")
    NOT_FOUND = CodeItem(132, "NOT_FOUND")
    METHOD_NOT_ALLOWED = CodeItem(133, "METHOD_NOT_ALLOWED")
    NOT_ACCEPTABLE = CodeItem(134, "NOT_ACCEPTABLE")
    REQUEST_ENTITY_INCOMPLETE = CodeItem(136, "REQUEST_ENTITY_INCOMPLETE")
    CONFLICT = CodeItem(137, "CONFLICT")
    PRECONDITION_FAILED = CodeItem(140, "PRECONDITION_FAILED")
    REQUEST_ENTITY_TOO_LARGE = CodeItem(141, "REQUEST_ENTITY_TOO_LARGE")
    UNSUPPORTED_CONTENT_FORMAT = CodeItem(143, "UNSUPPORTED_CONTENT_FORMAT")
    TOO_MANY_REQUESTS = CodeItem(157, "TOO_MANY_REQUESTS")
    INTERNAL_SERVER_ERROR = CodeItem(160, "INTERNAL_SERVER_ERROR")
    NOT_IMPLEMENTED = CodeItem(161, "NOT_IMPLEMENTED")
    BAD_GATEWAY = CodeItem(162, "BAD_GATEWAY")
    SERVICE_UNAVAILABLE = CodeItem(163, "SERVICE_UNAVAILABLE")
    GATEWAY_TIMEOUT = CodeItem(164, "GATEWAY_TIMEOUT")
    PROXY_NOT_SUPPORTED = CodeItem(165, "PROXY_NOT_SUPPORTED")

    LIST: dict[int, CodeItem] = {}


Codes.LIST = {v.number: v for k, v in vars(Codes).items() if isinstance(v, CodeItem)}

Content_types = {
    "text/plain": 0,
    "application/link-format": 40,
    "application/xml": 41,
    "application/octet-stream": 42,
    "application/exi": 47,
    "application/json": 50,
    "application/cbor": 60,
}

COAP_PREFACE = "coap://"
LOCALHOST = "127.0.0.1"
HC_PROXY_DEFAULT_PORT = 8080
COAP_DEFAULT_PORT = 5683
DEFAULT_HC_PATH = "/"
BAD_REQUEST = 400
NOT_IMPLEMENTED = 501

CoAP_HTTP = {
    "CREATED": "201",
    "DELETED": "200",
    "VALID": "304",
    "CHANGED": "200",
    "CONTENT": "200",
    "BAD_REQUEST": "400",
    "FORBIDDEN": "403",
    "NOT_FOUND": "404",
    "METHOD_NOT_ALLOWED": "400",
    "NOT_ACCEPTABLE": "406",
    "PRECONDITION_FAILED": "412",
    "REQUEST_ENTITY_TOO_LARGE": "413",
    "UNSUPPORTED_CONTENT_FORMAT": "415",
    "INTERNAL_SERVER_ERROR": "500",
    "NOT_IMPLEMENTED": "501",
    "BAD_GATEWAY": "502",
    "SERVICE_UNAVAILABLE": "503",
    "GATEWAY_TIMEOUT": "504",
    "PROXY_NOT_SUPPORTED": "502",
}
