"""Reads on accounts. Every page and API reaches project data through these scoped lookups."""
from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from apps.accounts.models import ApiKey, Membership, Project, Team
from apps.core.errors import NotFound


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
