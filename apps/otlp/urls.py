from django.urls import path

from apps.otlp.apis import OtlpLogsExportApi, OtlpMetricsExportApi, OtlpTracesExportApi

urlpatterns = [
    path("logs", OtlpLogsExportApi.as_view(), name="otlp-logs"),
    path("traces", OtlpTracesExportApi.as_view(), name="otlp-traces"),
    path("metrics", OtlpMetricsExportApi.as_view(), name="otlp-metrics"),
]
