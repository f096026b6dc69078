"""Django's admin: absent unless ADMIN_ENABLED, and when enabled its sign-in is throttled like the site's."""
from __future__ import annotations

import importlib
import uuid

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import clear_url_caches

import tokensite.urls

pytestmark = pytest.mark.django_db

STAFF_PASSWORD = "pw-staff-member-1"


@pytest.fixture
def staff(db):
    return get_user_model().objects.create_user(
        username="sam", password=STAFF_PASSWORD, is_staff=True, is_superuser=True
    )


def _reload_urls() -> None:
    importlib.reload(tokensite.urls)
    clear_url_caches()


@pytest.fixture
def admin_enabled(settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                                   "LOCATION": f"admin-site-{uuid.uuid4()}"}}  # fmt: skip
    settings.ADMIN_ENABLED = True
    _reload_urls()
    yield
    settings.ADMIN_ENABLED = False
    _reload_urls()


def test_admin_is_off_by_default(staff):
    client = Client()
    client.force_login(staff)
    assert client.get("/admin/").status_code == 404
    assert client.get("/admin/login/").status_code == 404
    assert Client().post("/admin/login/", {"username": "sam", "password": STAFF_PASSWORD}).status_code != 200


def test_enabled_admin_lets_staff_in(staff, admin_enabled):
    client = Client()
    response = client.post("/admin/login/?next=/admin/", {"username": "sam", "password": STAFF_PASSWORD})
    assert response.status_code == 302
    assert client.get("/admin/").status_code == 200
    assert client.get("/admin/accounts/invitation/").status_code == 200


def test_enabled_admin_sign_in_is_throttled(staff, admin_enabled):
    for _ in range(5):
        assert Client().post("/admin/login/", {"username": "sam", "password": "wrong-password"}).status_code == 200
    response = Client().post("/admin/login/", {"username": "sam", "password": STAFF_PASSWORD})
    assert response.status_code == 200 and "_auth_user_id" not in response.wsgi_request.session
    assert "Too many failed sign-in attempts; try again in 15 minutes." in response.content.decode()
