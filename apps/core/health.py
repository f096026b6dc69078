"""What GET /healthz reports: whether each dependency answers now, and how often this process
has worked around one (apps.core.outages)."""
from __future__ import annotations

from celery import current_app
from django.core.cache import cache
from django.db import DatabaseError, connection

from apps.core.outages import OUTAGES

OK, UNAVAILABLE, IN_PROCESS = "ok", "unavailable", "in_process"


def _database_status() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError:
        return UNAVAILABLE
    return OK


def _cache_status() -> str:
    try:
        cache.get("healthz")
    except Exception:  # noqa: BLE001 - whatever the backend raises, the cache does not answer
        return UNAVAILABLE
    return OK


def _broker_status() -> str:
    if current_app.conf.task_always_eager:
        return IN_PROCESS  # no REDIS_URL: tasks run in the web process, there is no broker
    try:
        with current_app.connection_for_write() as broker:
            broker.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=1)
    except Exception:  # noqa: BLE001 - kombu's OperationalError, or the transport's own error
        return UNAVAILABLE
    return OK


def dependencies_health() -> dict:
    """Each dependency's status and this process's fallback counters; no names, hosts or messages."""
    dependencies = {"database": _database_status(), "cache": _cache_status(), "broker": _broker_status()}
    if dependencies["database"] != OK:
        status = UNAVAILABLE
    elif UNAVAILABLE in dependencies.values():
        status = "degraded"
    else:
        status = OK
    return {"status": status, **dependencies, "fallbacks": {name: o.as_dict() for name, o in OUTAGES.items()}}
