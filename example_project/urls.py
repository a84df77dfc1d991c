"""``POST /orders`` places an order (202 + its id); ``GET /orders/<id>`` shows its stage."""

from __future__ import annotations

from django.contrib import admin
from django.urls import path

from example_project.orders import views

urlpatterns = [
    path("orders", views.orders, name="orders"),
    path("orders/<str:order_id>", views.order_detail, name="order-detail"),
    path("admin/", admin.site.urls),
]
