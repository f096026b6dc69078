"""Every /api/v1/ route, in one place."""
from django.urls import path

from apps.budgets.apis import BudgetListApi
from apps.ingestion.apis import EventIngestApi
from apps.metrics.apis import SessionListApi, SessionMetadataApi, UsageApi
from apps.pricing.apis import TokenizeApi

urlpatterns = [
    path("events", EventIngestApi.as_view(), name="events-ingest"),
    path("sessions", SessionListApi.as_view(), name="sessions-list"),
    # session ids may hold any printable character, "/" included, hence path:
    path("sessions/<path:session_id>/metadata", SessionMetadataApi.as_view(), name="session-metadata"),
    path("usage", UsageApi.as_view(), name="usage"),
    path("tokenize", TokenizeApi.as_view(), name="tokenize"),
    path("budgets", BudgetListApi.as_view(), name="budgets-list"),
]
