from django.apps import AppConfig


class ShopConfig(AppConfig):
    name = "bench.peers.shop"
    label = "bench_shop"
    default_auto_field = "django.db.models.BigAutoField"
