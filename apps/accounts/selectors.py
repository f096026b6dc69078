"""Reads on accounts. Every page and API reaches project data through these scoped lookups."""
from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet
from django.utils import timezone

from apps.accounts.models import ApiKey, Invitation, Membership, Project, Team
from apps.core.errors import ErrorCode, NotFound


def teams_for_user(*, user: AbstractBaseUser) -> QuerySet[Team]:
    """The teams the user is a member of."""
    return Team.objects.filter(memberships__user=user).order_by("name")


def membership_get(*, user: AbstractBaseUser, team_slug: str) -> Membership:
    """The user's membership of the team, or NotFound (never a 403 that confirms the team exists)."""
    membership = (
        Membership.objects.select_related("team").filter(user=user, team__slug=team_slug).first()
        if user.is_authenticated
        else None
    )
    if membership is None:
        raise NotFound("Not found.")
    return membership


def project_get_for_member(*, membership: Membership, project_slug: str) -> Project:
    """The team's project with this slug, scoped to the membership's team."""
    project = Project.objects.filter(team=membership.team, slug=project_slug).select_related("team").first()
    if project is None:
        raise NotFound("Not found.")
    return project


def api_key_get_active(*, prefix: str) -> ApiKey | None:
    """The unrevoked key with this prefix and its project and team, or None."""
    return (
        ApiKey.objects.select_related("project", "project__team")
        .filter(prefix=prefix, revoked_at__isnull=True)
        .first()
    )


def api_keys_for_project(*, project: Project) -> QuerySet[ApiKey]:
    return ApiKey.objects.filter(project=project).order_by("-created_at")


def _open_invitations() -> QuerySet[Invitation]:
    return Invitation.objects.filter(status=Invitation.Status.PENDING, expires_at__gt=timezone.now())


def invitations_open_for_user(*, user: AbstractBaseUser) -> QuerySet[Invitation]:
    """Pending, unexpired invitations addressed to the user's username, newest first."""
    return (
        _open_invitations()
        .filter(username=user.get_username())
        .select_related("team", "created_by")
        .order_by("-created_at")
    )


def invitations_open_for_team(*, team: Team) -> QuerySet[Invitation]:
    """The team's pending, unexpired invitations, by username."""
    return _open_invitations().filter(team=team).select_related("created_by").order_by("username")


def invitation_get_open_for_team(*, team: Team, invitation_id: int) -> Invitation:
    """A pending invitation of this team (never another team's), or NotFound."""
    invitation = _open_invitations().filter(team=team, pk=invitation_id).first()
    if invitation is None:
        raise NotFound("No such invitation.", code=ErrorCode.INVITATION_NOT_FOUND)
    return invitation
