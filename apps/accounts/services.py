"""Writes on teams, members, projects and API keys."""
from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from apps.accounts.keys import key_generate, secret_hash
from apps.accounts.models import ApiKey, Membership, Project, Team
from apps.core.errors import BadRequest, NotFound


@dataclass(frozen=True)
class IssuedKey:
    api_key: ApiKey
    plaintext: str  # shown once; only its hash is stored


def _slug_or_error(value: str, what: str) -> str:
    slug = slugify(value)
    if not slug:
        raise BadRequest(f"{what} {value!r} has no usable characters for a slug.", code="invalid_slug")
    return slug


@transaction.atomic
def team_get_or_create(*, slug: str, name: str | None = None) -> Team:
    """Return the team with this slug, creating it when missing."""
    slug = _slug_or_error(slug, "Team")
    team, _ = Team.objects.get_or_create(slug=slug, defaults={"name": name or slug})
    return team


@transaction.atomic
def project_get_or_create(*, team: Team, slug: str, name: str | None = None) -> Project:
    """Return the team's project with this slug, creating it when missing."""
    slug = _slug_or_error(slug, "Project")
    project, _ = Project.objects.get_or_create(team=team, slug=slug, defaults={"name": name or slug})
    return project


@transaction.atomic
def api_key_create(
    *, project: Project, scope: str = ApiKey.Scope.INGEST, name: str = "default", rate_limit_per_minute: int | None = None
) -> IssuedKey:
    """Create a key for the project; the plaintext is returned here and never again."""
    if scope not in ApiKey.Scope.values:
        raise BadRequest(f"Scope must be one of {', '.join(ApiKey.Scope.values)}.", code="invalid_scope")
    while True:
        generated = key_generate()
        if not ApiKey.objects.filter(prefix=generated.prefix).exists():
            break
    api_key = ApiKey.objects.create(
        project=project,
        name=name,
        scope=scope,
        prefix=generated.prefix,
        secret_hash=secret_hash(generated.secret),
        rate_limit_per_minute=rate_limit_per_minute,
    )
    return IssuedKey(api_key=api_key, plaintext=generated.plaintext)


def api_key_revoke(*, prefix: str, project: Project | None = None) -> ApiKey:
    """Revoke the key with this prefix (within `project` when given); revoking twice is harmless."""
    keys = ApiKey.objects.filter(prefix=prefix)
    if project is not None:
        keys = keys.filter(project=project)
    api_key = keys.first()
    if api_key is None:
        raise NotFound(f"No API key with prefix {prefix!r}.", code="api_key_not_found")
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at", "updated_at"])
    return api_key


@transaction.atomic
def member_add(*, team: Team, username: str, password: str | None = None, role: str = Membership.Role.MEMBER) -> Membership:
    """Add (or re-role) a user in the team, creating the user when missing."""
    if role not in Membership.Role.values:
        raise BadRequest(f"Role must be one of {', '.join(Membership.Role.values)}.", code="invalid_role")
    user_model = get_user_model()
    user, created = user_model.objects.get_or_create(username=username)
    if password and (created or not user.check_password(password)):
        user.set_password(password)
        user.save(update_fields=["password"])
    elif created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    membership, _ = Membership.objects.update_or_create(user=user, team=team, defaults={"role": role})
    return membership


def member_set_role(*, membership: Membership, role: str) -> Membership:
    if role not in Membership.Role.values:
        raise BadRequest(f"Role must be one of {', '.join(Membership.Role.values)}.", code="invalid_role")
    membership.role = role
    membership.save(update_fields=["role", "updated_at"])
    return membership
