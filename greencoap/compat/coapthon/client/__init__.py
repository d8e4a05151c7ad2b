"""CoAPthon3's ``coapthon.client``: :class:`~.helperclient.HelperClient`."""
