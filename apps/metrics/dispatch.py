"""Handing freshly committed events to the metrics pipeline."""
from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction

from apps.core.outages import DependencyOutage

logger = logging.getLogger(__name__)

FOLD_PUBLISH_OUTAGE = DependencyOutage(
    "fold_publish", dependency="The Celery broker (Redis)", consequence="leaving new events for the beat sweep to fold"
)
# One quick retry at most: the request waits for this, and the sweep folds whatever it misses.
_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.1, "interval_max": 0.1}


def project_fold_enqueue(*, project_id: int) -> None:
    """After the surrounding transaction commits, ask a worker to fold the project's new events.

    Nothing is enqueued while a fold task of the project is queued and not yet started: it will
    see these events (apps.metrics.coalescing). A broker that is down must not fail ingestion:
    the events are already committed, and the beat-scheduled sweep (tokensite.schedule) folds
    unprocessed events once it is back. After a failed publish the next few seconds' requests
    skip publishing altogether, so a hung broker does not slow every ingest request.

    With no broker (settings.METRICS_FOLD_THREAD, the embedded default) the project goes to this
    process's background folder instead (apps.metrics.background): the reply does not wait for
    the fold.
    """
    from kombu.exceptions import OperationalError

    from apps.metrics.background import background_fold_request
    from apps.metrics.coalescing import fold_queued_clear, fold_queued_mark
    from apps.metrics.tasks import project_fold

    def publish() -> None:
        if settings.METRICS_FOLD_THREAD and project_fold.app.conf.task_always_eager:
            background_fold_request(project_id=project_id)
            return
        if not project_fold.app.conf.task_always_eager and FOLD_PUBLISH_OUTAGE.paused():
            FOLD_PUBLISH_OUTAGE.skipped()
            return
        if not fold_queued_mark(project_id=project_id):
            return
        try:
            project_fold.apply_async((project_id,), retry_policy=_PUBLISH_RETRY_POLICY)
        except OperationalError as exc:
            # Not queued after all: a later request may try again, and the sweep folds these.
            fold_queued_clear(project_id=project_id)
            FOLD_PUBLISH_OUTAGE.failed(exc)
        except Exception:  # noqa: BLE001 - in-process (eager) folding failed after the commit
            fold_queued_clear(project_id=project_id)
            logger.exception("Folding project %s failed; its events stay unprocessed for the sweep.", project_id)

    transaction.on_commit(publish)


def project_fold_defer(*, project_id: int, countdown_s: float) -> None:
    """Ask a worker to fold the project in `countdown_s`, when the lease another worker holds
    expires unless its holder, alive, renews it (apps.metrics.coalescing).

    Nothing is scheduled while another deferred fold of the project is due first. Broker errors
    are raised (the task retries).
    """
    from apps.metrics.coalescing import fold_deferred_clear, fold_deferred_mark
    from apps.metrics.tasks import project_fold

    if not fold_deferred_mark(project_id=project_id, countdown_s=countdown_s):
        return
    try:
        project_fold.apply_async(args=[project_id], countdown=countdown_s)
    except BaseException:
        fold_deferred_clear(project_id=project_id)  # so that the task's retry defers again
        raise
    logger.info("The fold lease of project %s is held: folding again in %.1f s.", project_id, countdown_s)
