"""The product's routes, plus the naive baseline mounted only for the benchmark."""
from django.urls import include, path

from benchmarks._ingest_support.naive import NaiveEventIngestApi

urlpatterns = [
    path("bench/naive/events", NaiveEventIngestApi.as_view(), name="bench-naive-events"),
    path("", include("tokensite.urls")),
]
