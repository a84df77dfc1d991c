"""django_dramatiq discovers actors in a module of an installed app (``DRAMATIQ_AUTODISCOVER_MODULES``)."""

from ..dramatiq_actors import ship_order

__all__ = ["ship_order"]
