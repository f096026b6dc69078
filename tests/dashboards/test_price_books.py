"""Price books on the settings page: every member sees the books and what each newly prices; owners and
admins price the project's unpriced events with one button, members and viewers cannot."""
from __future__ import annotations

import json

import pytest
from django.db.models import Sum

from apps.ingestion.models import RawEvent
from apps.metrics.models import SessionAggregate, SessionStepAggregate
from apps.pricing.catalog import BUNDLED_PRICE_BOOK
from apps.pricing.services import price_book_import
from tests.dashboards.conftest import client_for

pytestmark = pytest.mark.django_db

URL = "/acme/chatbot/settings/"
UNPRICED_MODEL = "acme-unpriced-llm"  # the `folded` fixture's unpriced call: 300 input, 100 output tokens
BOOK = {UNPRICED_MODEL: {"litellm_provider": "self-hosted", "mode": "chat", "input_cost_per_token": 1e-06,
                         "output_cost_per_token": 3e-06}}  # fmt: skip


def unpriced_row():
    return RawEvent.objects.values_list("cost_nanousd", "price_book").get(model=UNPRICED_MODEL)


@pytest.mark.parametrize("role", ["owner", "admin", "member", "viewer"])
def test_every_member_sees_the_books_and_the_models_each_newly_prices(folded, users, role):
    book = price_book_import(data=json.dumps(BOOK).encode(), file_name="orbit-prices.json").book
    html = client_for(users[role]).get(URL).content.decode()
    assert html.index(book.version) < html.index(BUNDLED_PRICE_BOOK), "newest first, the bundled map last"
    assert "orbit-prices.json" in html and f"1: <code>{UNPRICED_MODEL}</code>" in html
    assert f"Unpriced calls the books or overrides now price:</b>\n  {UNPRICED_MODEL} (1 call)" in html
    assert ('value="reprice_unpriced"' in html) is (role in ("owner", "admin"))


def test_without_imported_books_the_bundled_map_is_the_only_book(folded, users):
    html = client_for(users["viewer"]).get(URL).content.decode()
    assert BUNDLED_PRICE_BOOK in html and "bundled with litellm" in html
    assert "Unpriced calls the books or overrides now price" not in html


@pytest.mark.parametrize("role", ["owner", "admin"])
def test_owners_and_admins_price_unpriced_events_and_totals_follow(folded, users, role):
    priced_before = dict(RawEvent.objects.exclude(model=UNPRICED_MODEL).values_list("id", "cost_nanousd"))
    session_before = SessionAggregate.objects.get().cost_nanousd
    book = price_book_import(data=json.dumps(BOOK).encode()).book
    client = client_for(users[role])
    response = client.post(URL, {"action": "reprice_unpriced"})
    assert response.status_code == 302
    assert "1 unpriced events were priced" in client.get(URL).content.decode()
    assert unpriced_row() == (300 * 1_000 + 100 * 3_000, book.version)
    assert dict(RawEvent.objects.exclude(model=UNPRICED_MODEL).values_list("id", "cost_nanousd")) == priced_before
    session = SessionAggregate.objects.get()
    assert session.cost_nanousd == session_before + 600_000 and session.unpriced_tokens == 0
    steps = SessionStepAggregate.objects.aggregate(cost=Sum("cost_nanousd"), unpriced=Sum("unpriced_tokens"))
    assert steps == {"cost": session.cost_nanousd, "unpriced": 0}


@pytest.mark.parametrize("role", ["member", "viewer"])
def test_members_and_viewers_cannot_price_unpriced_events(folded, users, role):
    price_book_import(data=json.dumps(BOOK).encode())
    response = client_for(users[role]).post(URL, {"action": "reprice_unpriced"})
    assert response.status_code == 403
    assert unpriced_row() == (None, "")


def test_outsiders_cannot_reach_the_button(folded, outsider):
    price_book_import(data=json.dumps(BOOK).encode())
    assert client_for(outsider).post(URL, {"action": "reprice_unpriced"}).status_code == 404
    assert unpriced_row() == (None, "")
