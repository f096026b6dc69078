"""Read APIs: session metadata, the session list and project usage (read-scoped keys)."""
from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_serializer, inline_serializer
from rest_framework import serializers
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.views import APIView

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


class SessionMetadataApi(_ReadApi):
    @extend_schema(
        operation_id="session_metadata",
        summary="Session metadata document (token_usage and tokenMetrics)",
        responses={200: OpenApiTypes.OBJECT, 404: error_response("No session with this id in the key's project.")},
    )
    def get(self, request, session_id: str):
        return Response(session_metadata(project=request.user.project, session_id=session_id))


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
        step = serializers.CharField(required=False, max_length=100)
        model = serializers.CharField(required=False, max_length=200)
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


class UsageApi(_ReadApi):
    class FilterSerializer(TimeRangeFilterSerializer):
        group_by = serializers.ChoiceField(choices=["model", "step", "day", "hour"], default="model")

    @extend_schema(
        operation_id="usage",
        summary="Project totals grouped by model, step, day or hour",
        parameters=[
            OpenApiParameter("from", OpenApiTypes.DATETIME),
            OpenApiParameter("to", OpenApiTypes.DATETIME),
            OpenApiParameter("group_by", str, enum=["model", "step", "day", "hour"]),
        ],
        responses={
            200: inline_serializer(
                "Usage",
                {
                    "group_by": serializers.ChoiceField(choices=["model", "step", "day", "hour"]),
                    "results": serializers.ListField(
                        child=serializers.DictField(),
                        help_text="One row per group: its key (provider and model, step or period) and its totals.",
                    ),
                },
            )
        },
    )
    def get(self, request):
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        data = filters.validated_data
        group_by = data["group_by"]
        rows = usage_for_project(
            project=request.user.project, since=data.get("from"), until=data.get("to"), group_by=group_by
        )
        return Response({"group_by": group_by, "results": rows})
