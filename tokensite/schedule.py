"""The one beat schedule of TokenSite (celery beat reads it through tokensite/celery.py)."""
from celery.schedules import crontab

BEAT_SCHEDULE = {
    # Folds events whose task never ran (broker down at ingest, worker lost): every 30 s, so
    # unprocessed events are picked up within a minute of the broker coming back.
    "metrics-unprocessed-sweep": {
        "task": "apps.metrics.tasks.unprocessed_sweep",
        "schedule": 30.0,
        "options": {"expires": 25},
    },
    # Rolls minute buckets older than a week into hourly ones, keeping the bucket table small.
    "metrics-buckets-compact": {
        "task": "apps.metrics.tasks.buckets_compact",
        "schedule": crontab(minute=17),
        "options": {"expires": 3000},
    },
    # Deletes folded raw events past their project's retention (aggregates stay), dropping whole
    # monthly partitions on PostgreSQL and in short batches elsewhere, at a quiet hour; first
    # creates the coming months' partitions (apps.ingestion.partitions).
    "ingestion-raw-events-prune": {
        "task": "apps.ingestion.tasks.raw_events_prune",
        "schedule": crontab(hour=3, minute=41),
        "options": {"expires": 6 * 3600},
    },
    # Sends the daily and weekly digests that are due (apps.digests): hourly, because each run sends
    # only what is due and not yet sent, so a beat that was down at the send hour catches up.
    "digests-send": {
        "task": "apps.digests.tasks.digests_send",
        "schedule": crontab(minute=5),
        "options": {"expires": 3000},
    },
    # Evaluates every budget and sends due alert deliveries (and retries of pending ones), so an
    # alert goes out within a minute of spend crossing a threshold even when no fold triggers one.
    "budgets-evaluate": {
        "task": "apps.budgets.tasks.budgets_evaluate_all",
        "schedule": 60.0,
        "options": {"expires": 55},
    },
}
