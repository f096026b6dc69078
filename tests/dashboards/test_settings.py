"""The settings page: owners and admins change keys, prices and members; members and viewers only read."""
from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model

from apps.accounts.keys import secret_hash
from apps.accounts.models import ApiKey, Membership
from apps.accounts.services import api_key_create
from apps.pricing.models import PriceOverride
from tests.dashboards.conftest import PASSWORD, client_for

pytestmark = pytest.mark.django_db

URL = "/acme/chatbot/settings/"
ACTIONS = [
    {"action": "key_create", "name": "ci", "scope": "ingest"},
    {"action": "key_revoke", "prefix": "whatever"},
    {"action": "price_override", "model": "gpt-4o", "input_per_million_usd": "1", "output_per_million_usd": "2",
     "effective_from": "2026-01-01T00:00"},
    {"action": "member_add", "username": "newbie", "password": "pw-newbie-123", "role": "member"},
    {"action": "member_role", "membership": "1", "role": "owner"},
    {"action": "invitation_revoke", "invitation": "1"},
]  # fmt: skip


@pytest.mark.parametrize("role", ["member", "viewer"])
@pytest.mark.parametrize("data", ACTIONS, ids=[a["action"] for a in ACTIONS])
def test_members_and_viewers_cannot_change_settings(project, users, role, data):
    response = client_for(users[role]).post(URL, data)
    assert response.status_code == 403
    assert not ApiKey.objects.exists() and not PriceOverride.objects.exists()
    assert not get_user_model().objects.filter(username="newbie").exists()
    assert not Membership.objects.filter(role="owner").exclude(user=users["owner"]).exists()


@pytest.mark.parametrize("role", ["member", "viewer"])
def test_members_and_viewers_see_settings_without_forms(project, users, role):
    api_key_create(project=project, name="existing")
    html = client_for(users[role]).get(URL).content.decode()
    assert "existing" in html and "owner-user" in html
    assert 'name="action"' not in html
    assert "you can read these settings" in html


@pytest.mark.parametrize("role", ["owner", "admin"])
def test_created_key_is_shown_once_and_only_its_hash_is_stored(project, users, role):
    client = client_for(users[role])
    response = client.post(URL, {"action": "key_create", "name": "ci", "scope": "read"})
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    plaintext = response.context["issued_key"].plaintext
    assert plaintext in response.content.decode()
    key = ApiKey.objects.get(project=project)
    assert key.scope == "read" and key.name == "ci" and key.secret_hash == secret_hash(plaintext.split("_", 2)[2])
    assert plaintext not in client.get(URL).content.decode()


def test_revoke_a_key_of_this_project_only(project, users, other_team_project):
    mine = api_key_create(project=project).api_key
    theirs = api_key_create(project=other_team_project).api_key
    client = client_for(users["admin"])
    assert client.post(URL, {"action": "key_revoke", "prefix": theirs.prefix}).status_code == 400
    theirs.refresh_from_db()
    assert theirs.revoked_at is None
    response = client.post(URL, {"action": "key_revoke", "prefix": mine.prefix})
    assert response.status_code == 302
    mine.refresh_from_db()
    assert mine.revoked_at is not None
    assert "revoked" in client.get(URL).content.decode()


def test_price_override_is_added_with_history(project, users):
    client = client_for(users["owner"])
    for price, day in (("2.5", "2026-01-01T00:00"), ("3", "2026-06-01T00:00")):
        response = client.post(URL, {"action": "price_override", "model": "acme-llm", "input_per_million_usd": price,
                                     "output_per_million_usd": "10", "effective_from": day})  # fmt: skip
        assert response.status_code == 302
    overrides = list(PriceOverride.objects.filter(project=project).order_by("effective_from"))
    assert [o.input_per_million_usd for o in overrides] == [Decimal("2.5"), Decimal("3")]
    assert overrides[0].effective_from.isoformat() == "2026-01-01T00:00:00+00:00"
    assert overrides[1].created_by == users["owner"]
    html = client.get(URL).content.decode()
    assert "$2.5" in html and "$3" in html and "$10" in html


def test_price_override_with_reprice_prices_stored_events(project, users):
    from tests.conftest import usage_event
    from tests.dashboards.conftest import at, ingest

    ingest(project, [usage_event(session_id="r", model="acme-llm", provider="self-hosted", timestamp=at(0),
                                 input_tokens=1_000_000, output_tokens=0)])  # fmt: skip
    client = client_for(users["owner"])
    assert client.get("/acme/chatbot/sessions/r/metadata.json").json()["cost"]["estimated_usd"] is None
    response = client.post(URL, {"action": "price_override", "model": "acme-llm", "input_per_million_usd": "2",
                                 "output_per_million_usd": "4", "effective_from": "2020-01-01T00:00", "reprice": "on"})  # fmt: skip
    assert response.status_code == 302
    assert client.get("/acme/chatbot/sessions/r/metadata.json").json()["cost"]["estimated_usd"] == 2.0


def test_invalid_price_is_refused_with_the_reason(project, users):
    response = client_for(users["owner"]).post(URL, {"action": "price_override", "model": "m",
                                                     "input_per_million_usd": "-1", "output_per_million_usd": "1",
                                                     "effective_from": "2026-01-01T00:00"})  # fmt: skip
    assert response.status_code == 400
    assert not PriceOverride.objects.exists()


def test_admin_adds_a_new_member_who_joins_on_accepting(project, users):
    client = client_for(users["admin"])
    response = client.post(URL, {"action": "member_add", "username": "newbie", "password": "pw-newbie-123", "role": "viewer"})
    assert response.status_code == 302
    newbie = client_for(get_user_model().objects.get(username="newbie"))
    assert newbie.get("/acme/chatbot/").status_code == 404
    invitation = newbie.get("/invitations/").context["invitations"][0]
    newbie.post("/invitations/", {"invitation": invitation.pk, "decision": "accept"})
    assert Membership.objects.get(user__username="newbie").role == "viewer"
    assert newbie.get("/acme/chatbot/").status_code == 200


def test_adding_an_existing_user_never_changes_their_password(project, users, outsider):
    response = client_for(users["admin"]).post(
        URL, {"action": "member_add", "username": outsider.username, "password": "taken-over-1", "role": "viewer"}
    )
    assert response.status_code == 302
    outsider.refresh_from_db()
    assert outsider.check_password(PASSWORD) and not outsider.check_password("taken-over-1")


def test_admin_cannot_make_an_owner_or_demote_one(project, users):
    client = client_for(users["admin"])
    assert client.post(URL, {"action": "member_add", "username": "x", "password": "pw-x-12345", "role": "owner"}).status_code == 403
    owner = Membership.objects.get(user=users["owner"])
    assert client.post(URL, {"action": "member_role", "membership": owner.pk, "role": "viewer"}).status_code == 403
    owner.refresh_from_db()
    assert owner.role == "owner"


def test_owner_changes_roles_but_the_last_owner_stays(project, users):
    client = client_for(users["owner"])
    member = Membership.objects.get(user=users["member"])
    assert client.post(URL, {"action": "member_role", "membership": member.pk, "role": "admin"}).status_code == 302
    member.refresh_from_db()
    assert member.role == "admin"
    owner = Membership.objects.get(user=users["owner"])
    response = client.post(URL, {"action": "member_role", "membership": owner.pk, "role": "viewer"})
    assert response.status_code == 400 and "at least one owner" in response.content.decode()


def test_role_change_of_another_teams_membership_is_refused(project, users, outsider):
    foreign = Membership.objects.get(user=outsider)
    response = client_for(users["owner"]).post(URL, {"action": "member_role", "membership": foreign.pk, "role": "viewer"})
    assert response.status_code == 400
    foreign.refresh_from_db()
    assert foreign.role == "owner"
