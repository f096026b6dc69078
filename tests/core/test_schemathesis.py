"""Schemathesis against the served /api/schema/: every operation, with an ingest key and a read key,
every built-in check (no 5xx, documented status codes, content types, headers and bodies, negative
data rejected, missing auth refused, unsupported methods answered 405), in-process through the WSGI
app. Derandomized, so a run is the same run every time."""
from __future__ import annotations

from datetime import datetime

import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.utils.dateparse import parse_datetime
from hypothesis import HealthCheck, settings

from apps.accounts.models import ApiKey
from apps.accounts.services import api_key_create
from tests.conftest import throttle_event, usage_event
from tests.dashboards.conftest import at, ingest

# Enough examples to reach past the happy path of each operation in both generation modes while
# keeping the whole file well under a minute on a 2-core CI machine.
MAX_EXAMPLES = 100

pytestmark = [pytest.mark.slow, pytest.mark.django_db]


# Which key scope each operation serves; the other scope is a 403.
SCOPES_ALLOWED = {
    "POST /api/v1/events": {"ingest"},
    "GET /api/v1/sessions": {"read"},
    "GET /api/v1/sessions/{session_id}/metadata": {"read"},
    "GET /api/v1/usage": {"read"},
    "POST /api/v1/tokenize": {"ingest", "read"},
    "GET /api/v1/budgets": {"ingest", "read"},
}


@pytest.fixture(params=[ApiKey.Scope.INGEST, ApiKey.Scope.READ])
def api_key(request, project, settings) -> str:
    # The rate limiter is not under test here: a run must not depend on how many requests fit a minute.
    settings.INGEST_DEFAULT_RATE_LIMIT_PER_MINUTE = 10**9
    # Folded, so the session list and usage answer with rows their schemas are checked against.
    ingest(project, [usage_event(session_id="session-1", timestamp=at(0)), throttle_event(session_id="session-1")])
    return api_key_create(project=project, scope=request.param).plaintext


@pytest.fixture(autouse=True)
def connection_kept_between_requests():
    """As Django's test client does: the bare WSGI handler closes the connection after each request,
    which on PostgreSQL ends the test's transaction (and the keys and events in it)."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def statuses(request, api_key):
    """Every status of the run; afterwards, proof that the key got past authentication."""
    seen: list[int] = []
    yield seen
    scope = request.node.callspec.params["api_key"]
    label = next(label for label in SCOPES_ALLOWED if f"[{label}]" in request.node.name)
    if scope in SCOPES_ALLOWED[label]:
        assert any(200 <= status < 300 for status in seen), (label, scope, sorted(set(seen)))
    else:
        assert 403 in seen, (label, scope, sorted(set(seen)))


# A body over the size limit is refused with 413 before it is read, whatever it holds, so 413 is a
# rejection on every operation. A batch is checked event by event: a schema-violating event is
# answered 207 with its entry in `rejected` while the batch's valid events are stored (README
# "Ingestion API"), so for that operation 207 is a rejection too.
_REJECTIONS = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]
CONFIG = schemathesis.Config.from_dict({
    "checks": {"negative_data_rejection": {"expected-statuses": _REJECTIONS}},
    "operations": [{
        "include-operation-id": "events_ingest",
        "checks": {"negative_data_rejection": {"expected-statuses": ["207", *_REJECTIONS]}},
    }],
})  # fmt: skip

# Loaded from the app itself at collection (the lazy fixture loader of this Schemathesis does not
# run under pytest 9), so what is tested is exactly what /api/schema/ serves.
schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application(), config=CONFIG)


@schema.hook
def filter_case(context, case):
    """Keep `from` before `to`: OpenAPI cannot say one parameter must precede another, and an
    inverted range is the client's 400 (tests/metrics/test_api.py), not an accepted request."""
    since, until = (_parsed_time((case.query or {}).get(name)) for name in ("from", "to"))
    return since is None or until is None or since < until


def _parsed_time(value) -> datetime | None:
    try:
        parsed = parse_datetime(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return parsed if parsed is not None and parsed.tzinfo is not None else None


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture],
)
def test_api_conforms_to_its_schema(case, api_key, statuses):
    # Schemathesis fills the bearer scheme with made-up tokens; a well-formed one becomes the real key.
    # A case that drops the header or mangles its form keeps that, so it still proves a 401.
    if str((case.headers or {}).get("Authorization", "")).startswith("Bearer "):
        case.headers["Authorization"] = f"Bearer {api_key}"
    statuses.append(case.call_and_validate().status_code)
