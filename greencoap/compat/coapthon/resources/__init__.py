"""CoAPthon3's ``coapthon.resources``: :class:`~.resource.Resource`."""
