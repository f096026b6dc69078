"""Gunicorn as a deployment runs it for ingestion: sync workers, the app preloaded.

Sync workers serve one request per connection and close it, so load spreads over the workers
instead of piling onto whichever one holds a keep-alive connection. `preload_app` plus the
price-map warm-up below load Django and litellm (about 3 s and 150 MB) once in the master;
the forked workers share them copy-on-write instead of each paying for them on a first request.
"""
from benchmarks._ingest_support.events import TRAFFIC

worker_class = "sync"
preload_app = True
accesslog = None
loglevel = "warning"
timeout = 60


def when_ready(server) -> None:
    # Runs in the master before any worker is forked; touches no database or Redis connection,
    # which must never be shared across a fork.
    from apps.pricing.catalog import resolve_model_price

    for provider, model, _, _ in TRAFFIC:
        resolve_model_price(model, provider)
