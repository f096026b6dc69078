"""Members and invitations: nobody joins a team without accepting, and no reply tells whether a username exists."""
from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.messages import get_messages
from django.utils import timezone

from apps.accounts.models import Invitation, Membership, Team
from apps.accounts.services import invitation_create
from tests.dashboards.conftest import PASSWORD, client_for

pytestmark = pytest.mark.django_db

URL = "/acme/chatbot/settings/"
ROLES = ["owner", "admin", "member", "viewer"]


def invite(client, username: str, role: str = "viewer", password: str = ""):
    return client.post(URL, {"action": "member_add", "username": username, "password": password, "role": role})


def reply_text(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def open_invitation(team: Team, username: str, role: str = "viewer", created_by=None) -> Invitation:
    return invitation_create(team=team, username=username, role=role, created_by=created_by)


def test_inviting_another_teams_user_adds_nobody_until_they_accept(project, users, outsider):
    response = invite(client_for(users["admin"]), outsider.username)
    assert response.status_code == 302
    assert not Membership.objects.filter(user=outsider, team=project.team).exists()
    assert client_for(outsider).get("/acme/chatbot/").status_code == 404
    invitation = Invitation.objects.get(username=outsider.username, team=project.team, status="pending")
    assert invitation.role == "viewer" and invitation.created_by == users["admin"]


@pytest.mark.parametrize("password", ["", "a-fine-passphrase"], ids=["no password", "with password"])
def test_the_reply_is_the_same_for_an_existing_and_an_unknown_username(project, users, outsider, password):
    client = client_for(users["admin"])
    existing = invite(client, outsider.username, password=password)
    unknown = invite(client_for(users["admin"]), "nobody-by-that-name", password=password)  # its own messages
    assert existing.status_code == unknown.status_code == 302
    assert existing["Location"] == unknown["Location"]
    assert [text.replace(outsider.username, "NAME") for text in reply_text(existing)] == [
        text.replace("nobody-by-that-name", "NAME") for text in reply_text(unknown)
    ]
    # And the page afterwards lists both the same way: pending, neither a member.
    pending = {i.username: i.role for i in Invitation.objects.filter(team=project.team, status="pending")}
    assert pending == {outsider.username: "viewer", "nobody-by-that-name": "viewer"}
    html = client.get(URL).content.decode()
    assert _pending_row(html, outsider.username) == _pending_row(html, "nobody-by-that-name")
    assert not Membership.objects.filter(team=project.team, user__username__in=[outsider.username]).exists()


def _pending_row(html: str, username: str) -> str:
    row = re.search(rf"<tr>\s*<td>{re.escape(username)}</td>.*?</tr>", html, re.S).group(0)
    row = re.sub(r"<time[^>]*>[^<]*</time>", "TIME", row)  # the two were made a moment apart
    return re.sub(r'name="(csrfmiddlewaretoken|invitation)" value="[^"]+"', "", row).replace(username, "NAME")


@pytest.mark.parametrize("password", ["x", "short-pw-1", "password1234", "839201746352"])
def test_a_weak_password_is_refused_alike_for_existing_and_unknown_usernames(project, users, outsider, password):
    existing = invite(client_for(users["admin"]), outsider.username, password=password)
    unknown = invite(client_for(users["admin"]), "newbie", password=password)
    assert existing.status_code == unknown.status_code == 400
    assert "Password rejected" in unknown.content.decode()
    assert reply_text(existing) == reply_text(unknown)
    assert not get_user_model().objects.filter(username="newbie").exists()
    assert not Invitation.objects.exists()
    outsider.refresh_from_db()
    assert outsider.check_password(PASSWORD)


def test_a_one_character_password_creates_no_account(project, users):
    response = invite(client_for(users["owner"]), "newbie", password="1")
    assert response.status_code == 400 and "too short" in response.content.decode()
    assert not get_user_model().objects.filter(username="newbie").exists()


def test_a_malformed_username_is_refused_whether_or_not_it_exists(project, users):
    response = invite(client_for(users["owner"]), "no spaces/allowed")
    assert response.status_code == 400
    assert not Invitation.objects.exists()


def test_a_new_account_from_the_settings_page_joins_after_accepting(project, users):
    admin = client_for(users["admin"])
    assert invite(admin, "newbie", role="member", password="pw-newbie-123").status_code == 302
    newbie = get_user_model().objects.get(username="newbie")
    assert newbie.check_password("pw-newbie-123")
    assert not Membership.objects.filter(user=newbie).exists()

    client = client_for(newbie)
    assert b"1 pending team invitation" in client.get("/").content
    page = client.get("/invitations/")
    assert page.status_code == 200 and b"acme" in page.content
    invitation = Invitation.objects.get(username="newbie")
    response = client.post("/invitations/", {"invitation": invitation.pk, "decision": "accept"})
    assert response.status_code == 302 and response["Location"] == "/"
    assert Membership.objects.get(user=newbie, team=project.team).role == "member"
    assert client.get("/acme/chatbot/").status_code == 200
    assert b"newbie" not in admin.get(URL).content.split(b"Pending invitations")[1].split(b"</table>")[0]


@pytest.mark.parametrize("role", ROLES)
def test_the_invited_user_joins_with_the_invited_role(project, users, outsider, role):
    invitation = open_invitation(project.team, outsider.username, role=role, created_by=users["owner"])
    response = client_for(outsider).post("/invitations/", {"invitation": invitation.pk, "decision": "accept"})
    assert response.status_code == 302
    assert Membership.objects.get(user=outsider, team=project.team).role == role


def test_declining_creates_no_membership(project, users, outsider):
    invitation = open_invitation(project.team, outsider.username)
    client = client_for(outsider)
    assert client.post("/invitations/", {"invitation": invitation.pk, "decision": "decline"}).status_code == 302
    invitation.refresh_from_db()
    assert invitation.status == "declined"
    assert not Membership.objects.filter(user=outsider, team=project.team).exists()
    assert client.post("/invitations/", {"invitation": invitation.pk, "decision": "accept"}).status_code == 404


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("decision", ["accept", "decline"])
def test_nobody_but_the_invited_user_answers_an_invitation(project, users, outsider, role, decision):
    invitation = open_invitation(project.team, outsider.username, role="admin")
    response = client_for(users[role]).post("/invitations/", {"invitation": invitation.pk, "decision": decision})
    assert response.status_code == 404
    invitation.refresh_from_db()
    assert invitation.status == "pending"
    assert b"acme" not in client_for(users[role]).get("/invitations/").content.split(b"<main>")[1]


def test_an_expired_invitation_cannot_be_accepted(project, outsider):
    invitation = open_invitation(project.team, outsider.username)
    Invitation.objects.filter(pk=invitation.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    client = client_for(outsider)
    assert client.post("/invitations/", {"invitation": invitation.pk, "decision": "accept"}).status_code == 404
    assert not Membership.objects.filter(user=outsider, team=project.team).exists()


@pytest.mark.parametrize("data", [{}, {"invitation": "x", "decision": "accept"}, {"invitation": "1", "decision": "maybe"},
                                  {"invitation": str(10**30), "decision": "accept"}])  # fmt: skip
def test_a_malformed_answer_is_a_400(outsider, data):
    assert client_for(outsider).post("/invitations/", data).status_code == 400


def test_the_invitations_page_needs_login(client):
    response = client.get("/invitations/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")


@pytest.mark.parametrize("role", ROLES)
def test_who_may_invite(project, users, role):
    response = invite(client_for(users[role]), "someone")
    assert response.status_code == (302 if role in ("owner", "admin") else 403)
    assert Invitation.objects.filter(username="someone").exists() == (role in ("owner", "admin"))


@pytest.mark.parametrize("role", ROLES)
def test_who_may_withdraw_an_invitation(project, users, role):
    invitation = open_invitation(project.team, "someone", role="member")
    response = client_for(users[role]).post(URL, {"action": "invitation_revoke", "invitation": invitation.pk})
    assert response.status_code == (302 if role in ("owner", "admin") else 403)
    invitation.refresh_from_db()
    assert invitation.status == ("revoked" if role in ("owner", "admin") else "pending")


def test_only_an_owner_invites_an_owner_or_withdraws_an_owner_invitation(project, users):
    assert invite(client_for(users["admin"]), "someone", role="owner").status_code == 403
    invitation = open_invitation(project.team, "someone", role="owner")
    admin_try = client_for(users["admin"]).post(URL, {"action": "invitation_revoke", "invitation": invitation.pk})
    assert admin_try.status_code == 403
    owner_try = client_for(users["owner"]).post(URL, {"action": "invitation_revoke", "invitation": invitation.pk})
    assert owner_try.status_code == 302


def test_a_withdrawn_invitation_cannot_be_accepted(project, users, outsider):
    invitation = open_invitation(project.team, outsider.username)
    client_for(users["owner"]).post(URL, {"action": "invitation_revoke", "invitation": invitation.pk})
    assert client_for(outsider).post("/invitations/", {"invitation": invitation.pk, "decision": "accept"}).status_code == 404


def test_another_teams_invitation_is_404_to_withdraw(project, users, outsider):
    theirs = open_invitation(Team.objects.get(slug="globex"), "someone")
    response = client_for(users["owner"]).post(URL, {"action": "invitation_revoke", "invitation": theirs.pk})
    assert response.status_code == 404
    theirs.refresh_from_db()
    assert theirs.status == "pending"


def test_a_non_member_cannot_invite_into_the_team(project, outsider):
    assert invite(client_for(outsider), outsider.username, role="owner").status_code == 404
    assert not Invitation.objects.exists()


def test_inviting_again_renews_the_one_pending_invitation(project, users):
    client = client_for(users["owner"])
    invite(client, "someone", role="viewer")
    invite(client, "someone", role="admin")
    assert list(Invitation.objects.values_list("username", "role", "status")) == [("someone", "admin", "pending")]


def test_inviting_a_member_of_the_team_says_so(project, users):
    response = invite(client_for(users["owner"]), users["viewer"].username, role="admin")
    assert response.status_code == 400 and "already a member" in response.content.decode()
    assert Membership.objects.get(user=users["viewer"]).role == "viewer"
