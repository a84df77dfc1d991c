from django.apps import AppConfig


class FulfillmentConfig(AppConfig):
    name = "example_project.fulfillment"
    label = "fulfillment"
    verbose_name = "Fulfillment"
