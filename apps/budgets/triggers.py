"""When budgets are evaluated: after folds of a project (here), and every minute by beat
(tokensite.schedule), so an alert goes out within a minute of spend crossing a threshold
also under `make run`, where no beat runs.

After a fold, the budgets covering the folded project are evaluated at most once per
EVALUATE_EVERY_S: the first fold in a window evaluates at once, and a fold inside the window
asks for one evaluation at its end, so the last spend of a burst is never left waiting for the
next fold. With a broker, evaluation is a Celery task; with in-process tasks it runs on a thread
of its own, so slow webhook receivers hold up neither the fold nor the request that caused it.
"""
from __future__ import annotations

import logging
import threading

from django.core.cache import cache
from django.db import DatabaseError, connection, transaction
from django.db.models import Q
from django.dispatch import receiver

from apps.budgets.models import Budget
from apps.metrics.signals import project_folded

logger = logging.getLogger(__name__)

EVALUATE_EVERY_S = 20


def _evaluated_key(project_id: int) -> str:
    return f"budgets:evaluated:{project_id}"


def _trailing_key(project_id: int) -> str:
    return f"budgets:trailing:{project_id}"


def _mark(key: str) -> bool:
    """Set a mark for EVALUATE_EVERY_S; False when it is set already. A cache that fails answers
    True: an extra evaluation is harmless (alerts are claimed exactly once), a missing one is not."""
    try:
        return cache.add(key, 1, timeout=EVALUATE_EVERY_S)
    except Exception:  # noqa: BLE001 - the cache (Redis) is down
        logger.warning("Cache unreachable: evaluating budgets without the throttle mark.")
        return True


def _evaluate_on_thread(project_id: int) -> None:
    from apps.budgets.alerts import budgets_evaluate

    try:
        budgets_evaluate(project_id=project_id)
    except Exception:  # noqa: BLE001 - the next fold or evaluation tries again
        logger.exception("Evaluating the budgets of project %s failed.", project_id)
    finally:
        connection.close()  # this thread's own connection


def _dispatch(project_id: int, *, delay_s: float) -> None:
    from apps.budgets.tasks import project_budgets_evaluate

    if not project_budgets_evaluate.app.conf.task_always_eager:
        try:
            project_budgets_evaluate.apply_async((project_id,), countdown=delay_s or None)
        except Exception:  # noqa: BLE001 - broker down: beat's minute evaluation covers it
            logger.warning("Broker unreachable: the budgets of project %s wait for beat's evaluation.", project_id)
        return
    timer = threading.Timer(delay_s, _evaluate_on_thread, args=(project_id,))
    timer.daemon = True
    timer.name = f"budgets-evaluate-{project_id}"
    timer.start()


def _budgets_cover(project_id: int) -> bool:
    return Budget.objects.filter(
        Q(project_id=project_id) | Q(project__isnull=True, team__projects__id=project_id)
    ).exists()


def project_budgets_evaluate_soon(*, project_id: int) -> None:
    """Evaluate the budgets covering the project now, or, evaluated within the last
    EVALUATE_EVERY_S, once more at the end of that window. Call after the fold committed."""
    try:
        if not _budgets_cover(project_id):
            return
    except DatabaseError:
        logger.warning("Could not look up the budgets of project %s; beat's evaluation covers them.", project_id)
        return
    if _mark(_evaluated_key(project_id)):
        _dispatch(project_id, delay_s=0)
    elif _mark(_trailing_key(project_id)):
        _dispatch(project_id, delay_s=EVALUATE_EVERY_S)


@receiver(project_folded, dispatch_uid="budgets-evaluate-after-fold")
def _budgets_evaluate_after_fold(sender, *, project_id: int, **kwargs) -> None:
    transaction.on_commit(lambda: project_budgets_evaluate_soon(project_id=project_id))
