"""The two business tables of the peer workload (and of the bench's transactional sends).

A request inserts an ``Order`` and, in the same transaction, enqueues its processing; the worker inserts
a ``Shipment`` for it. Shipments are deliberately not unique per order: a tool that runs a job twice
leaves two rows, and the bench counts them (lost = orders without a shipment, doubled = extra rows).
"""

from __future__ import annotations

from django.db import models


class Order(models.Model):
    #: False for the requests that measure the same transaction without an enqueue (no shipment expected).
    with_task = models.BooleanField(default=True)

    class Meta:
        app_label = "bench_shop"


class Shipment(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="+")
    #: time.time() when the handler started (the worker's clock; the bench runs on one machine).
    handled_at = models.FloatField()

    class Meta:
        app_label = "bench_shop"
