"""`manage.py seed_demo`, run by `make run`: realistic data, idempotent, and a login that works."""
from io import StringIO

import pytest
from django.core.management import call_command

from apps.accounts.models import Project
from apps.metrics.models import SessionAggregate

pytestmark = pytest.mark.django_db(transaction=True)


def test_seed_demo_creates_a_week_of_sessions_and_prints_login_and_keys(client):
    out = StringIO()
    call_command("seed_demo", "--days", "1", stdout=out)
    output = out.getvalue()
    assert "demo / demo-password" in output and "Ingest key for demo/support-bot: tsk_" in output
    assert Project.objects.filter(team__slug="demo").count() == 3
    sessions = SessionAggregate.objects.filter(project__team__slug="demo")
    assert sessions.count() >= 20
    assert sessions.filter(throttle_count__gt=0).exists()
    assert sessions.filter(unpriced_tokens__gt=0).exists(), "the demo shows one unpriced model"
    assert sessions.filter(cost_nanousd__gt=0).exists()
    assert client.login(username="demo", password="demo-password")

    count = sessions.count()
    call_command("seed_demo", "--days", "1", stdout=StringIO())
    assert SessionAggregate.objects.filter(project__team__slug="demo").count() == count
