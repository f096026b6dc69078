"""The Celery app: Redis broker from REDIS_URL, JSON only; settings under the CELERY_ prefix."""
import os

from celery import Celery

from tokensite.schedule import BEAT_SCHEDULE

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tokensite.settings.local")

app = Celery("tokensite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

app.conf.beat_schedule = BEAT_SCHEDULE
