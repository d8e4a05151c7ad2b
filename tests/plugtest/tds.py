"""The ETSI CoAP#4 plugtest test descriptions run by this suite.

Identifiers and objectives follow the CoAP#4 TDs (the YAML kept by
Carsten Bormann in ``td-coap4``: ``base.yml``, ``link.yml``, ``block.yml``;
the same numbering as Californium's and F-Interop's plugtest tools).  In
this numbering the lossy-context TDs are CORE_15 (piggybacked) and CORE_16
(separate); CoAP#1 had them as 14 and 15.  There is no TD_COAP_OBS_03.

Each TD is run in up to five columns (see :data:`COLUMNS`): greencoap's
server against a raw socket, libcoap's client and aiocoap's client
(direction A), and greencoap's client against the aiocoap peer and libcoap's
server (direction B).  :data:`NOT_APPLICABLE` says why a cell has no test;
:data:`PEER_NOTES` records where a peer (not greencoap) departs from a verify
step, which the test then checks as far as the peer allows.
"""

from __future__ import annotations

CORE = {
    "TD_COAP_CORE_01": "Perform GET transaction (CON mode)",
    "TD_COAP_CORE_02": "Perform DELETE transaction (CON mode)",
    "TD_COAP_CORE_03": "Perform PUT transaction (CON mode)",
    "TD_COAP_CORE_04": "Perform POST transaction (CON mode)",
    "TD_COAP_CORE_05": "Perform GET transaction (NON mode)",
    "TD_COAP_CORE_06": "Perform DELETE transaction (NON mode)",
    "TD_COAP_CORE_07": "Perform PUT transaction (NON mode)",
    "TD_COAP_CORE_08": "Perform POST transaction (NON mode)",
    "TD_COAP_CORE_09": "GET with separate response (CON mode, no piggyback)",
    "TD_COAP_CORE_10": "GET containing non-empty Token (CON mode)",
    "TD_COAP_CORE_11": "GET with non-empty Token and a separate response (CON mode)",
    "TD_COAP_CORE_12": "GET using an empty Token (CON mode)",
    "TD_COAP_CORE_13": "GET containing several URI-Path options (CON mode)",
    "TD_COAP_CORE_14": "GET containing several URI-Query options (CON mode)",
    "TD_COAP_CORE_15": "GET (CON mode, piggybacked response) in a lossy context",
    "TD_COAP_CORE_16": "GET (CON mode, delayed response) in a lossy context",
    "TD_COAP_CORE_17": "GET with a separate response (NON mode)",
    "TD_COAP_CORE_18": "POST with responses containing several Location-Path options",
    "TD_COAP_CORE_19": "POST with responses containing several Location-Query options",
    "TD_COAP_CORE_20": "GET containing the Accept option (CON mode)",
    "TD_COAP_CORE_21": "GET containing the ETag option (CON mode)",
    "TD_COAP_CORE_22": "GET with ETag responses and PUT with If-Match (CON mode)",
    "TD_COAP_CORE_23": "PUT containing the If-None-Match option (CON mode)",
    "TD_COAP_CORE_31": "Perform CoAP Ping (CON mode)",
}

LINK = {
    "TD_COAP_LINK_01": "Access to well-known interface for resource discovery",
    "TD_COAP_LINK_02": "Use filtered requests for limiting discovery results",
    "TD_COAP_LINK_03": "Handle empty prefix value strings",
    "TD_COAP_LINK_04": "Filter discovery results in presence of multiple rt attributes",
    "TD_COAP_LINK_05": "Filter discovery results using if attribute and prefix value strings",
    "TD_COAP_LINK_06": "Filter discovery results using sz attribute and prefix value strings",
    "TD_COAP_LINK_07": "Filter discovery results using href attribute and complete value strings",
    "TD_COAP_LINK_08": "Filter discovery results using href attribute and prefix value strings",
    "TD_COAP_LINK_09": "Arrange link descriptions hierarchically",
}

BLOCK = {
    "TD_COAP_BLOCK_01": "GET blockwise transfer for large resource (early negotiation)",
    "TD_COAP_BLOCK_02": "GET blockwise transfer for large resource (late negotiation)",
    "TD_COAP_BLOCK_03": "PUT blockwise transfer for large resource",
    "TD_COAP_BLOCK_04": "POST blockwise transfer for creating large resource",
    "TD_COAP_BLOCK_05": "POST with two-way blockwise transfer",
    "TD_COAP_BLOCK_06": "GET blockwise transfer (early negotiation, 16 byte block size)",
}

OBS = {
    "TD_COAP_OBS_01": "Handle resource observation with CON messages",
    "TD_COAP_OBS_02": "Handle resource observation with NON messages",
    "TD_COAP_OBS_04": "Client detection of deregistration (Max-Age)",
    "TD_COAP_OBS_05": "Server detection of deregistration (client OFF)",
    "TD_COAP_OBS_06": "Server detection of deregistration (explicit RST)",
    "TD_COAP_OBS_07": "Server cleans the observers list on DELETE",
    "TD_COAP_OBS_08": "Server cleans the observers list when the content-format changes",
    "TD_COAP_OBS_09": "Update of the observed resource",
    "TD_COAP_OBS_10": "GET does not cancel resource observation",
    "TD_COAP_OBS_11": "Handle resource observation with CON messages (lossy case)",
    "TD_COAP_OBS_12": "GET with Observe=1 does cancel resource observation",
    "TD_COAP_OBS_13": "Handle observation of large resources (with Block2)",
    "TD_COAP_OBS_14": "Handle observation of variable size large resources (with Block2)",
}

ALL = {**CORE, **LINK, **BLOCK, **OBS}

#: column title -> the test module that fills it
COLUMNS = {
    "greencoap server ← raw": "test_server_raw",
    "← libcoap client": "test_server_libcoap",
    "← aiocoap client": "test_server_aiocoap",
    "greencoap client → aiocoap server": "test_client_aiocoap",
    "→ libcoap server": "test_client_libcoap",
}

_NO_POST = "libcoap's server has no resource that accepts POST (4.05 everywhere)"
_LC_TIMER = (
    "libcoap's retransmission timer is fixed at ACK_TIMEOUT 2 s (no option): every datagram "
    "it has to recover costs 2-3 s, beyond the suite's time budget"
)

#: (TD, module) -> why that cell has no test
NOT_APPLICABLE: dict[tuple[str, str], str] = {
    # direction A, libcoap's coap-client 4.3.1
    ("TD_COAP_CORE_12", "test_server_libcoap"): (
        'coap-client always sends a token (-T "" still gives 0x01)'
    ),
    ("TD_COAP_CORE_15", "test_server_libcoap"): _LC_TIMER
    + " (here the client's own retransmissions are the TD)",
    ("TD_COAP_CORE_31", "test_server_libcoap"): "coap-client has no CoAP ping (empty CON) command",
    ("TD_COAP_OBS_04", "test_server_libcoap"): (
        "coap-client does not register again when Max-Age passes, and -s cannot be told to"
    ),
    ("TD_COAP_OBS_10", "test_server_libcoap"): (
        "coap-client makes one request per process: the unrelated GET cannot come from the "
        "observing endpoint"
    ),
    # direction A, aiocoap's client 0.4.17
    ("TD_COAP_OBS_12", "test_server_aiocoap"): (
        "aiocoap cancels an observation by an RST to the next notification (no GET with "
        "Observe=1) and picks its tokens itself"
    ),
    # direction B, libcoap's coap-server 4.3.1
    ("TD_COAP_CORE_04", "test_client_libcoap"): _NO_POST,
    ("TD_COAP_CORE_08", "test_client_libcoap"): _NO_POST,
    ("TD_COAP_CORE_18", "test_client_libcoap"): _NO_POST + " or answers with Location-Path",
    ("TD_COAP_CORE_19", "test_client_libcoap"): _NO_POST + " or answers with Location-Query",
    ("TD_COAP_CORE_20", "test_client_libcoap"): (
        "libcoap's server has no resource in two Content-Formats"
    ),
    ("TD_COAP_CORE_21", "test_client_libcoap"): "libcoap's resources send no ETag",
    ("TD_COAP_CORE_22", "test_client_libcoap"): "libcoap's resources send no ETag",
    ("TD_COAP_CORE_23", "test_client_libcoap"): (
        "libcoap's server ignores If-None-Match (a second PUT gets 2.04)"
    ),
    ("TD_COAP_LINK_04", "test_client_libcoap"): (
        'no libcoap resource has several rt values (its only rt is /time\'s "ticks")'
    ),
    ("TD_COAP_LINK_06", "test_client_libcoap"): "no libcoap resource has an sz attribute",
    ("TD_COAP_LINK_09", "test_client_libcoap"): "libcoap's server has no /path hierarchy",
    ("TD_COAP_BLOCK_04", "test_client_libcoap"): _NO_POST,
    ("TD_COAP_BLOCK_05", "test_client_libcoap"): _NO_POST,
    ("TD_COAP_OBS_05", "test_client_libcoap"): _LC_TIMER
    + "; it gives up on an observer after MAX_TRANSMIT_SPAN, 45 s",
    ("TD_COAP_OBS_08", "test_client_libcoap"): (
        "libcoap's server keeps no Content-Format for its resources: a PUT in another format "
        "is notified as 2.05, never 4.06"
    ),
    ("TD_COAP_OBS_11", "test_client_libcoap"): _LC_TIMER
    + " (the lost notifications and ACKs are the server's to recover)",
}

#: (TD, module) -> where the peer departs from the TD (checked as far as it allows)
PEER_NOTES: dict[tuple[str, str], str] = {
    ("TD_COAP_CORE_16", "test_server_aiocoap"): (
        "aiocoap goes on retransmitting a request whose empty ACK was lost after the separate "
        "response came, and RSTs that response's retransmissions (step 9, the client's, not "
        "checked)"
    ),
    ("TD_COAP_CORE_16", "test_server_libcoap"): (
        "only the server's CON response and the client's ACK of it are dropped "
        "(libcoap recovers its own losses after 2 s)"
    ),
    ("TD_COAP_CORE_12", "test_server_aiocoap"): (
        "aiocoap has no zero-length-token option: its token counter is set so that the next "
        "token is empty"
    ),
    ("TD_COAP_CORE_31", "test_server_aiocoap"): (
        "aiocoap has no ping command: its message layer sends the empty CON"
    ),
    ("TD_COAP_OBS_04", "test_server_aiocoap"): (
        "aiocoap does not register again by itself: the test does, with a new token"
    ),
    ("TD_COAP_OBS_12", "test_server_libcoap"): (
        "coap-client exits without waiting for the answer to its deregistration (read on the wire)"
    ),
    ("TD_COAP_LINK_03", "test_client_aiocoap"): (
        "aiocoap's server answers rt=* with links that have no rt too; greencoap's client "
        "filters them out again"
    ),
    ("TD_COAP_LINK_09", "test_client_aiocoap"): (
        "aiocoap lists /.well-known/core itself among the ct=40 links"
    ),
    ("TD_COAP_CORE_15", "test_client_libcoap"): (
        "only the client's requests and the server's ACKs are dropped (libcoap recovers its "
        "own losses after 2 s)"
    ),
    ("TD_COAP_CORE_16", "test_client_libcoap"): (
        "only the client's requests and the server's ACKs are dropped (libcoap recovers its "
        "own losses after 2 s)"
    ),
    ("TD_COAP_OBS_07", "test_client_libcoap"): (
        "libcoap sends the 4.04 as a NON (the TD says CON), and loses it when the DELETE "
        "comes right after a PUT"
    ),
    ("TD_COAP_BLOCK_03", "test_client_libcoap"): (
        "libcoap's last answer of an upload carries no Block1 option"
    ),
    ("TD_COAP_OBS_04", "test_client_libcoap"): (
        "on /time (Max-Age 1, a new state every second): libcoap's dynamic resources carry "
        "no Max-Age"
    ),
}
for _td in CORE:
    PEER_NOTES.setdefault(
        (_td, "test_client_libcoap"),
        "libcoap's server sends no Content-Format option (that step is not checked)",
    )
PEER_NOTES = {k: v for k, v in PEER_NOTES.items() if v and k not in NOT_APPLICABLE}

# -- what the plugtest resources answer (greencoap's and aiocoap's servers) --------

#: LINK TD -> (the /.well-known/core query, the link targets it must give)
LINK_FILTERS = {
    "TD_COAP_LINK_02": ("rt=Type1", {"/link1", "/link3"}),
    "TD_COAP_LINK_03": ("rt=*", {"/link1", "/link2", "/link3", "/path/sub3"}),
    "TD_COAP_LINK_04": ("rt=Type2", {"/link1", "/link2"}),
    "TD_COAP_LINK_05": ("if=If*", {"/link1", "/link2"}),
    "TD_COAP_LINK_06": ("sz=*", {"/link2", "/large"}),
    "TD_COAP_LINK_07": ("href=/link1", {"/link1"}),
    "TD_COAP_LINK_08": ("href=/link*", {"/link1", "/link2", "/link3"}),
}

#: what TD_COAP_LINK_01 must find (at least) on a plugtest server
PLUGTEST_RESOURCES = {
    "/test",
    "/seg1/seg2/seg3",
    "/query",
    "/separate",
    "/large",
    "/large-update",
    "/large-create",
    "/large-post",
    "/obs",
    "/obs-non",
    "/obs-large",
    "/validate",
    "/create1",
    "/location-query",
    "/multi-format",
    "/link1",
    "/link2",
    "/link3",
    "/path",
    "/path/sub1",
    "/path/sub2",
    "/path/sub3",
}

PATH_SUBS = {"/path/sub1", "/path/sub2", "/path/sub3"}
