"""The peer comparison's business app: an ``Order`` a request creates, a ``Shipment`` its worker writes."""
