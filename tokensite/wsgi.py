"""WSGI entry point (gunicorn tokensite.wsgi; runserver loads it too through WSGI_APPLICATION)."""
import os

from django.conf import settings
from django.core.wsgi import get_wsgi_application

from tokensite.chunked import DechunkedBodyMiddleware

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tokensite.settings.production")

application = DechunkedBodyMiddleware(
    get_wsgi_application(),
    max_bytes=max(settings.OTLP_MAX_BODY_BYTES, settings.INGEST_MAX_BODY_BYTES),
)
