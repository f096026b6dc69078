"""The naive ingest path, the baseline the product's path is measured against.

What a first DRF implementation would be: `request.data` parsed by DRF's JSON parser, a plain
`Serializer(many=True)`, each event priced with the same price book, `bulk_create(ignore_conflicts=True)`
into the same `RawEvent` table, and the same after-commit hand-off to the metrics pipeline. It
sits behind the same authentication, scope check and rate limit as the real endpoint, so the two
differ only in how a batch is validated and written. It takes usage events only (what the
benchmark posts) and, unlike the product, cannot tell duplicates from new rows.
"""
from __future__ import annotations

from datetime import timedelta

from django.db import transaction
from django.utils import timezone
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.authentication import ApiKeyRateThrottle, HasIngestScope
from apps.ingestion.models import RawEvent
from apps.metrics.dispatch import project_fold_enqueue
from apps.pricing.cost import event_cost_nanousd
from apps.pricing.selectors import price_book_for_project

MAX_TOKENS = 10**9
MAX_DURATION_MS = 24 * 60 * 60 * 1000


class NaiveUsageEventSerializer(serializers.Serializer):
    event_id = serializers.UUIDField()
    type = serializers.ChoiceField(choices=["usage"])
    session_id = serializers.CharField(max_length=200)
    step = serializers.CharField(max_length=100, default="default")
    provider = serializers.CharField(max_length=100, allow_blank=True, default="")
    model = serializers.CharField(max_length=200)
    timestamp = serializers.DateTimeField()
    duration_ms = serializers.FloatField(min_value=0, max_value=MAX_DURATION_MS)
    time_to_first_token_ms = serializers.FloatField(
        min_value=0, max_value=MAX_DURATION_MS, required=False, allow_null=True, default=None
    )
    input_tokens = serializers.IntegerField(min_value=0, max_value=MAX_TOKENS, default=0)
    output_tokens = serializers.IntegerField(min_value=0, max_value=MAX_TOKENS, default=0)
    cache_read_tokens = serializers.IntegerField(min_value=0, max_value=MAX_TOKENS, default=0)
    cache_write_tokens = serializers.IntegerField(min_value=0, max_value=MAX_TOKENS, default=0)
    tool_tokens = serializers.IntegerField(min_value=0, max_value=MAX_TOKENS, default=0)
    thought_tokens = serializers.IntegerField(min_value=0, max_value=MAX_TOKENS, default=0)
    attributes = serializers.DictField(required=False, default=dict)
    call_id = serializers.CharField(max_length=200, required=False, allow_null=True, default=None)

    def validate(self, attrs):
        if attrs["cache_read_tokens"] + attrs["cache_write_tokens"] > attrs["input_tokens"]:
            raise serializers.ValidationError("cache_read_tokens + cache_write_tokens must not exceed input_tokens.")
        if attrs["tool_tokens"] > attrs["input_tokens"]:
            raise serializers.ValidationError("tool_tokens must not exceed input_tokens.")
        if attrs["thought_tokens"] > attrs["output_tokens"]:
            raise serializers.ValidationError("thought_tokens must not exceed output_tokens.")
        return attrs


class NaiveEventIngestApi(APIView):
    permission_classes = [HasIngestScope]
    throttle_classes = [ApiKeyRateThrottle]

    def post(self, request):
        serializer = NaiveUsageEventSerializer(data=request.data.get("events"), many=True)
        serializer.is_valid(raise_exception=True)
        project = request.user.project
        book = price_book_for_project(project=project)
        received_at = timezone.now()
        rows = []
        for event in serializer.validated_data:
            event.pop("type")
            price = book.price_at(model=event["model"], provider=event["provider"], at=event["timestamp"])
            cost = None
            if price is not None:
                cost = event_cost_nanousd(
                    price,
                    input_tokens=event["input_tokens"],
                    output_tokens=event["output_tokens"],
                    cache_read_tokens=event["cache_read_tokens"],
                    cache_write_tokens=event["cache_write_tokens"],
                    thought_tokens=event["thought_tokens"],
                    billed_at=event["timestamp"],
                )
            rows.append(
                RawEvent(
                    project=project,
                    type=RawEvent.Type.USAGE,
                    end_at=event["timestamp"] + timedelta(milliseconds=event["duration_ms"]),
                    received_at=received_at,
                    cost_nanousd=cost,
                    price_source=price.source if price is not None else "",
                    price_book=price.price_book if price is not None else "",
                    **event,
                )
            )
        with transaction.atomic():
            RawEvent.objects.bulk_create(rows, ignore_conflicts=True)
            project_fold_enqueue(project_id=project.pk)
        return Response({"accepted": len(rows), "duplicates": 0, "rejected": []}, status=202)
