"""Quarantine: sessions the fold cannot fold, set aside so that they never block the others.

A fold error that is not a transient failure of the database (a value no datetime can hold, a
bug only one session's events reach) fails the same way on every retry. Left on the queue, such
a session fails every fold that claims it, and with it the other sessions of that transaction and
every later event of its project. apps.metrics.folding narrows a failing transaction down to the
sessions that fail on their own and quarantines them here.

A quarantined session's events keep their queue rows, so "folded" stays "has no pending row" and
nothing is lost: the folds and the sweep skip the session (`without_quarantined`) until an
operator releases it (`manage.py fold_quarantine --release`), after fixing the cause, and it
folds as usual.
"""
from __future__ import annotations

import logging
import sqlite3

import psycopg
from celery.exceptions import SoftTimeLimitExceeded
from django.db import DatabaseError, DataError, transaction
from django.db.models import Exists, OuterRef, QuerySet
from django.utils import timezone as dj_timezone

from apps.ingestion.models import PendingEvent
from apps.metrics.models import QuarantinedSession

logger = logging.getLogger(__name__)

MAX_ERROR_CHARS = 2000


def fold_error_is_transient(error: BaseException) -> bool:
    """Whether a fold error may pass on a retry, and so must reach the task (which retries)
    rather than quarantine a session. A DataError is the database refusing one of the session's
    values: it fails again on every retry. Drivers' own errors count as Django's would, should a
    raw cursor's escape unwrapped."""
    if isinstance(error, (DatabaseError, psycopg.Error, sqlite3.Error)):
        return not isinstance(error, (DataError, psycopg.DataError, sqlite3.DataError))
    return isinstance(error, (MemoryError, SoftTimeLimitExceeded))


def session_quarantine(*, project_id: int, session_id: str, error: BaseException) -> None:
    """Take the session out of folding, recording the error; logged at ERROR with its traceback."""
    QuarantinedSession.objects.update_or_create(
        project_id=project_id,
        session_id=session_id,
        defaults={"error": f"{type(error).__name__}: {error}"[:MAX_ERROR_CHARS], "quarantined_at": dj_timezone.now()},
    )
    logger.error(
        "Session %r of project %s quarantined: folding it fails with %s: %s. Its events stay queued; "
        "release it with `manage.py fold_quarantine --release` once the cause is fixed.",
        session_id, project_id, type(error).__name__, error, exc_info=error,
    )  # fmt: skip


def quarantine_release(*, project_id: int | None = None, session_id: str | None = None) -> int:
    """Put quarantined sessions back on the fold (all, a project's, or one session id's); returns
    how many, and asks a worker to fold their projects once the release commits."""
    from apps.metrics.dispatch import project_fold_enqueue

    released = QuarantinedSession.objects.all()
    if project_id is not None:
        released = released.filter(project_id=project_id)
    if session_id is not None:
        released = released.filter(session_id=session_id)
    with transaction.atomic():
        project_ids = set(released.values_list("project_id", flat=True))
        count, _ = released.delete()
        for released_project_id in sorted(project_ids):
            project_fold_enqueue(project_id=released_project_id)
    if count:
        logger.warning("Released %d quarantined sessions of projects %s.", count, sorted(project_ids))
    return count


def without_quarantined(pending: QuerySet[PendingEvent], *, project_id: int | None = None) -> QuerySet[PendingEvent]:
    """The queue rows (of the project, if given) of sessions that are not quarantined.

    The anti-join only when some session is quarantined: over a big backlog it nearly doubles
    the time of the search for pending sessions.
    """
    quarantined = QuarantinedSession.objects.all()
    if project_id is not None:
        quarantined = quarantined.filter(project_id=project_id)
    if not quarantined.exists():
        return pending
    return pending.exclude(
        Exists(quarantined.filter(project_id=OuterRef("project_id"), session_id=OuterRef("session_id")))
    )
