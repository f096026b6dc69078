"""How /api/schema/ is generated: the one error body, and the error replies every operation can give.

Every API error leaves through `apps.core.exception_handler` (or the same JSON from the NUL guard
and the error views), so each operation documents them here once instead of view by view.
"""
from __future__ import annotations

from drf_spectacular import openapi
from drf_spectacular.utils import OpenApiResponse, extend_schema_serializer
from rest_framework import serializers

from apps.core.errors import ErrorCode

# A URL with NUL is a 400 (apps.core.middleware) and DRF's CharField refuses NUL, so a text a
# client sends has none. Non-empty: an empty value is allowed separately (allowEmptyValue, or
# drf-spectacular's `maxLength: 0` branch for a blank-allowed field), and the two must not overlap.
TEXT_WITHOUT_NUL = "^[^\\x00]+$"


@extend_schema_serializer(component_name="ErrorDetail")
class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.ChoiceField(
        choices=[(code.value, code.name) for code in ErrorCode],
        help_text="Stable machine-readable code, e.g. invalid_api_key or rate_limited (apps.core.errors.ErrorCode).",
    )
    message = serializers.CharField(help_text="What went wrong, for a person.")
    details = serializers.JSONField(required=False, help_text="Per-field errors or other context, when there is some.")


@extend_schema_serializer(component_name="Error")
class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


ERRORS_OF_EVERY_OPERATION = {
    400: "Invalid parameters or body, or a NUL character in the URL.",
    401: "Missing, unknown or revoked API key.",
    403: "The key's scope does not allow this operation.",
    429: "The key's rate limit is exceeded; retry after the Retry-After header's seconds.",
    503: "The database is unavailable; retry later.",
}
ERRORS_OF_A_REQUEST_BODY = {
    413: "The body is over the size limit.",
    415: "The body is not application/json.",
}


def error_response(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=description)


class AutoSchema(openapi.AutoSchema):
    """drf-spectacular's AutoSchema plus what every TokenSite operation shares.

    An operation keeps the responses it documents itself; the errors above are added where it
    does not. A raw JSON Schema request body that requires properties is marked required
    (drf-spectacular only infers that for serializers). Optional query parameters are read by DRF
    serializers and the paginator, which take `?name=` as leaving the parameter out, so the schema
    says an empty value is allowed. Free text sent in the URL or a serializer's body says it takes
    no NUL character.
    """

    def _get_parameters(self):
        parameters = super()._get_parameters()
        for parameter in parameters:
            if parameter["in"] == "query" and not parameter.get("required"):
                parameter["allowEmptyValue"] = True
            _forbid_nul(parameter.get("schema", {}))
        return parameters

    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if direction == "request" and isinstance(field, serializers.CharField):
            _forbid_nul(schema)
        return schema

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        errors = dict(ERRORS_OF_EVERY_OPERATION)
        if self.method in ("POST", "PUT", "PATCH"):
            errors.update(ERRORS_OF_A_REQUEST_BODY)
        for code, text in errors.items():
            if str(code) not in responses:
                responses[str(code)] = self._get_response_for_code(error_response(text), str(code), direction=direction)
        return dict(sorted(responses.items()))

    def _get_request_for_media_type(self, serializer, direction="request"):
        schema, required = super()._get_request_for_media_type(serializer, direction)
        if isinstance(serializer, dict) and serializer.get("required"):
            required = True
        return schema, required


def _forbid_nul(schema: dict) -> None:
    if schema.get("type") == "string" and not {"enum", "format", "pattern"} & set(schema):
        schema["pattern"] = TEXT_WITHOUT_NUL
