"""Developer machine: `make run` uses these."""
from .base import *  # noqa: F401,F403
from .base import env

DEBUG = env.bool("DEBUG", default=True)

# In-process folding logs every task at INFO; keep the dev server's console readable.
LOGGING["loggers"]["celery.app.trace"] = {"level": "WARNING"}  # noqa: F405
