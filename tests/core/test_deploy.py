"""Production settings: `manage.py check --deploy` is clean, and HTTPS is enforced behind a proxy."""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _production_env(**overrides: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in {"DEBUG", "SECURE_PROXY_SSL_HEADER"}}
    env.update(
        DJANGO_SETTINGS_MODULE="tokensite.settings.production",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="tokensite.example.com",
        PYTHONPATH=os.pathsep.join([str(ROOT / "sdk"), env.get("PYTHONPATH", "")]),
    )
    env.update(overrides)
    return env


def _production_settings(*names: str, **env: str) -> dict[str, str]:
    code = ("import json; from django.conf import settings; "
            f"print(json.dumps([repr(getattr(settings, name)) for name in {names!r}]))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_production_env(**env), capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return dict(zip(names, json.loads(result.stdout)))


@pytest.mark.slow  # a fresh Python in a subprocess: seconds
def test_deploy_check_with_production_settings_reports_nothing():
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], cwd=ROOT,
                            env=_production_env(), capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
    assert "Warning" not in result.stderr  # drf-spectacular's schema warnings are part of the deploy check


def test_production_defaults_are_https_only():
    assert _production_settings("SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "SESSION_COOKIE_SECURE",
                                "CSRF_COOKIE_SECURE", "SECURE_PROXY_SSL_HEADER") == {
        "SECURE_SSL_REDIRECT": "True", "SECURE_HSTS_SECONDS": "31536000", "SESSION_COOKIE_SECURE": "True",
        "CSRF_COOKIE_SECURE": "True", "SECURE_PROXY_SSL_HEADER": "None",
    }  # fmt: skip


def test_hsts_duration_and_proxy_header_come_from_the_environment():
    configured = _production_settings("SECURE_HSTS_SECONDS", "SECURE_PROXY_SSL_HEADER", SECURE_HSTS_SECONDS="3600",
                                      SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto,https")  # fmt: skip
    forwarded_proto = "('HTTP_X_FORWARDED_PROTO', 'https')"
    assert configured == {"SECURE_HSTS_SECONDS": "3600", "SECURE_PROXY_SSL_HEADER": forwarded_proto}
    django_spelling = _production_settings("SECURE_PROXY_SSL_HEADER",
                                           SECURE_PROXY_SSL_HEADER="HTTP_X_FORWARDED_PROTO,https")  # fmt: skip
    assert django_spelling == {"SECURE_PROXY_SSL_HEADER": forwarded_proto}


def test_malformed_proxy_header_setting_stops_startup():
    result = subprocess.run([sys.executable, "-c", "from django.conf import settings; settings.DEBUG"], cwd=ROOT,
                            env=_production_env(SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto"), capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode != 0
    assert "SECURE_PROXY_SSL_HEADER must be 'Header-Name,value'" in result.stderr


@pytest.fixture
def behind_tls_proxy(settings):
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_HSTS_SECONDS = 31_536_000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    settings.SECURE_HSTS_PRELOAD = True


@pytest.mark.django_db
def test_plain_http_is_redirected_to_https(client, behind_tls_proxy):
    response = client.get("/login/?next=/", HTTP_X_FORWARDED_PROTO="http")
    assert response.status_code == 301
    assert response["Location"] == "https://testserver/login/?next=/"


@pytest.mark.django_db
def test_https_through_the_proxy_is_served_with_hsts(client, behind_tls_proxy):
    response = client.get("/login/", HTTP_X_FORWARDED_PROTO="https")
    assert response.status_code == 200
    assert response["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
