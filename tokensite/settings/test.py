"""Test run: the same settings as production behaviour, with fast password hashing."""
import os

from .base import *  # noqa: F401,F403

DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Tests fold in-process after commit unless a test runs real workers: the worker integration
# tests switch the Celery app to the Redis broker themselves.
CELERY_TASK_ALWAYS_EAGER = True
# Folded inside the request, so a test reads folded aggregates right after an ingest; the tests of
# the background folder (tests/metrics/test_background_fold.py) switch it on and drain it.
METRICS_FOLD_THREAD = False

# Webhook receivers in tests listen on 127.0.0.1; the refusal tests turn this off again.
WEBHOOK_ALLOW_PRIVATE = True
BUDGET_ALERT_RETRY_BACKOFF_S = 0.05

# `make test-fast` runs the tests in two processes (pytest-xdist, each with its own test database).
# With REDIS_URL set they share one Redis: each keeps its own cache keys (fold leases, rate limits)
# and its own task queue, which the Celery workers its tests start inherit through the environment.
if _XDIST_WORKER := os.environ.get("PYTEST_XDIST_WORKER", ""):
    CACHES["default"]["KEY_PREFIX"] = _XDIST_WORKER  # noqa: F405
    CELERY_TASK_DEFAULT_QUEUE = f"celery-{_XDIST_WORKER}"
