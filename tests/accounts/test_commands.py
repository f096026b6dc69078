"""Operator commands: create_api_key, add_member, revoke_api_key."""
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from apps.accounts.keys import key_parse, secret_matches
from apps.accounts.models import ApiKey, Membership, Project, Team

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_create_api_key_creates_team_and_project_and_prints_the_key_last():
    output = run("create_api_key", "--team", "acme", "--project", "chatbot", "--scope", "read", "--name", "ci")
    key = output.strip().splitlines()[-1]
    prefix, secret = key_parse(key)
    stored = ApiKey.objects.get(prefix=prefix)
    assert stored.scope == "read" and stored.name == "ci"
    assert stored.project == Project.objects.get(team=Team.objects.get(slug="acme"), slug="chatbot")
    assert secret_matches(secret, stored.secret_hash)


def test_create_api_key_twice_reuses_the_project():
    run("create_api_key", "--team", "acme", "--project", "chatbot")
    run("create_api_key", "--team", "acme", "--project", "chatbot")
    assert Project.objects.count() == 1 and ApiKey.objects.count() == 2


def test_create_api_key_rejects_unknown_scope():
    with pytest.raises(CommandError):
        call_command("create_api_key", "--team", "acme", "--project", "p", "--scope", "admin")


def test_add_member_creates_user_with_password_and_role():
    run("add_member", "--team", "acme", "--username", "ana", "--password", "s3cret-passphrase", "--role", "admin")
    user = get_user_model().objects.get(username="ana")
    assert user.check_password("s3cret-passphrase")
    assert Membership.objects.get(user=user).role == "admin"
    run("add_member", "--team", "acme", "--username", "ana", "--password", "s3cret-passphrase", "--role", "viewer")
    assert Membership.objects.get(user=user).role == "viewer"


def test_revoke_api_key_revokes_by_prefix():
    key = run("create_api_key", "--team", "acme", "--project", "chatbot").strip().splitlines()[-1]
    prefix = key.split("_")[1]
    run("revoke_api_key", prefix)
    assert ApiKey.objects.get(prefix=prefix).revoked_at is not None


def test_revoke_unknown_prefix_fails_clearly():
    with pytest.raises(CommandError, match="No API key"):
        call_command("revoke_api_key", "zzzzzzzz")
