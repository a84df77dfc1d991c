from django.apps import AppConfig


class SagaAppConfig(AppConfig):
    name = "tests.sagaapp"
    label = "sagaapp"
    default_auto_field = "django.db.models.BigAutoField"
