"""Drop-in replacements for other CoAP libraries' APIs, built on greencoap's
public API (a layer above layer 4: nothing in greencoap imports it).

* :mod:`greencoap.compat.coapthon` — CoAPthon3 1.0.2's public modules.
"""
