"""GET /healthz: for load balancers and operators; no key, nothing sensitive."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.health import OK, dependencies_health


class HealthApi(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []

    class OutputSerializer(serializers.Serializer):
        class FallbackSerializer(serializers.Serializer):
            failures = serializers.IntegerField(help_text="Calls to the dependency that failed, in this process.")
            fallbacks = serializers.IntegerField(help_text="Requests served without it, in this process.")

        status = serializers.CharField(help_text="ok, degraded (cache or broker away) or unavailable (database).")
        database = serializers.CharField(help_text="ok or unavailable.")
        cache = serializers.CharField(help_text="ok or unavailable.")
        broker = serializers.CharField(help_text="ok, unavailable, or in_process when tasks run in the web process.")
        fallbacks = serializers.DictField(child=FallbackSerializer())

    # An operator's endpoint outside /api/, not part of the keyed API the schema describes.
    @extend_schema(exclude=True)
    def get(self, request):
        health = dependencies_health()
        return Response(self.OutputSerializer(health).data, status=200 if health["database"] == OK else 503)
