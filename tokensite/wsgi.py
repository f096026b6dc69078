"""WSGI entry point (gunicorn tokensite.wsgi; gunicorn.conf.py holds the server's settings)."""
import os

from django.core.wsgi import get_wsgi_application

from apps.core.request_limits import RequestLimitsMiddleware

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tokensite.settings.production")

application = RequestLimitsMiddleware(get_wsgi_application())
