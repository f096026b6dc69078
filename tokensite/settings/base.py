"""Settings shared by every environment; everything deployment-specific comes from the environment."""
import os
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured
from tokensite_client.events import MAX_BATCH_EVENTS

BASE_DIR = Path(__file__).resolve().parent.parent.parent

# Offline operation (DESIGN.md section 8): these must be set before litellm or tiktoken are
# imported anywhere in the process, so they live at the top of settings.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False) if (BASE_DIR / ".env").exists() else None

SECRET_KEY = env("SECRET_KEY", default="insecure-dev-key-change-me-in-production-0123456789")
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "csp",
    "apps.core",
    "apps.accounts",
    "apps.ingestion",
    "apps.pricing",
    "apps.metrics",
    "apps.budgets",
    "apps.limits",
    "apps.dashboards",
    "apps.otlp",
    "apps.digests",
    "apps.demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "apps.core.middleware.PermissionsPolicyMiddleware",
    "apps.core.middleware.RejectNulCharactersMiddleware",
    "apps.core.middleware.DatabaseUnavailableMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "apps.core.middleware.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "tokensite.urls"
WSGI_APPLICATION = "tokensite.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL, so readers (pages, the background folder's reads) never block the writer; the busy
    # timeout lets the dev server, its background folder and tests write concurrently.
    # SQLITE_SYNCHRONOUS: FULL flushes the log at every commit, so an accepted event is on disk
    # before its reply, as the ingest contract promises. NORMAL (in WAL mode) flushes at
    # checkpoints only: a committed event survives a crash of the server process but not of the
    # machine. With the fold off the request, FULL meets the embedded targets (BENCHMARKS.md), so
    # NORMAL is an opt-in for disks whose flush is slow.
    SQLITE_SYNCHRONOUS = env.str("SQLITE_SYNCHRONOUS", default="FULL").upper()
    if SQLITE_SYNCHRONOUS not in ("FULL", "NORMAL"):
        raise ImproperlyConfigured(f"SQLITE_SYNCHRONOUS must be FULL or NORMAL, not {SQLITE_SYNCHRONOUS!r}.")
    # IMMEDIATE: a transaction takes the write lock when it begins, waiting its turn, rather than
    # at its first write, where SQLite fails at once ("database is locked") if another thread (the
    # background folder) committed since the transaction's first read.
    DATABASES["default"].setdefault("OPTIONS", {}).update({
        "timeout": 20, "transaction_mode": "IMMEDIATE",
        "init_command": f"PRAGMA journal_mode=WAL; PRAGMA synchronous={SQLITE_SYNCHRONOUS};",
    })  # fmt: skip
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
    # A kept connection is checked before a request reuses it, so the first request after a
    # PostgreSQL restart or failover reconnects instead of failing on the dead connection.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Applied wherever a password is set: the settings page, `add_member`, invitation sign-ups, the
# admin. 12 characters is OWASP ASVS 4.0's minimum (V2.1.1) for a password that is the only
# factor, as it is here; Django's 8 assumes a second factor or a site that does not hold keys.
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# Sign-in throttling (apps/accounts/login_throttle.py): this many failed sign-ins within the
# window block further attempts for that username, or from that address, until the window ends.
LOGIN_FAILURES_PER_USERNAME = env.int("LOGIN_FAILURES_PER_USERNAME", default=5)
LOGIN_FAILURES_PER_ADDRESS = env.int("LOGIN_FAILURES_PER_ADDRESS", default=20)
LOGIN_THROTTLE_WINDOW_MINUTES = env.int("LOGIN_THROTTLE_WINDOW_MINUTES", default=15)
# The client address is REMOTE_ADDR unless the site runs behind this many reverse proxies, each
# appending to X-Forwarded-For; then it is the entry the outermost trusted proxy added. Trusting
# the header without a proxy would let any client pick its own address.
NUM_PROXIES = env.int("NUM_PROXIES", default=0)

# Django's admin is mounted at /admin/ only when enabled; its login shares the throttling above.
ADMIN_ENABLED = env.bool("ADMIN_ENABLED", default=False)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"

# Bodies are size-checked by the ingest view itself (1 MiB raw, 8 MiB gunzipped), so Django's own
# cap only has to be above that.
DATA_UPLOAD_MAX_MEMORY_SIZE = 9 * 1024 * 1024

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["apps.accounts.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["apps.core.parsers.LimitedJSONParser"],
    "DEFAULT_SCHEMA_CLASS": "apps.core.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "apps.core.exception_handler.api_exception_handler",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "TokenSite API",
    "DESCRIPTION": "Ingest LLM usage and throttle events; read session metrics, usage and cost.",
    "VERSION": "1.0.0",
    # 3.1: the event schema comes from msgspec as JSON Schema 2020-12 (`{"type": "null"}` for optional fields).
    "OAS_VERSION": "3.1.0",
    # Request bodies get their own components, so a non-blank field says minLength 1 where it is sent.
    "COMPONENT_SPLIT_REQUEST": True,
    # The error body's `code` enum is named for the class that defines it.
    "ENUM_NAME_OVERRIDES": {"ErrorCode": "apps.core.errors.ErrorCode"},
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    # /api/docs/ is Swagger UI from drf-spectacular-sidecar's static files: no CDN, works offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # No online validator badge: it would fetch from validator.swagger.io.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
}

# Headers on every reply (README "Deploying"). The pages load only their own scripts, styles and
# images, so the policy allows nothing else: no inline script or style, no other origin.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
    }
}
# Browser features no page uses, switched off for the pages and anything they might frame.
PERMISSIONS_POLICY_DENIED = [
    "accelerometer", "autoplay", "bluetooth", "camera", "display-capture", "encrypted-media", "geolocation",
    "gyroscope", "hid", "idle-detection", "magnetometer", "microphone", "midi", "payment",
    "publickey-credentials-get", "screen-wake-lock", "serial", "usb", "xr-spatial-tracking",
]  # fmt: skip
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# Background work: with REDIS_URL, Celery workers take tasks from Redis; without it tasks run
# in-process right after the transaction commits (the embedded default of `make run`).
REDIS_URL = env("REDIS_URL", default="")
CELERY_BROKER_URL = REDIS_URL or "memory://localhost//"
CELERY_RESULT_BACKEND = None
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
# Without a broker, events are folded on a background thread of the process that stored them
# (apps.metrics.background), so a reply never waits for aggregation; False folds them right after
# the commit, inside the request, as the test settings do.
METRICS_FOLD_THREAD = CELERY_TASK_ALWAYS_EAGER and env.bool("METRICS_FOLD_THREAD", default=True)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = 300
CELERY_TASK_SOFT_TIME_LIMIT = 240
CELERY_TIMEZONE = "UTC"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A publish to a dead broker must fail fast: ingestion has already committed the events and the
# beat sweep will pick them up, so the request must not hang waiting for Redis.
# The socket timeouts bound each try when Redis hangs rather than refuses (without them a
# publish to a stopped Redis waits forever).
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5,
    "socket_connect_timeout": 0.3, "socket_timeout": 0.5,
}  # fmt: skip
CELERY_BROKER_CONNECTION_TIMEOUT = 2

# Mail (digests; budget alerts): EMAIL_URL in django-environ's form (smtp://user:password@host:587,
# smtp+tls://..., smtps://...); unset, mails are printed on the console (`make run`).
# Parts the URL leaves out keep Django's defaults (EMAIL_HOST localhost, no login).
vars().update({name: value for name, value in env.email_url("EMAIL_URL", default="consolemail://").items() if value})
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="TokenSite <tokensite@localhost>")
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)
# Where mails link to (the digest's page): the site's public address, without a trailing slash.
SITE_URL = env("SITE_URL", default="http://127.0.0.1:8000").rstrip("/")
# Digests go out once their period is over and this hour (UTC) has come: daily ones each morning,
# weekly ones on Monday morning (apps.digests).
DIGEST_SEND_HOUR_UTC = env.int("DIGEST_SEND_HOUR_UTC", default=7)

# Ingestion limits (issue 2).
INGEST_MAX_BODY_BYTES = 1024 * 1024
INGEST_MAX_DECOMPRESSED_BYTES = 8 * 1024 * 1024
INGEST_MAX_EVENTS = MAX_BATCH_EVENTS  # the SDK's limit, defined once there
INGEST_DEFAULT_RATE_LIMIT_PER_MINUTE = env.int("INGEST_DEFAULT_RATE_LIMIT_PER_MINUTE", default=6000)

# OTLP receiver limits (issue 13): exporters send up to 512 records a batch, a few KiB each, and
# Gemini CLI / Qwen Code send chunked bodies without Content-Length (see tokensite.chunked).
OTLP_MAX_BODY_BYTES = 4 * 1024 * 1024
OTLP_MAX_DECOMPRESSED_BYTES = 32 * 1024 * 1024
OTLP_MAX_RECORDS = 10_000

CACHES = {
    "default": (
        # Every API request touches the cache (the key rate limit), so a Redis that is down or hung
        # must fail within a fraction of a second; the limiter then lets requests through.
        {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {"socket_connect_timeout": 0.3, "socket_timeout": 0.5},
        }
        if REDIS_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    "loggers": {"LiteLLM": {"level": "WARNING"}, "httpx": {"level": "WARNING"}},
}

# Budget alerts (apps.budgets). Webhook targets resolving to loopback, private or link-local
# addresses are refused unless this is set (an alert must not reach into the internal network).
WEBHOOK_ALLOW_PRIVATE = env.bool("WEBHOOK_ALLOW_PRIVATE", default=False)
WEBHOOK_TIMEOUT_S = 5.0
BUDGET_ALERT_RETRY_BACKOFF_S = 1.0  # between the tries of one send: 1 s, then 2 s
