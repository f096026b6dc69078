"""A Celery worker started by the integration tests: test settings, but tasks come from Redis."""
from .test import *  # noqa: F401,F403

CELERY_TASK_ALWAYS_EAGER = False
