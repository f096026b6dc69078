"""WSGI entry point (gunicorn tokensite.wsgi, with gunicorn.conf.py; runserver loads it too through WSGI_APPLICATION)."""
import os

from django.conf import settings
from django.core.wsgi import get_wsgi_application

from apps.core.request_limits import RequestLimitsMiddleware
from tokensite.chunked import DechunkedBodyMiddleware

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tokensite.settings.production")

# Limits first: an over-long URL or header block is answered before any body is read.
application = RequestLimitsMiddleware(
    DechunkedBodyMiddleware(
        get_wsgi_application(),
        max_bytes=max(settings.OTLP_MAX_BODY_BYTES, settings.INGEST_MAX_BODY_BYTES),
    )
)
