from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "apps.accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Registers the API key's OpenAPI security scheme with drf-spectacular.
        from apps.accounts import openapi  # noqa: F401
