"""POST /api/v1/tokenize: count tokens before a call, with the model's own tokeniser (F-063)."""
from __future__ import annotations

from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView
from tokensite_client.events import MAX_MODEL_CHARS

from apps.accounts.authentication import ApiKeyRateThrottle, HasAnyScope
from apps.core.errors import BadRequest, ErrorCode
from apps.pricing.counting import count_tokens

MAX_TEXT_CHARS = 1_000_000


class _JsonStringField(serializers.CharField):
    """A CharField that takes only a JSON string: DRF's would turn `"model": 0` into "0"."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class TokenizeApi(APIView):
    permission_classes = [HasAnyScope]
    throttle_classes = [ApiKeyRateThrottle]

    @extend_schema_serializer(component_name="Tokenize")
    class InputSerializer(serializers.Serializer):
        # Not trimmed: a blank-looking name is still a name, counted with the default tokeniser.
        model = _JsonStringField(max_length=MAX_MODEL_CHARS, trim_whitespace=False)
        text = _JsonStringField(required=False, allow_blank=True, trim_whitespace=False, max_length=MAX_TEXT_CHARS)
        messages = serializers.ListField(child=serializers.DictField(), required=False, max_length=10_000)

        def validate(self, data):
            if ("text" in data) == ("messages" in data):
                raise serializers.ValidationError("Send exactly one of text or messages.")
            return data

    @extend_schema_serializer(component_name="TokenCount")
    class OutputSerializer(serializers.Serializer):
        tokens = serializers.IntegerField()
        tokenizer = serializers.CharField()

    @extend_schema(
        operation_id="tokenize",
        summary="Count the tokens of a text or a message list with the model's tokeniser",
        request=InputSerializer,
        responses={200: OutputSerializer},
    )
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            counted = count_tokens(data["model"], text=data.get("text"), messages=data.get("messages"))
        except Exception as exc:  # noqa: BLE001 - a tokeniser choking on client input is the client's 400
            raise BadRequest(f"Could not count tokens: {exc}", code=ErrorCode.TOKENIZE_FAILED) from None
        return Response(self.OutputSerializer(counted).data)


class TokenizeInputSchema(OpenApiSerializerExtension):
    """The body takes exactly one of `text` and `messages`: the serializer checks it, the schema says it."""

    target_class = TokenizeApi.InputSerializer

    def map_serializer(self, auto_schema, direction):
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        one_of = [{"title": "With text", "required": ["text"]}, {"title": "With messages", "required": ["messages"]}]
        return {**schema, "oneOf": one_of}
