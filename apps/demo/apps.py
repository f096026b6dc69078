from django.apps import AppConfig


class DemoConfig(AppConfig):
    """The demo team `make run` seeds. Its own app, so that core depends on no feature app."""

    name = "apps.demo"
    default_auto_field = "django.db.models.BigAutoField"
