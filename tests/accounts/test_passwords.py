"""Django's password validators apply wherever a password is set: `add_member`, the seed, the settings page."""
from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.management import CommandError, call_command

from apps.accounts.models import Team
from apps.accounts.services import member_add, team_get_or_create
from apps.demo.services import DEMO_PASSWORD, DEMO_USER
from apps.core.errors import BadRequest

pytestmark = pytest.mark.django_db

WEAK = [
    ("x", "too short"),
    ("short-pw-1", "too short"),  # 10 characters: Django's default minimum of 8 would take it
    ("password1234", "too common"),
    ("839201746352", "entirely numeric"),
    ("margaretha-1", "too similar to the username"),
]


@pytest.mark.parametrize("password,reason", WEAK, ids=[reason for _, reason in WEAK])
def test_add_member_refuses_a_weak_password_and_creates_nothing(password, reason):
    with pytest.raises(CommandError, match=f"Password rejected: .*{reason}"):
        call_command("add_member", "--team", "acme", "--username", "margaretha", "--password", password)
    assert not get_user_model().objects.filter(username="margaretha").exists()
    assert not Team.objects.filter(slug="acme").exists()


def test_add_member_refuses_to_reset_an_existing_users_password_to_a_weak_one():
    call_command("add_member", "--team", "acme", "--username", "ana", "--password", "a-long-passphrase")
    with pytest.raises(CommandError, match="too short"):
        call_command("add_member", "--team", "acme", "--username", "ana", "--password", "x")
    assert get_user_model().objects.get(username="ana").check_password("a-long-passphrase")


def test_member_add_service_validates_the_password():
    team = team_get_or_create(slug="acme")
    with pytest.raises(BadRequest) as error:
        member_add(team=team, username="ana", password="1")
    assert error.value.code == "invalid_password"


def test_the_demo_login_passes_the_validators():
    validate_password(DEMO_PASSWORD, user=get_user_model()(username=DEMO_USER))
