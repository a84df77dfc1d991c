"""Side effects of the order saga and the pipeline: one row per order, so a double effect fails loudly."""

from django.db import models


class Shipment(models.Model):
    order_id = models.CharField(max_length=100, unique=True)
    destination = models.CharField(max_length=100)


class Cancellation(models.Model):
    order_id = models.CharField(max_length=100, unique=True)
    reason = models.CharField(max_length=200)


class Refund(models.Model):
    order_id = models.CharField(max_length=100, unique=True)
    reason = models.CharField(max_length=200)


class Notification(models.Model):
    order_id = models.CharField(max_length=100, unique=True)
    text = models.CharField(max_length=200)


class Validation(models.Model):
    order_id = models.CharField(max_length=100, unique=True)


class Reservation(models.Model):
    order_id = models.CharField(max_length=100, unique=True)
    quantity = models.PositiveIntegerField()
