"""POST /api/v1/events: the ingestion endpoint client SDKs post batches to."""
from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.authentication import ApiKeyRateThrottle, HasIngestScope
from apps.core.openapi import error_response
from apps.ingestion.body import request_body_read
from apps.ingestion.openapi import INGEST_REQUEST_SCHEMA, INGEST_RESPONSE_SCHEMA
from apps.ingestion.services import events_ingest


class EventIngestApi(APIView):
    permission_classes = [HasIngestScope]
    throttle_classes = [ApiKeyRateThrottle]
    # The body is read and decoded by msgspec (see apps.ingestion.schema), not by a DRF parser.
    parser_classes: list = []

    @extend_schema(
        operation_id="events_ingest",
        summary="Ingest a batch of usage and throttle events",
        request={"application/json": INGEST_REQUEST_SCHEMA},
        responses={
            202: OpenApiResponse(INGEST_RESPONSE_SCHEMA, description="Every event stored or a duplicate."),
            207: OpenApiResponse(INGEST_RESPONSE_SCHEMA, description="Some events rejected; the rest stored."),
            400: error_response("Malformed JSON, no events list, 0 or over 1000 events."),
            401: error_response("Missing, unknown or revoked key."),
            403: error_response("Key without the ingest scope."),
            413: error_response("Body over 1 MiB, or over 8 MiB gunzipped."),
            415: error_response("Not application/json, or an unknown Content-Encoding."),
            429: error_response("Rate limit of the key exceeded; see Retry-After."),
        },
        examples=[
            OpenApiExample(
                "A usage and a throttle event",
                request_only=True,
                value={
                    "events": [
                        {
                            "event_id": "0b7e7c3e-54a4-4b8e-9c55-2f1f0f3f7a01",
                            "type": "usage",
                            "session_id": "run-2026-11-23-001",
                            "step": "persona_generation",
                            "provider": "openai",
                            "model": "gpt-4o",
                            "timestamp": "2026-11-23T09:00:00Z",
                            "duration_ms": 2400,
                            "time_to_first_token_ms": 350,
                            "input_tokens": 1250,
                            "output_tokens": 875,
                            "cache_read_tokens": 512,
                            "call_id": "call-1",
                        },
                        {
                            "event_id": "0b7e7c3e-54a4-4b8e-9c55-2f1f0f3f7a02",
                            "type": "throttle",
                            "session_id": "run-2026-11-23-001",
                            "step": "persona_generation",
                            "provider": "openai",
                            "model": "gpt-4o",
                            "timestamp": "2026-11-23T08:59:57.500Z",
                            "wait_ms": 2500,
                            "status_code": 429,
                            "attempt": 1,
                            "retry_after_ms": 2500,
                            "call_id": "call-1",
                        },
                    ]
                },
            )
        ],
    )
    def post(self, request):
        result = events_ingest(project=request.user.project, body=request_body_read(request._request))
        return Response(result.as_dict(), status=207 if result.rejected else 202)
