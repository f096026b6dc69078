"""Sign-in throttling: per username and per address, a clear message, and no lock-out when Redis is down."""
from __future__ import annotations

import socket
import time
import uuid

import pytest
from django.conf import settings as django_settings
from django.test import Client

from apps.accounts.services import member_add

pytestmark = pytest.mark.django_db

PASSWORD = "pw-olivia-123"
BLOCKED = "Too many failed sign-in attempts; try again in 15 minutes."


@pytest.fixture(autouse=True)
def own_cache(settings):
    """A cache of this test's own: counts never leak between tests, nor into a shared Redis."""
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                                   "LOCATION": f"login-throttle-{uuid.uuid4()}"}}  # fmt: skip


def sign_in(username: str, password: str, address: str = "203.0.113.7", **headers):
    return Client(REMOTE_ADDR=address, **headers).post("/login/", {"username": username, "password": password})


def signed_in(response) -> bool:
    return response.status_code == 302 and "_auth_user_id" in response.wsgi_request.session


def test_five_wrong_passwords_block_that_username_with_a_clear_message(owner):
    for _ in range(5):
        response = sign_in("olivia", "wrong-password")
        assert response.status_code == 200 and b"Please enter a correct username and password" in response.content
    response = sign_in("olivia", PASSWORD)  # right password, still refused
    assert response.status_code == 429 and not signed_in(response)
    assert BLOCKED in response.content.decode()
    assert 890 <= int(response["Retry-After"]) <= 900
    # From another address too: the count belongs to the username.
    assert sign_in("olivia", PASSWORD, address="198.51.100.1").status_code == 429


def test_a_blocked_username_leaves_other_users_alone(owner, team):
    member_add(team=team, username="ana", password="pw-ana-12345", role="member")
    for _ in range(5):
        sign_in("olivia", "wrong-password")
    assert signed_in(sign_in("ana", "pw-ana-12345"))


def test_failures_from_one_address_block_it_for_every_username(owner):
    for index in range(20):  # 20 names, 1 failure each: no username reaches its limit
        sign_in(f"guess-{index}", "wrong-password", address="192.0.2.50")
    response = sign_in("olivia", PASSWORD, address="192.0.2.50")
    assert response.status_code == 429 and BLOCKED in response.content.decode()
    assert signed_in(sign_in("olivia", PASSWORD, address="192.0.2.51"))


def test_unknown_and_existing_usernames_are_blocked_alike(owner):
    for username in ("olivia", "nobody-by-that-name"):
        replies = [sign_in(username, "wrong-password", address=f"198.51.100.{n}") for n in range(6)]
        assert [reply.status_code for reply in replies] == [200] * 5 + [429]


def test_a_right_password_forgives_earlier_typos(owner):
    for _ in range(4):
        sign_in("olivia", "wrong-password")
    assert signed_in(sign_in("olivia", PASSWORD))
    for _ in range(4):
        sign_in("olivia", "wrong-password")
    assert signed_in(sign_in("olivia", PASSWORD))


def test_the_block_lifts_when_the_window_ends(owner, monkeypatch):
    for _ in range(5):
        sign_in("olivia", "wrong-password")
    assert sign_in("olivia", PASSWORD).status_code == 429
    later = time.time() + 15 * 60 + 1
    monkeypatch.setattr(time, "time", lambda: later)  # the cache's expiry and the throttle read this clock
    assert signed_in(sign_in("olivia", PASSWORD))


def test_x_forwarded_for_is_ignored_unless_proxies_are_configured(owner, settings):
    settings.LOGIN_FAILURES_PER_ADDRESS = 3
    for index in range(3):  # a client naming a new address each time
        sign_in(f"guess-{index}", "wrong-password", address="192.0.2.9", HTTP_X_FORWARDED_FOR=f"10.0.0.{index}")
    assert sign_in("olivia", PASSWORD, address="192.0.2.9", HTTP_X_FORWARDED_FOR="10.0.0.99").status_code == 429


def test_behind_one_proxy_the_address_it_forwarded_is_throttled(owner, settings):
    settings.LOGIN_FAILURES_PER_ADDRESS = 3
    settings.NUM_PROXIES = 1
    proxy = "10.1.1.1"
    for index in range(3):  # the client forges a first entry; the proxy appends the real one
        sign_in(f"guess-{index}", "wrong-password", address=proxy, HTTP_X_FORWARDED_FOR=f"1.2.3.{index}, 192.0.2.77")
    assert sign_in("olivia", PASSWORD, address=proxy, HTTP_X_FORWARDED_FOR="192.0.2.77").status_code == 429
    assert signed_in(sign_in("olivia", PASSWORD, address=proxy, HTTP_X_FORWARDED_FOR="192.0.2.78"))


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_sign_in_still_works_when_redis_is_down(owner, settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                   "LOCATION": f"redis://127.0.0.1:{_closed_port()}/0"}}  # fmt: skip
    for _ in range(6):
        response = sign_in("olivia", "wrong-password")
        assert response.status_code == 200 and b"Please enter a correct username and password" in response.content
    assert signed_in(sign_in("olivia", PASSWORD))


@pytest.mark.redis
@pytest.mark.skipif(not django_settings.REDIS_URL, reason="needs REDIS_URL (set by .ci/run)")
def test_throttling_counts_in_redis(owner, settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                   "LOCATION": django_settings.REDIS_URL, "KEY_PREFIX": f"test-{uuid.uuid4()}"}}  # fmt: skip
    for _ in range(5):
        sign_in("olivia", "wrong-password")
    response = sign_in("olivia", PASSWORD)
    assert response.status_code == 429 and BLOCKED in response.content.decode()
