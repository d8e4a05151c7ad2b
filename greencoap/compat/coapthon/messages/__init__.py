"""CoAPthon3's ``coapthon.messages``: Message, Request, Response, Option."""
