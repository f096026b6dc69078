"""Read APIs: session metadata, the session list and project usage (read-scoped keys)."""
from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.views import APIView
from tokensite_client.events import MAX_MODEL_CHARS, MAX_STEP_CHARS

from apps.accounts.authentication import ApiKeyRateThrottle, HasReadScope
from apps.core.openapi import error_response
from apps.metrics.selectors import priced_usd, session_metadata, sessions_for_project, usage_for_project


class TimeRangeFilterSerializer(serializers.Serializer):
    """`from` and `to` query parameters (RFC 3339); `from` is a Python keyword, hence get_fields."""

    to = serializers.DateTimeField(required=False)

    def get_fields(self):
        fields = super().get_fields()
        fields["from"] = serializers.DateTimeField(required=False)
        return fields

    def validate(self, data):
        if data.get("from") and data.get("to") and data["from"] >= data["to"]:
            raise serializers.ValidationError({"to": ["to must be after from."]})
        return data


class _ReadApi(APIView):
    permission_classes = [HasReadScope]
    throttle_classes = [ApiKeyRateThrottle]


@extend_schema_serializer(component_name="SessionMetadataSource")
class _MetadataSourceSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="The SDK shim or coding agent that sent the session.")
    version = serializers.CharField(allow_null=True)


@extend_schema_serializer(component_name="SessionMetadataContextWindow")
class _MetadataContextWindowSerializer(serializers.Serializer):
    """How full the input windows of a step's or model's calls were. A call's share is its input
    tokens (cache included) over its model's input window (litellm's `max_input_tokens` or the
    project's override), fixed at ingest; calls of a model with no known window are unknown."""

    max_share = serializers.FloatField(
        allow_null=True, help_text="Largest share of a call (1.0 = a full window; may exceed 1). Null: unknown."
    )
    calls_over_80 = serializers.IntegerField(allow_null=True, help_text="Calls above 80% of the window. Null: unknown.")
    calls_over_95 = serializers.IntegerField(allow_null=True, help_text="Calls above 95% of the window. Null: unknown.")
    known_calls = serializers.IntegerField(help_text="Calls whose model's input window is known.")
    unknown_calls = serializers.IntegerField(help_text="Calls whose model's input window is unknown.")


@extend_schema_serializer(component_name="SessionMetadataStep")
class _MetadataStepSerializer(serializers.Serializer):
    step = serializers.CharField()
    input = serializers.IntegerField()
    output = serializers.IntegerField()
    calls = serializers.IntegerField()
    cost_usd = serializers.FloatField(allow_null=True, help_text="Null when every token is unpriced.")
    unpriced_tokens = serializers.IntegerField()
    tokens_per_second = serializers.FloatField()
    throttle_wait_ms = serializers.IntegerField()
    context_window = _MetadataContextWindowSerializer()


@extend_schema_serializer(component_name="SessionMetadataTokenUsage")
class _MetadataTokenUsageSerializer(serializers.Serializer):
    total_input_tokens = serializers.IntegerField()
    total_output_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()
    breakdown_by_step = _MetadataStepSerializer(
        many=True, help_text="In order of each step's earliest usage timestamp."
    )


@extend_schema_serializer(component_name="SessionMetadataTokenCounts")
class _MetadataTokenCountsSerializer(serializers.Serializer):
    input = serializers.IntegerField()
    output = serializers.IntegerField()
    cache = serializers.IntegerField()
    tool = serializers.IntegerField()
    thought = serializers.IntegerField()
    total = serializers.IntegerField()


@extend_schema_serializer(component_name="SessionMetadataTokenMetrics")
class _MetadataTokenMetricsSerializer(serializers.Serializer):
    tokensIn = serializers.IntegerField()
    tokensOut = serializers.IntegerField()
    tokensPerSecond = serializers.FloatField()
    burstTokensPerSecond = serializers.FloatField()
    throttleWaitTimeMs = serializers.IntegerField()
    sessionTokenUsage = _MetadataTokenCountsSerializer()


@extend_schema_serializer(component_name="SessionMetadataModelCost")
class _MetadataModelCostSerializer(serializers.Serializer):
    provider = serializers.CharField()
    model = serializers.CharField()
    input = serializers.IntegerField()
    output = serializers.IntegerField()
    calls = serializers.IntegerField()
    cost_usd = serializers.FloatField(allow_null=True, help_text="Null when every token is unpriced.")
    unpriced_tokens = serializers.IntegerField()
    price_source = serializers.CharField(allow_null=True)
    context_window = _MetadataContextWindowSerializer()


@extend_schema_serializer(component_name="SessionMetadataCost")
class _MetadataCostSerializer(serializers.Serializer):
    estimated_usd = serializers.FloatField(allow_null=True, help_text="Null when every token is unpriced.")
    unpriced_tokens = serializers.IntegerField()
    currency = serializers.ChoiceField(choices=["USD"])
    by_model = _MetadataModelCostSerializer(many=True, help_text="Most tokens first.")
    price_source = serializers.CharField()


@extend_schema_serializer(component_name="SessionMetadataBursts")
class _MetadataBurstsSerializer(serializers.Serializer):
    """Peak tokens per second over 1, 10 and 60 s windows (DESIGN.md section 4)."""

    def get_fields(self):
        return {window: serializers.FloatField() for window in ("1s", "10s", "60s")}


@extend_schema_serializer(component_name="SessionMetadataThrottle")
class _MetadataThrottleSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    wait_ms = serializers.IntegerField()
    share_of_wall_time = serializers.FloatField()


class SessionMetadataApi(_ReadApi):
    @extend_schema_serializer(component_name="SessionMetadata")
    class OutputSerializer(serializers.Serializer):
        """The session metadata document, DESIGN.md section 7; extra keys (developer, source,
        calls, pending_events...) beyond the seeds' shapes are documented here too."""

        session_id = serializers.CharField()
        project = serializers.CharField(help_text="team/project")
        developer = serializers.CharField(allow_null=True, help_text="The `user` attribute of the session.")
        source = _MetadataSourceSerializer(allow_null=True)
        started_at = serializers.DateTimeField(allow_null=True)
        ended_at = serializers.DateTimeField(allow_null=True)
        token_usage = _MetadataTokenUsageSerializer()
        tokenMetrics = _MetadataTokenMetricsSerializer()
        cost = _MetadataCostSerializer()
        bursts = _MetadataBurstsSerializer()
        peak_concurrency = serializers.IntegerField()
        peaks_approximate = serializers.BooleanField(
            help_text="Raw events of the session were deleted by retention before a later event arrived: bursts, "
            "peak concurrency and throttle attribution were computed without them (sums stay exact)."
        )
        throttle = _MetadataThrottleSerializer()
        calls = serializers.IntegerField()
        estimated_calls = serializers.IntegerField(help_text="Calls whose token counts a tokeniser estimated.")
        pending_events = serializers.IntegerField(help_text="Events stored but not folded yet.")

    @extend_schema(
        operation_id="session_metadata",
        summary="Session metadata document (token_usage and tokenMetrics)",
        responses={200: OutputSerializer, 404: error_response("No session with this id in the key's project.")},
    )
    def get(self, request, session_id: str):
        document = session_metadata(project=request.user.project, session_id=session_id)
        return Response(self.OutputSerializer(document).data)


class _SessionPagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"].update(minimum=1, maximum=self.max_page_size)
        return parameters

    def get_paginated_response_schema(self, schema):
        # DRF's own schema says `nullable`, which OpenAPI 3.1 (our schema's version) no longer has.
        page_link = {"type": ["string", "null"], "format": "uri", "description": "Absolute URL of the page, or null."}
        return {
            "type": "object",
            "required": ["count", "next", "previous", "results"],
            "properties": {
                "count": {"type": "integer", "description": "Sessions matching the filters, over all pages."},
                "next": page_link,
                "previous": page_link,
                "results": schema,
            },
        }


class SessionListApi(_ReadApi):
    pagination_class = _SessionPagination

    class FilterSerializer(TimeRangeFilterSerializer):
        step = serializers.CharField(required=False, max_length=MAX_STEP_CHARS)
        model = serializers.CharField(required=False, max_length=MAX_MODEL_CHARS)
        search = serializers.CharField(required=False, max_length=200)
        # The paginator would quietly fall back to its default on a bad size; a client should hear of it.
        page_size = serializers.IntegerField(required=False, min_value=1, max_value=_SessionPagination.max_page_size)

    @extend_schema_serializer(component_name="SessionSummary")
    class OutputSerializer(serializers.Serializer):
        session_id = serializers.CharField()
        started_at = serializers.DateTimeField()
        ended_at = serializers.DateTimeField()
        calls = serializers.IntegerField()
        input_tokens = serializers.IntegerField()
        output_tokens = serializers.IntegerField()
        total_tokens = serializers.IntegerField()
        cost_usd = serializers.SerializerMethodField()
        unpriced_tokens = serializers.IntegerField()
        tokens_per_second = serializers.FloatField(allow_null=True)
        burst_tokens_per_second = serializers.FloatField(source="burst_1s")
        throttle_wait_ms = serializers.FloatField()
        attributes = serializers.DictField()

        def get_cost_usd(self, session) -> float | None:
            return priced_usd(session.cost_nanousd, session.unpriced_tokens, session.total_tokens)

    @extend_schema(
        operation_id="sessions_list",
        summary="Sessions of the project, newest first",
        parameters=[
            OpenApiParameter("from", OpenApiTypes.DATETIME, description="Sessions started at or after"),
            OpenApiParameter("to", OpenApiTypes.DATETIME, description="Sessions started before"),
            OpenApiParameter("step", str),
            OpenApiParameter("model", str),
            OpenApiParameter("search", str, description="Text in the session id or its attributes"),
        ],
        responses={200: OutputSerializer(many=True), 404: error_response("The page is past the last page.")},
    )
    def get(self, request):
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        data = filters.validated_data
        sessions = sessions_for_project(
            project=request.user.project,
            started_from=data.get("from"),
            started_to=data.get("to"),
            step=data.get("step"),
            model=data.get("model"),
            search=data.get("search"),
        )
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(sessions, request, view=self)
        return paginator.get_paginated_response(self.OutputSerializer(page, many=True).data)


@extend_schema_serializer(component_name="UsageRow")
class _UsageRowSerializer(serializers.Serializer):
    """One group's totals; its key is provider and model, the step, the user, or the period, by group_by."""

    provider = serializers.CharField(required=False, help_text="group_by=model")
    model = serializers.CharField(required=False, help_text="group_by=model")
    step = serializers.CharField(required=False, help_text="group_by=step")
    user = serializers.CharField(
        required=False, allow_null=True,
        help_text="group_by=user: the developer (the `user` attribute, or the one agent telemetry names); "
        "null for the sessions that name none.",
    )
    sessions = serializers.IntegerField(required=False, help_text="group_by=user: sessions started in the range")
    period = serializers.DateTimeField(required=False, help_text="group_by=day or hour: the period's start")
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()
    calls = serializers.IntegerField()
    cost_usd = serializers.FloatField(allow_null=True, help_text="Null when every token is unpriced.")
    unpriced_tokens = serializers.IntegerField()
    throttle_count = serializers.IntegerField()
    throttle_wait_ms = serializers.IntegerField()


USAGE_GROUPINGS = ["model", "step", "user", "day", "hour"]


class UsageApi(_ReadApi):
    class FilterSerializer(TimeRangeFilterSerializer):
        group_by = serializers.ChoiceField(choices=USAGE_GROUPINGS, default="model")

    @extend_schema_serializer(component_name="Usage")
    class OutputSerializer(serializers.Serializer):
        group_by = serializers.ChoiceField(choices=USAGE_GROUPINGS)
        results = _UsageRowSerializer(many=True)

    @extend_schema(
        operation_id="usage",
        summary="Project totals grouped by model, step, user, day or hour",
        description=(
            "model, day and hour come from time buckets (tokens placed in time); step and user from the "
            "sessions that started in the range (a session counts wholly where its start falls)."
        ),
        parameters=[
            OpenApiParameter("from", OpenApiTypes.DATETIME),
            OpenApiParameter("to", OpenApiTypes.DATETIME),
            OpenApiParameter("group_by", str, enum=USAGE_GROUPINGS),
        ],
        responses={200: OutputSerializer},
    )
    def get(self, request):
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        data = filters.validated_data
        group_by = data["group_by"]
        rows = usage_for_project(
            project=request.user.project, since=data.get("from"), until=data.get("to"), group_by=group_by
        )
        return Response(self.OutputSerializer({"group_by": group_by, "results": rows}).data)
