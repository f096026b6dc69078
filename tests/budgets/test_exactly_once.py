"""Each alert is sent exactly once when evaluations race (threads and processes on PostgreSQL) and
when a sender dies mid-send (the delivery stays pending and a later evaluation sends it)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
import time_machine
from django.db import connection
from django.utils import timezone

from apps.budgets.alerts import budgets_evaluate
from apps.budgets.models import AlertDelivery, BudgetAlert
from apps.budgets.services import budget_create
from tests.budgets.conftest import spend
from tests.budgets.receivers import WebhookReceiver
from tests.core.servers import ROOT

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]

EVALUATOR = """
import pathlib, sys, time
import django
django.setup()
from apps.budgets.alerts import budgets_evaluate
go = pathlib.Path(sys.argv[1])
while not go.exists():
    time.sleep(0.005)
print(budgets_evaluate(), flush=True)
"""


def evaluator_process(go: Path) -> subprocess.Popen:
    """A separate process evaluating budgets against the test database once `go` exists."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tokensite.settings.test",
        "DATABASE_URL": "postgres://{USER}@{HOST}:{PORT}/{NAME}".format(**connection.settings_dict),
        "PYTHONPATH": f"{ROOT / 'sdk'}:{ROOT}",
    }
    env.pop("REDIS_URL", None)
    return subprocess.Popen([sys.executable, "-c", EVALUATOR, str(go)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip


@pytest.fixture
def crossed_budget(team, project):
    """A budget whose spend crossed 50 % and 80 % (two alerts due), each mailed and posted."""

    def make(webhook_url: str):
        # Spent before the budget exists, so the evaluation after the fold has nothing to claim:
        # the evaluators under test find both alerts due.
        spend(project, timezone.now() - timedelta(seconds=10), calls=1, input_tokens=3_400_000)  # $8.50
        return budget_create(team=team, period="month", amount_usd="10", webhook_url=webhook_url,
                             email="lead@example.com", forecast_warning=False)  # fmt: skip

    return make


def test_racing_evaluator_threads_send_each_alert_once(crossed_budget, mailoutbox):
    # A slow receiver keeps the first sender busy while the others run.
    receiver = WebhookReceiver(hang_first_s=0.5).start()
    try:
        crossed_budget(receiver.url)
        barrier = threading.Barrier(8)
        errors = []

        def evaluate():
            try:
                barrier.wait()
                budgets_evaluate()
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
            finally:
                connection.close()

        threads = [threading.Thread(target=evaluate) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        receiver.stop()
    assert errors == []
    assert sorted(BudgetAlert.objects.values_list("threshold", flat=True)) == [50, 80]
    assert sorted(r.document["alert"]["threshold"] for r in receiver.requests) == [50, 80]
    assert sorted(message.subject for message in mailoutbox) == [
        "[TokenSite] team acme: 50% of the monthly budget spent",
        "[TokenSite] team acme: 80% of the monthly budget spent",
    ]
    assert set(AlertDelivery.objects.values_list("status", "attempts")) == {("sent", 1)}


def test_racing_evaluator_processes_send_each_alert_once(crossed_budget, tmp_path):
    receiver = WebhookReceiver().start()
    try:
        crossed_budget(receiver.url)
        go = tmp_path / "go"
        processes = [evaluator_process(go) for _ in range(4)]
        time.sleep(3)  # let them import Django and wait at the line
        go.touch()
        outputs = [process.communicate(timeout=120)[0] for process in processes]
    finally:
        receiver.stop()
    assert all(process.returncode == 0 for process in processes), outputs
    claimed = sum(int(output.split("alerts=")[1].split(",")[0]) for output in outputs)
    assert claimed == 2, outputs
    assert sorted(r.document["alert"]["threshold"] for r in receiver.requests) == [50, 80]
    assert set(AlertDelivery.objects.filter(channel="webhook").values_list("status", flat=True)) == {"sent"}


def test_a_sender_killed_mid_send_leaves_the_delivery_for_a_later_evaluation(team, project, tmp_path):
    receiver = WebhookReceiver(hang_first_s=20).start()  # the first post never gets its answer in time
    try:
        spend(project, timezone.now() - timedelta(seconds=10), calls=2)
        budget_create(team=team, period="month", amount_usd="10", thresholds=[50], webhook_url=receiver.url,
                      forecast_warning=False)  # fmt: skip
        go = tmp_path / "go"
        go.touch()
        sender = evaluator_process(go)
        assert receiver.wait_for(1, timeout_s=60), sender.stdout.read() if sender.poll() is not None else "no post"
        sender.send_signal(signal.SIGKILL)
        sender.wait(timeout=10)

        delivery = AlertDelivery.objects.get()
        assert (delivery.status, delivery.attempts) == ("pending", 1)
        budgets_evaluate()  # the dead sender's lease still runs: not sent twice meanwhile
        assert len(receiver.requests) == 1
        with time_machine.travel(delivery.next_attempt_at + timedelta(seconds=1), tick=False):
            evaluation = budgets_evaluate()
    finally:
        receiver.stop()
    assert (evaluation.alerts, evaluation.sent) == (0, 1)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("sent", 2)
    assert BudgetAlert.objects.count() == 1
    assert [r.headers["X-TokenSite-Delivery"] for r in receiver.requests] == [f"alert-{delivery.alert_id}-webhook"] * 2
