from django.db import models


class Record(models.Model):
    """One effect of a handler: tests count these per database to prove placement and exactly-once."""

    name = models.CharField(max_length=200)
    handler = models.CharField(max_length=200, default="")
    tenant = models.CharField(max_length=100, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name
