from django.apps import AppConfig


class EcotoneConfig(AppConfig):
    name = "ecotone_django"
    verbose_name = "Messaging (ecotone)"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)
