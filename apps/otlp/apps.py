from django.apps import AppConfig


class OtlpConfig(AppConfig):
    name = "apps.otlp"
    label = "otlp"
