"""GET /healthz: for load balancers and operators; no key, nothing sensitive."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.health import OK, dependencies_health


class HealthApi(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []

    @extend_schema_serializer(component_name="Health")
    class OutputSerializer(serializers.Serializer):
        class FallbackSerializer(serializers.Serializer):
            failures = serializers.IntegerField(help_text="Calls to the dependency that failed, in this process.")
            fallbacks = serializers.IntegerField(help_text="Requests served without it, in this process.")

        status = serializers.CharField(help_text="ok, degraded (cache or broker away) or unavailable (database).")
        database = serializers.CharField(help_text="ok or unavailable.")
        cache = serializers.CharField(help_text="ok or unavailable.")
        broker = serializers.CharField(help_text="ok, unavailable, or in_process when tasks run in the web process.")
        fallbacks = serializers.DictField(child=FallbackSerializer())

    @extend_schema(
        operation_id="health",
        summary="Dependency status (200 unless the database is unavailable: then 503)",
        auth=[],
        responses={200: OutputSerializer, 503: OutputSerializer},
    )
    def get(self, request):
        health = dependencies_health()
        return Response(self.OutputSerializer(health).data, status=200 if health["database"] == OK else 503)
