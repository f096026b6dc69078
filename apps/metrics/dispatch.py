"""Handing freshly committed events to the metrics pipeline."""
from __future__ import annotations

import logging

from django.db import transaction

logger = logging.getLogger(__name__)


def project_fold_enqueue(*, project_id: int) -> None:
    """After the surrounding transaction commits, ask a worker to fold the project's new events.

    A broker that is down must not fail ingestion: the events are already committed, and the
    beat-scheduled sweep (apps.metrics.schedule) folds unprocessed events once it is back.
    """
    from kombu.exceptions import OperationalError

    from apps.metrics.tasks import project_fold

    def publish() -> None:
        try:
            project_fold.delay(project_id)
        except OperationalError:
            logger.warning("Broker unreachable: project %s's new events are left for the sweep.", project_id)
        except Exception:  # noqa: BLE001 - in-process (eager) folding failed after the commit
            logger.exception("Folding project %s failed; its events stay unprocessed for the sweep.", project_id)

    transaction.on_commit(publish)
