"""Warm a server process before it takes traffic, so no client's request pays for first use.

A fresh process imports litellm (seconds) at its first priced event, loads a tokeniser at its
first count, builds the URLconf and DRF's machinery at its first request, and, when tasks run
in-process, loads the fold's numba kernels at its first fold: seconds for the first request
(BENCHMARKS.md, "First request of a fresh worker"). gunicorn.conf.py calls `app_warm_up` before
the server takes connections.
"""
from __future__ import annotations

import io
import logging
import sys
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)


def app_warm_up() -> float:
    """Do every first-use cost once, touching no database; the seconds it took.

    Each step is best effort: a step that fails is logged and skipped, since a cold process
    is slower but still correct, and a server must start even when a warm-up step cannot run.
    """
    started = time.monotonic()
    for step in (_request_through_the_stack, _pricing_and_tokeniser, _fold_kernels):
        try:
            step()
        except Exception:  # noqa: BLE001 - see the docstring
            logger.warning("warm-up step %s failed; the first request will pay for it", step.__name__, exc_info=True)
    return time.monotonic() - started


def _request_through_the_stack() -> None:
    """One request through the WSGI application: middleware, URLconf, DRF, error handler, renderer.

    Without a key it ends as a 401 before anything reads the database.
    """
    from django.conf import settings
    from django.db import connections

    from tokensite.wsgi import application

    body = b'{"events": []}'
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/api/v1/events",
        "QUERY_STRING": "",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": _an_allowed_host(settings.ALLOWED_HOSTS),
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0),
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    _quietly(lambda: b"".join(application(environ, lambda status, headers, exc_info=None: None)))
    # A preloading server forks after this: no child may inherit an open database connection.
    connections.close_all()


def _pricing_and_tokeniser() -> None:
    from apps.pricing.catalog import resolve_model_price
    from apps.pricing.counting import count_tokens

    resolve_model_price("gpt-4o", "openai")
    count_tokens("gpt-4o", text="warm-up")


def _fold_kernels() -> None:
    """The fold runs in this process only when tasks run in-process (no REDIS_URL)."""
    from django.conf import settings
    from django.core.management import call_command

    if settings.CELERY_TASK_ALWAYS_EAGER:
        call_command("compile_kernels", stdout=io.StringIO())


def _an_allowed_host(allowed_hosts: list[str]) -> str:
    for host in allowed_hosts:
        if host == "*":
            return "localhost"
        if host.startswith("."):
            return host[1:]
        return host
    return "localhost"


def _quietly(call: Callable[[], object]) -> None:
    # The warm-up's own 401 is not a client's failed request: keep it out of the request log.
    request_logger = logging.getLogger("django.request")
    previous = request_logger.disabled
    request_logger.disabled = True
    try:
        call()
    finally:
        request_logger.disabled = previous
