"""Price books (issue 15, "fresh prices offline"): `manage.py prices_import FILE` keeps a price file in
litellm's format as the newest book; each model is priced from the newest book that lists it, project
overrides still win, every stored cost names its book, and events keep their prices until re-priced."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db.models import Sum

from apps.ingestion.models import RawEvent
from apps.metrics.models import SessionAggregate, SessionModelAggregate, SessionStepAggregate, UsageBucket
from apps.pricing.catalog import BUNDLED_PRICE_BOOK, catalog_with_books, resolve_model_price
from apps.pricing.models import PriceBook
from apps.pricing.offline import bundled_tokenizers_dir
from apps.pricing.price_files import PriceFileError, price_file_parse, priced_models
from apps.pricing.services import price_override_create
from tests.conftest import BASE_TIME, post_events, usage_event

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLED_FILE = bundled_tokenizers_dir().parents[1] / "model_prices_and_context_window_backup.json"
NEW_MODEL = "acme-orbit-1"
# Per token: $1.20 / $4.80 per million, cache read 0.1x, five-minute write 1.25x, one-hour write 2x,
# batches at half. A model released after litellm 1.106.2, as the newer file lists it.
NEW_ENTRY = {
    "litellm_provider": "openai", "mode": "chat", "max_input_tokens": 400_000, "max_output_tokens": 64_000,
    "input_cost_per_token": 1.2e-06, "output_cost_per_token": 4.8e-06,
    "cache_read_input_token_cost": 1.2e-07, "cache_creation_input_token_cost": 1.5e-06,
    "cache_creation_input_token_cost_above_1hr": 2.4e-06,
    "input_cost_per_token_batches": 6e-07, "output_cost_per_token_batches": 2.4e-06,
}  # fmt: skip
CHANGED_MODEL, REMOVED_MODEL = "gpt-4o", "gpt-4o-mini"
CHANGED_PRICES = {"input_cost_per_token": 2e-06, "output_cost_per_token": 8e-06}  # bundled: $2.50 / $10


def newer_price_file(path: Path) -> Path:
    """litellm's own file, as a newer release might ship it: one model added, one price changed, one removed."""
    entries = json.loads(BUNDLED_FILE.read_text())
    entries[NEW_MODEL] = NEW_ENTRY
    entries[CHANGED_MODEL] = {**entries[CHANGED_MODEL], **CHANGED_PRICES}
    del entries[REMOVED_MODEL]
    path.write_text(json.dumps(entries, indent=4))
    return path


def import_file(path: Path, *args: str) -> str:
    out = StringIO()
    call_command("prices_import", str(path), *args, stdout=out)
    return out.getvalue()


# The file format ---------------------------------------------------------------------------------


def test_litellms_own_file_is_a_valid_price_file():
    entries = price_file_parse(BUNDLED_FILE.read_bytes())
    assert len(priced_models(entries)) > 2000
    assert "gpt-4o" in priced_models(entries) and "sample_spec" not in priced_models(entries)


BAD_FILES = [
    (b'{"gpt-x": {"input_cost_per_token": 1e-06,}}', "not valid JSON: Expecting property name enclosed in double "
                                                     "quotes at line 1 column 42"),
    (b"\xff\xfe{}", "not UTF-8 text"),
    (b'[{"input_cost_per_token": 1e-06}]', "expected a JSON object of models, got a list"),
    (b'{"gpt-x": [1, 2]}', "gpt-x: expected an object, got a list"),
    (b'{"gpt-x": {"input_cost_per_token": "0.000001"}}',
     'gpt-x: input_cost_per_token: expected a price (a number >= 0) or null, got "0.000001"'),
    (b'{"gpt-x": {"input_cost_per_token": true}}', "gpt-x: input_cost_per_token: expected a price"),
    (b'{"gpt-x": {"input_cost_per_token": 1e-06, "output_cost_per_token": -3e-06}}',
     "gpt-x: output_cost_per_token: negative price -3e-06"),
    (b'{"gpt-x": {"input_cost_per_token": NaN}}', "not valid JSON: NaN is not a number JSON allows"),
    (b'{"q": {"tiered_pricing": [{"range": [0, 1000], "input_cost_per_token": -1e-07}]}}',
     "q: tiered_pricing[0].input_cost_per_token: negative price"),
    (b'{"q": {"tiered_pricing": [{"range": "all", "input_cost_per_token": 1e-07}]}}',
     'q: tiered_pricing[0].range: expected [start, end] counts >= 0, got "all"'),
    (b'{"d": {"input_cost_per_token": 1e-07, "off_peak_pricing": {"input_cost_per_token": -1e-08}}}',
     "d: off_peak_pricing.input_cost_per_token: negative price"),
    (b'{"s": {"input_cost_per_token": 1e-07, "search_context_cost_per_query": {"search_context_size_low": -1}}}',
     "s: search_context_cost_per_query.search_context_size_low: negative price -1"),
    (b'{"w": {"input_cost_per_token": 1e-07, "max_input_tokens": "128k"}}',
     'w: max_input_tokens: expected a whole number of tokens >= 0 or null, got "128k"'),
    (b'{"w": {"input_cost_per_token": 1e-07, "litellm_provider": 7}}', "w: litellm_provider: expected a string"),
    (b'{"dall-e": {"input_cost_per_image": 0.04}}', "no model has a per-token price"),
]  # fmt: skip


@pytest.mark.django_db
@pytest.mark.parametrize(("content", "message"), BAD_FILES, ids=[message[:40] for _, message in BAD_FILES])
def test_a_file_that_cannot_be_used_is_refused_naming_the_problem(tmp_path, content, message):
    path = tmp_path / "prices.json"
    path.write_bytes(content)
    with pytest.raises(CommandError) as raised:
        import_file(path)
    assert message in str(raised.value)
    assert not PriceBook.objects.exists()


def test_every_problem_of_a_file_is_named_at_once():
    entries = {f"m{i}": {"input_cost_per_token": -1} for i in range(30)}
    content = json.dumps(entries | {"ok": {"input_cost_per_token": 1}})
    with pytest.raises(PriceFileError) as raised:
        price_file_parse(content.encode())
    assert len(raised.value.errors) == 30
    assert "m0: input_cost_per_token: negative price -1" in str(raised.value) and "and 10 more" in str(raised.value)


@pytest.mark.django_db
def test_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(CommandError, match="Cannot read .*nope.json: No such file"):
        import_file(tmp_path / "nope.json")


@pytest.mark.slow  # a fresh Django process: seconds
def test_the_command_exits_non_zero_on_a_bad_file(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text('{"gpt-x": {"input_cost_per_token": -1e-06}}')
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "sdk"),
                                                                os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "manage.py", "prices_import", str(path)], cwd=REPO_ROOT, env=environment,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode != 0
    assert "gpt-x: input_cost_per_token: negative price -1e-06" in done.stderr


# Which book prices a model -----------------------------------------------------------------------


def test_each_map_key_is_read_from_the_newest_book_that_lists_it():
    older = {"acme-a": {"input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06},
             "acme-b": {"input_cost_per_token": 2e-06, "output_cost_per_token": 2e-06}}  # fmt: skip
    newer = {"acme-b": {"input_cost_per_token": 3e-06, "output_cost_per_token": 3e-06},
             "gpt-4o": {"litellm_provider": "openai", "input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06}}
    catalog = catalog_with_books([("import-1-aaaa", older), ("import-2-bbbb", newer)])

    a, b = resolve_model_price("acme-a", catalog=catalog), resolve_model_price("acme-b", catalog=catalog)
    assert (a.base.input, a.price_book) == (Decimal("0.000001"), "import-1-aaaa")  # the newer file left it out
    assert (b.base.input, b.price_book) == (Decimal("0.000003"), "import-2-bbbb")
    gpt = resolve_model_price("gpt-4o", "openai", catalog=catalog)
    assert (gpt.base.input, gpt.source, gpt.price_book) == (Decimal("0.000001"), "litellm:gpt-4o", "import-2-bbbb")
    mini = resolve_model_price("gpt-4o-mini", "openai", catalog=catalog)
    assert mini == resolve_model_price("gpt-4o-mini", "openai") and mini.price_book == BUNDLED_PRICE_BOOK
    assert resolve_model_price("acme-a") is None, "the bundled map alone does not know it"


def test_a_newly_priced_model_bills_its_tiers_and_cache_lifetimes_from_the_book():
    from apps.pricing.cost import event_cost_nanousd

    catalog = catalog_with_books([("import-1-cafe", {NEW_MODEL: NEW_ENTRY})])
    price = resolve_model_price(NEW_MODEL, "openai", catalog=catalog)
    counts = dict(input_tokens=200_000, output_tokens=10_000, cache_read_tokens=50_000, cache_write_tokens=100_000,
                  cache_write_1h_tokens=40_000, thought_tokens=0)  # fmt: skip
    # By hand, per million: 50k plain x 1.20 + 50k read x 0.12 + 60k 5-min x 1.50 + 40k 1-hour x 2.40 + 10k out x 4.80.
    assert event_cost_nanousd(price, **counts) == 60_000_000 + 6_000_000 + 90_000_000 + 96_000_000 + 48_000_000
    batch = price.for_service_tier("batch")
    assert batch.source == f"litellm:{NEW_MODEL} [batch]" and batch.price_book == "import-1-cafe"
    uncached = dict(counts, cache_read_tokens=0, cache_write_tokens=0, cache_write_1h_tokens=0)
    assert event_cost_nanousd(batch, **uncached) == 200_000 * 600 + 10_000 * 2_400  # half of every price


# Import, ingest and re-price ---------------------------------------------------------------------


def assert_totals_agree(project) -> None:
    """Session totals = step sums = model sums = raw events = minute buckets, priced and unpriced."""
    raw = RawEvent.objects.filter(project=project, type="usage")
    expected_cost = raw.aggregate(total=Sum("cost_nanousd"))["total"] or 0
    expected_unpriced = sum(e.input_tokens + e.output_tokens for e in raw.filter(cost_nanousd__isnull=True))
    for model in (SessionAggregate, SessionStepAggregate, SessionModelAggregate):
        rows = model.objects.all() if model is SessionAggregate else model.objects.filter(session__project=project)
        sums = rows.aggregate(cost=Sum("cost_nanousd"), unpriced=Sum("unpriced_tokens"))
        assert (sums["cost"], sums["unpriced"]) == (expected_cost, expected_unpriced), model.__name__
    buckets = UsageBucket.objects.filter(project=project).aggregate(
        cost=Sum("cost_nanousd"), unpriced=Sum("unpriced_tokens")
    )
    assert (buckets["cost"], buckets["unpriced"]) == (expected_cost, expected_unpriced)


def stored(session_id: str) -> tuple[int | None, str, str]:
    return RawEvent.objects.values_list("cost_nanousd", "price_source", "price_book").get(session_id=session_id)


@pytest.mark.django_db(transaction=True)
def test_import_adds_changes_and_removes_models_and_events_keep_their_prices_until_repriced(
    api_client, ingest_key, project, tmp_path
):
    def events(prefix: str, at):
        return [usage_event(session_id=f"{prefix}-{model}", model=model, input_tokens=1_000_000, output_tokens=100_000,
                            timestamp=at.isoformat())
                for model in (NEW_MODEL, CHANGED_MODEL, REMOVED_MODEL)]  # fmt: skip

    post_events(api_client, ingest_key, events("before", BASE_TIME))
    assert stored(f"before-{NEW_MODEL}") == (None, "", "")
    assert stored(f"before-{CHANGED_MODEL}") == (3_500_000_000, "litellm:gpt-4o", BUNDLED_PRICE_BOOK)
    before_mini = stored(f"before-{REMOVED_MODEL}")
    assert before_mini[2] == BUNDLED_PRICE_BOOK

    path = newer_price_file(tmp_path / "model_prices_and_context_window.json")
    out = import_file(path)
    book = PriceBook.objects.get()
    assert book.version == f"import-{book.pk}-{book.sha256[:12]}" and book.file_name == path.name
    assert (book.newly_priced, book.price_changed, book.not_listed) == ([NEW_MODEL], [CHANGED_MODEL], [REMOVED_MODEL])
    assert book.model_count == len(priced_models(json.loads(path.read_text())))
    assert f"newly priced: 1 ({NEW_MODEL})" in out and f"prices changed: 1 ({CHANGED_MODEL})" in out
    assert f"acme/chatbot: {NEW_MODEL} (1 calls)" in out and "--reprice-unpriced" in out

    # Stored events keep the prices they were ingested with.
    assert stored(f"before-{NEW_MODEL}") == (None, "", "")
    assert stored(f"before-{CHANGED_MODEL}") == (3_500_000_000, "litellm:gpt-4o", BUNDLED_PRICE_BOOK)
    # New events: the book's prices where it lists the model; a model it left out keeps the bundled price.
    post_events(api_client, ingest_key, events("after", BASE_TIME + timedelta(hours=1)))
    assert stored(f"after-{NEW_MODEL}") == (1_680_000_000, f"litellm:{NEW_MODEL}", book.version)
    assert stored(f"after-{CHANGED_MODEL}") == (2_800_000_000, "litellm:gpt-4o", book.version)
    assert stored(f"after-{REMOVED_MODEL}") == before_mini
    assert_totals_agree(project)

    # The same file again adds no book; --reprice-unpriced prices only the unpriced event.
    out = import_file(path, "--reprice-unpriced")
    assert "already the newest price book" in out and "Priced 1 unpriced events of acme/chatbot" in out
    assert PriceBook.objects.count() == 1
    assert stored(f"before-{NEW_MODEL}") == (1_680_000_000, f"litellm:{NEW_MODEL}", book.version)
    assert stored(f"before-{CHANGED_MODEL}") == (3_500_000_000, "litellm:gpt-4o", BUNDLED_PRICE_BOOK)
    assert_totals_agree(project)
    assert SessionAggregate.objects.get(session_id=f"before-{NEW_MODEL}").unpriced_tokens == 0

    # A full re-price moves the rest to the book's prices.
    call_command("reprice", "--project", "acme/chatbot", stdout=StringIO())
    assert stored(f"before-{CHANGED_MODEL}") == (2_800_000_000, "litellm:gpt-4o", book.version)
    assert_totals_agree(project)


@pytest.mark.django_db(transaction=True)
def test_unfolded_unpriced_events_are_priced_and_folded_at_their_new_price(api_client, ingest_key, project, tmp_path):
    from tests.conftest import events_unfold

    post_events(api_client, ingest_key, [usage_event(model=NEW_MODEL, input_tokens=1_000_000, output_tokens=0)])
    # As if no task had folded it yet: the aggregates are rebuilt from the queue afterwards.
    SessionAggregate.objects.all().delete()
    UsageBucket.objects.all().delete()
    events_unfold(project)
    path = tmp_path / "new.json"
    path.write_text(json.dumps({NEW_MODEL: NEW_ENTRY}))
    assert "Priced 1 unpriced events" in import_file(path, "--reprice-unpriced")
    from apps.metrics.services import sessions_fold

    sessions_fold(project_id=project.pk, session_ids=["session-1"])
    assert SessionAggregate.objects.get().cost_nanousd == 1_200_000_000
    assert_totals_agree(project)


@pytest.mark.django_db(transaction=True)
def test_project_overrides_win_over_every_book(api_client, ingest_key, project, tmp_path):
    path = tmp_path / "new.json"
    path.write_text(json.dumps({NEW_MODEL: NEW_ENTRY}))
    import_file(path)
    override = price_override_create(project=project, model=NEW_MODEL, input_per_million_usd=Decimal("0.5"),
                                     output_per_million_usd=Decimal(1), effective_from=BASE_TIME - timedelta(days=1))
    post_events(api_client, ingest_key, [usage_event(model=NEW_MODEL, input_tokens=1_000_000, output_tokens=0)])
    assert stored("session-1") == (500_000_000, f"override:{override.pk}", "")


@pytest.mark.django_db
def test_importing_an_older_file_again_makes_it_the_newest_book(tmp_path):
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    first.write_text(json.dumps({NEW_MODEL: NEW_ENTRY}))
    second.write_text(json.dumps({NEW_MODEL: {**NEW_ENTRY, "input_cost_per_token": 1e-06}}))
    import_file(first)
    import_file(second)
    out = import_file(first)
    books = list(PriceBook.objects.order_by("id"))
    versions = [book.version for book in books]
    assert versions == [f"import-{book.pk}-{book.sha256[:12]}" for book in books]
    assert len(set(versions)) == 3 and books[0].sha256 == books[2].sha256 != books[1].sha256
    assert f"Imported first.json as price book {versions[2]}" in out
    third = PriceBook.objects.get(version=versions[2])
    assert (third.newly_priced, third.price_changed) == ([], [NEW_MODEL])
    from apps.pricing.selectors import active_price_catalog

    price = resolve_model_price(NEW_MODEL, "openai", catalog=active_price_catalog())
    assert (price.base.input, price.price_book) == (Decimal("0.0000012"), versions[2])
