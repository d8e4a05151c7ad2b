"""The ETSI CoAP plugtest test descriptions (CoAP#4: TD_COAP_CORE, _LINK, _BLOCK,
_OBS) as part of greencoap's own suite.

- :mod:`.tds`: the TDs (identifier, objective) and the peers each can run with;
- :mod:`.server`: the plugtest resources on a greencoap server (also a script);
- :mod:`.aiocoap_peer`: the same resources on aiocoap (a standalone script);
- :mod:`.wire`: raw datagrams, libcoap's ``-v 7`` output, relays that record;
- ``test_server_*.py``: direction A, greencoap's server against a raw socket,
  libcoap's ``coap-client`` and aiocoap's client;
- ``test_client_*.py``: direction B, greencoap's client against the aiocoap
  peer and libcoap's ``coap-server``;
- :mod:`.matrix`: runs the suite and prints the TD × direction × peer table.
"""
