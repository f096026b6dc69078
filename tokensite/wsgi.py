"""WSGI entry point (gunicorn tokensite.wsgi)."""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tokensite.settings.production")

application = get_wsgi_application()
