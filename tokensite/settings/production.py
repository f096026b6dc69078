"""Production: secrets and hosts must come from the environment; HTTPS only (README "Deploying")."""
from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F401,F403
from .base import env

DEBUG = False
SECRET_KEY = env("SECRET_KEY")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS")
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)

SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)


def _proxy_ssl_header(value: str) -> tuple[str, str] | None:
    """`X-Forwarded-Proto,https` (or Django's `HTTP_X_FORWARDED_PROTO,https`) -> Django's tuple.

    Behind a proxy that terminates TLS every request reaches Django as plain HTTP; without this
    header SECURE_SSL_REDIRECT would redirect forever. Set it only when the proxy always
    overwrites the header, or a client could claim HTTPS.
    """
    if not value.strip():
        return None
    header, _, secure_value = (part.strip() for part in value.partition(","))
    if not header or not secure_value or "," in secure_value:
        raise ImproperlyConfigured("SECURE_PROXY_SSL_HEADER must be 'Header-Name,value', e.g. X-Forwarded-Proto,https")
    meta_name = header.upper().replace("-", "_")
    if not meta_name.startswith("HTTP_"):
        meta_name = f"HTTP_{meta_name}"
    return meta_name, secure_value


SECURE_PROXY_SSL_HEADER = _proxy_ssl_header(env("SECURE_PROXY_SSL_HEADER", default=""))
