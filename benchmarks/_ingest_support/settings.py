"""Settings of the benchmark's gunicorn: production settings, plus the naive baseline's route.

`tokensite.settings.production` wants SECRET_KEY and ALLOWED_HOSTS from the environment; the
benchmark supplies throwaway ones. DATABASE_URL and REDIS_URL come from `benchmarks/ingest.py`,
so the after-commit hand-off publishes to Redis exactly as a deployment does.
"""
import os

os.environ.setdefault("SECRET_KEY", "ingest-benchmark-only-not-a-secret-0123456789abcdef")
os.environ.setdefault("ALLOWED_HOSTS", "127.0.0.1,localhost")
# The load generators speak plain HTTP on loopback, with no TLS proxy in front (README "Deploying").
os.environ.setdefault("SECURE_SSL_REDIRECT", "False")

from tokensite.settings.production import *  # noqa: E402,F401,F403
from tokensite.settings.production import CACHES  # noqa: E402

ROOT_URLCONF = "benchmarks._ingest_support.urls"

# Own names in Redis, so the benchmark can delete exactly what it wrote without touching anyone
# else's keys in the same database: the queue the fold tasks are published to, and the
# rate-limit counters in the cache.
BENCHMARK_REDIS_NAMESPACE = "ingest-benchmark"
CELERY_TASK_DEFAULT_QUEUE = BENCHMARK_REDIS_NAMESPACE
CACHES["default"]["KEY_PREFIX"] = BENCHMARK_REDIS_NAMESPACE

# Access logs of 1000s of requests per second would cost the shared CPUs more than they tell.
LOGGING["root"]["level"] = "WARNING"  # noqa: F405
