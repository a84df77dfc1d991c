from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "example_project.notifications"
    label = "notifications"
    verbose_name = "Notifications"
