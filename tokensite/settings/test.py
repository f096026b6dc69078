"""Test run: the same settings as production behaviour, with fast password hashing."""
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
