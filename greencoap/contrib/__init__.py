"""Integrations above the API (layer 4 and up): nothing in greencoap imports
this package.  ``greencoap.contrib.locust``: Locust users that speak CoAP."""
