"""DTLS 1.2 with pre-shared keys as a sans-I/O engine (layer 2; RFC 6347 over
RFC 5246, PSK per RFC 4279, TLS_PSK_WITH_AES_128_CCM_8 per RFC 6655, with the
extended master secret of RFC 7627 and the renegotiation_info of RFC 5746).

* :class:`DtlsSession` — one association, client or server role;
* :class:`DtlsServer` — stateless HelloVerifyRequest cookies and the sessions
  of a server socket, keyed by peer;
* :class:`SessionSchedule` — when each session of a table needs its timer
  (the server's, and a client channel's);
* :class:`DtlsError` — why a session failed, with the alert code.

Modules, one concern each: :mod:`.record` (record layer, AEAD, replay window),
:mod:`.prf` (key derivation), :mod:`.messages` (handshake messages),
:mod:`.reassembly` (fragments and flights), :mod:`.cookie`, :mod:`.session`
(the state machine), :mod:`.schedule`, :mod:`.server`, :mod:`.alerts`.
"""

from .alerts import ALERT_NAMES, DtlsError, alert_name
from .schedule import SessionSchedule
from .server import DtlsServer
from .session import DtlsSession
from .states import CLOSED, ESTABLISHED, FAILED, HANDSHAKING, BugLog, State

__all__ = [
    "ALERT_NAMES",
    "BugLog",
    "CLOSED",
    "ESTABLISHED",
    "FAILED",
    "HANDSHAKING",
    "SessionSchedule",
    "DtlsError",
    "DtlsServer",
    "DtlsSession",
    "State",
    "alert_name",
]
