"""Who belongs to which tenant. Lives on the shared ``default`` database with the users."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models

TENANT_NAME = RegexValidator(r"^[a-z0-9][a-z0-9_-]{0,63}$", "a tenant name is lowercase letters, digits, _ and -")


class TenantMembership(models.Model):
    """The tenant a user places orders for."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tenant_membership")
    tenant = models.CharField(max_length=64, validators=[TENANT_NAME])

    def __str__(self) -> str:
        return f"{self.user} → {self.tenant}"
