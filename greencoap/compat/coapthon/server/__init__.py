"""CoAPthon3's ``coapthon.server``: :class:`~.coap.CoAP`."""
