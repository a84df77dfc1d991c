from django.apps import AppConfig


class EcotoneConfig(AppConfig):
    name = "ecotone_django"
    verbose_name = "Messaging (ecotone)"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the system checks; they read the channels and the handlers, so not before the apps are ready.
        from . import checks  # noqa: F401, PLC0415
