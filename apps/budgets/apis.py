"""GET /api/v1/budgets: the budgets covering the key's project, with spend, share and forecast."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.authentication import ApiKeyRateThrottle, HasAnyScope
from apps.budgets.selectors import budget_statuses_recent


class _ShareField(serializers.FloatField):
    def to_representation(self, value) -> float:
        return round(float(value), 4)


@extend_schema_serializer(component_name="BudgetStatus")
class BudgetStatusSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="budget.pk")
    scope = serializers.ChoiceField(choices=["team", "project"])
    project = serializers.CharField(source="project_slug", allow_null=True, help_text="Null for a team-wide budget.")
    user = serializers.CharField(allow_blank=True, help_text="The developer it is narrowed to; empty: everyone.")
    model = serializers.CharField(allow_blank=True, help_text="The model it is narrowed to; empty: every model.")
    period = serializers.ChoiceField(choices=["day", "week", "month"])
    period_start = serializers.DateTimeField(help_text="UTC; days, ISO weeks from Monday, calendar months.")
    period_end = serializers.DateTimeField(help_text="Exclusive.")
    amount_usd = serializers.DecimalField(max_digits=14, decimal_places=2, allow_null=True)
    amount_tokens = serializers.IntegerField(allow_null=True, help_text="Set instead of amount_usd.")
    spent_usd = serializers.DecimalField(max_digits=24, decimal_places=4, help_text="Priced calls only.")
    spent_tokens = serializers.IntegerField(help_text="Input plus output tokens.")
    unpriced_tokens = serializers.IntegerField(help_text="Tokens of calls no price covers (not in spent_usd).")
    share = _ShareField(help_text="Spent over the amount: 1.0 is all of it.")
    forecast_share = _ShareField(help_text="The share by period_end at the period's run rate so far.")
    forecast_exceeds = serializers.BooleanField()
    hard = serializers.BooleanField(help_text="SDK clients with budget_guard=True refuse calls once it is exceeded.")
    exceeded = serializers.BooleanField()


class BudgetListApi(APIView):
    """Budgets of the key's project and its team's team-wide budgets, as of at most 10 s ago.
    Ingest keys may read it too, so an SDK holding one key can check its own budget."""

    permission_classes = [HasAnyScope]
    throttle_classes = [ApiKeyRateThrottle]

    @extend_schema_serializer(component_name="BudgetList")
    class OutputSerializer(serializers.Serializer):
        budgets = BudgetStatusSerializer(many=True)

    @extend_schema(operation_id="budgets_list", summary="Budgets covering the project, with spend and forecast",
                   responses={200: OutputSerializer})  # fmt: skip
    def get(self, request):
        project = request.user.project
        statuses = budget_statuses_recent(team=project.team, project=project)
        return Response(self.OutputSerializer({"budgets": statuses}).data)
