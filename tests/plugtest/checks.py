"""Small helpers the runners share: link-format targets, Block values,
Observe sequence arithmetic, the bodies the resources serve."""

from __future__ import annotations

import re

from .server import LARGE_BODY, obs_large_body, pattern

__all__ = [
    "LARGE_BODY",
    "UPLOAD",
    "link_targets",
    "link_attrs",
    "obs_large_state",
    "block_value",
    "seq_newer",
    "pattern",
    "obs_large_body",
]

#: what the Block1 TDs upload (3 x 256 + a runt at 256-byte blocks)
UPLOAD = pattern("upload", 900)

_LINK = re.compile(r'<([^>]*)>((?:;[^,;="]*(?:="[^"]*"|=[^,;]*)?)*)')


def link_targets(payload: bytes | str) -> set[str]:
    """The targets of a link-format document (a parser independent of greencoap's)."""
    text = payload.decode() if isinstance(payload, bytes) else payload
    return {m.group(1) for m in _LINK.finditer(text)}


def link_attrs(payload: bytes | str) -> dict[str, dict[str, str]]:
    """target -> {attribute: value} (valueless attributes map to "")."""
    text = payload.decode() if isinstance(payload, bytes) else payload
    out = {}
    for m in _LINK.finditer(text):
        attrs = {}
        for part in m.group(2).split(";")[1:]:
            name, _, value = part.partition("=")
            attrs[name] = value.strip('"')
        out[m.group(1)] = attrs
    return out


def block_value(raw: bytes) -> tuple[int, bool, int]:
    """A Block1/Block2 option value as (NUM, M, SZX) (RFC 7959 §2.2)."""
    v = int.from_bytes(raw, "big")
    return v >> 4, bool(v & 8), v & 7


def seq_newer(a: int, b: int) -> bool:
    """RFC 7641 §3.4: is 24-bit sequence number ``b`` newer than ``a``?"""
    return (a < b and b - a < 1 << 23) or (a > b and a - b > 1 << 23)


_OBS_LARGE = re.compile(rb"^0000obs(\d+)")


def obs_large_state(body: bytes) -> int | None:
    """Which state of /obs-large ``body`` is (None: not one of them, or torn)."""
    m = _OBS_LARGE.match(body)
    if m is None:
        return None
    n = int(m.group(1))
    return n if body == obs_large_body(n) else None


def check_recovery(seen: list, client_stops: bool = True) -> dict[str, int]:
    """TD_COAP_CORE_15/16 step 8 on what a :class:`~.wire.Tap` saw: every
    dropped datagram was made good by a retransmission -- a dropped CON
    (request or separate response) is sent again with its MID; a dropped ACK
    (piggybacked response, empty ACK, or the client's ACK of a separate
    response) makes its CON go again -- except that a client whose request
    was acknowledged empty, or whose separate response arrived, stops
    retransmitting it (not checked with ``client_stops=False``: a client
    property, for a peer client that does not).  A dropped ACK of which
    another copy got through needs nothing more.  Returns the counts of each
    case seen."""
    from greencoap import Code, Type

    from .wire import C2S, S2C

    msgs = [(s, s.msg) for s in seen]
    cases = {"request": 0, "request ACK": 0, "response": 0, "response ACK": 0}

    def later(i: int, direction: str, pred) -> bool:
        return any(s.direction == direction and pred(m) for s, m in msgs[i + 1 :])

    def answered(req) -> bool:  # the client got a response (or an empty ACK) for req
        return any(
            s.direction == S2C
            and not s.dropped
            and (
                (m.mtype == Type.ACK and m.mid == req.mid)
                or (m.token == req.token and m.code >= 64)
            )
            for s, m in msgs
        )

    requests = {m.mid: m for s, m in msgs if s.direction == C2S and 0 < m.code < 32}
    delivered = {(s.direction, m.mid) for s, m in msgs if not s.dropped and m.mtype == Type.ACK}
    for i, (s, m) in enumerate(msgs):
        if not s.dropped:
            continue
        if m.mtype == Type.ACK and (s.direction, m.mid) in delivered:
            # another copy got through: its CON had been retransmitted
            cases["request ACK" if s.direction == S2C else "response ACK"] += 1
            continue
        again_same = later(i, s.direction, lambda x, m=m: x.mid == m.mid and x.mtype == m.mtype)
        if s.direction == C2S and m.mtype == Type.CON:
            cases["request"] += 1
            assert again_same or answered(m), f"dropped request {m} was not retransmitted"
        elif s.direction == S2C and m.mtype == Type.CON:
            cases["response"] += 1
            assert again_same, f"dropped separate response {m} was not retransmitted"
        elif s.direction == S2C and m.mtype == Type.ACK:
            cases["request ACK"] += 1
            req = requests.get(m.mid)
            assert req is not None, m
            resent = later(i, C2S, lambda x, m=m: x.mid == m.mid)
            separate = m.code == Code.EMPTY and answered(req)
            assert resent or separate, f"the request of the dropped ACK {m} was not retransmitted"
        elif s.direction == C2S and m.mtype == Type.ACK:
            cases["response ACK"] += 1
            assert later(i, S2C, lambda x, m=m: x.mid == m.mid and x.mtype == Type.CON), (
                f"the separate response of the dropped ACK {m} was not retransmitted"
            )
    # a CON response that arrived stops the request's retransmission (one
    # that crossed it on the way, within GRACE seconds, excepted)
    for i, (s, m) in enumerate(msgs if client_stops else ()):
        if s.direction == S2C and not s.dropped and m.mtype == Type.CON and m.code >= 64:
            late = [
                x
                for t, x in msgs[i + 1 :]
                if t.direction == C2S and t.t > s.t + GRACE and x.token == m.token
                if 0 < x.code < 32
            ]
            story = "\n".join(
                f"{t.t - s.t:+.3f} {t.direction} {'dropped ' if t.dropped else ''}{x}"
                for t, x in msgs
                if x.token == m.token or x.mid in {y.mid for _, y in msgs if y.token == m.token}
            )
            assert not late, f"the request was retransmitted after its response arrived:\n{story}"
    return cases


#: how long a retransmission may still cross the response it crossed on the wire
GRACE = 0.05
