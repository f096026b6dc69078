"""Pricing's own input: a call described by `CallUsage` is priced and measured against its model's
window with no ingestion type in sight, as ingest and re-pricing both describe their calls."""
from datetime import timedelta
from decimal import Decimal

import pytest

from apps.pricing.calls import UNPRICED, CallUsage
from apps.pricing.context_windows import calls_context_share, context_window_override_set
from apps.pricing.selectors import calls_price
from apps.pricing.services import price_override_create
from tests.conftest import BASE_TIME

pytestmark = pytest.mark.django_db


def call(model: str, **overrides) -> CallUsage:
    fields = {"provider": "", "model": model, "billed_at": BASE_TIME, "input_tokens": 1_000_000,
              "output_tokens": 500_000} | overrides  # fmt: skip
    return CallUsage(**fields)


def test_calls_are_priced_in_order_and_an_unknown_model_is_unpriced(project):
    override = price_override_create(
        project=project, model="acme-llm", input_per_million_usd=Decimal("1"), output_per_million_usd=Decimal("2"),
        effective_from=BASE_TIME - timedelta(days=1),
    )
    priced, unknown, before = calls_price(project=project, calls=[
        call("acme-llm"), call("no-such-model-anywhere"), call("acme-llm", billed_at=BASE_TIME - timedelta(days=2)),
    ])  # fmt: skip
    assert priced == (2 * 10**9, f"override:{override.pk}", "")
    assert unknown == UNPRICED
    assert before == UNPRICED  # the override was not in force yet


def test_context_share_of_each_call_uses_the_projects_window(project):
    context_window_override_set(project=project, model="acme-llm", max_input_tokens=4_000_000)
    shares = calls_context_share(project=project, calls=[call("acme-llm"), call("no-such-model-anywhere")])
    assert shares == [0.25, None]
