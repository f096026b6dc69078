"""POST /otlp/v1/{logs,traces,metrics}: the OTLP/HTTP receiver coding agents and instrumented apps export to.

Authentication, the ingest scope, the per-key rate limit and the JSON error bodies are the events
API's own (DRF classes and apps.core.exception_handler); only a successful reply is OTLP's
Export*ServiceResponse, in the request's encoding.
"""
from __future__ import annotations

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import extend_schema
from rest_framework.views import APIView

from apps.accounts.authentication import ApiKeyRateThrottle, HasIngestScope
from apps.core.errors import ErrorCode, error_body
from apps.ingestion.body import request_body_read_limited
from apps.otlp.decoding import MEDIA_JSON, MEDIA_PROTOBUF, response_encode
from apps.otlp.records import SIGNAL_LOGS, SIGNAL_METRICS, SIGNAL_TRACES
from apps.otlp.services import otlp_export


class _OtlpExportApi(APIView):
    permission_classes = [HasIngestScope]
    throttle_classes = [ApiKeyRateThrottle]
    # The body is decoded by the opentelemetry-proto classes (apps.otlp.decoding), not a DRF parser.
    parser_classes: list = []
    signal = ""

    def post(self, request):
        media_type, body = request_body_read_limited(
            request._request,
            media_types=(MEDIA_PROTOBUF, MEDIA_JSON),
            max_bytes=settings.OTLP_MAX_BODY_BYTES,
            max_decompressed_bytes=settings.OTLP_MAX_DECOMPRESSED_BYTES,
            what=f"OTLP {self.signal}",
        )
        result = otlp_export(project=request.user.project, signal=self.signal, media_type=media_type, body=body)
        payload = response_encode(
            signal=self.signal, media_type=media_type, rejected=result.rejected, error_message=result.summary()
        )
        response = HttpResponse(payload, content_type=media_type, status=200)
        response["X-TokenSite-Records-Used"] = str(result.used)
        response["X-TokenSite-Records-Ignored"] = str(result.ignored)
        response["X-TokenSite-Records-Rejected"] = str(result.rejected)
        response["X-TokenSite-Events-Stored"] = str(result.events_accepted)
        return response


@extend_schema(exclude=True)
class OtlpLogsExportApi(_OtlpExportApi):
    signal = SIGNAL_LOGS


@extend_schema(exclude=True)
class OtlpTracesExportApi(_OtlpExportApi):
    signal = SIGNAL_TRACES


@extend_schema(exclude=True)
class OtlpMetricsExportApi(_OtlpExportApi):
    signal = SIGNAL_METRICS


@csrf_exempt
def otlp_endpoint_misplaced(request, signal: str):
    """/v1/{logs,traces,metrics} at the site's root: where an exporter sends when its endpoint was
    set to the server's address without `/otlp`, the likeliest set-up slip. A JSON 404 that says
    how to fix it, rather than a page the exporter only logs as "404"."""
    message = (
        f"OTLP {signal} are received at /otlp/v1/{signal}: set OTEL_EXPORTER_OTLP_ENDPOINT to this "
        "server's address followed by /otlp."
    )
    return JsonResponse(error_body(ErrorCode.NOT_FOUND, message), status=404)
