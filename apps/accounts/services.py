"""Writes on teams, members, projects and API keys."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.hashers import make_password
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from apps.accounts.keys import key_generate, secret_hash
from apps.accounts.models import RESERVED_PROJECT_SLUGS, ApiKey, Invitation, Membership, Project, Team
from apps.core.errors import BadRequest, ErrorCode, NotFound

# Long enough to be read after a weekend, short enough that a forgotten invitation lapses.
INVITATION_LIFETIME = timedelta(days=7)


@dataclass(frozen=True)
class IssuedKey:
    api_key: ApiKey
    plaintext: str  # shown once; only its hash is stored


def _slug_or_error(value: str, what: str) -> str:
    slug = slugify(value)
    if not slug:
        raise BadRequest(f"{what} {value!r} has no usable characters for a slug.", code=ErrorCode.INVALID_SLUG)
    return slug


@transaction.atomic
def team_get_or_create(*, slug: str, name: str | None = None) -> Team:
    """Return the team with this slug, creating it when missing."""
    slug = _slug_or_error(slug, "Team")
    team, _ = Team.objects.get_or_create(slug=slug, defaults={"name": name or slug})
    return team


@transaction.atomic
def project_get_or_create(*, team: Team, slug: str, name: str | None = None) -> Project:
    """Return the team's project with this slug, creating it when missing; reserved slugs are refused."""
    slug = _slug_or_error(slug, "Project")
    if slug in RESERVED_PROJECT_SLUGS:
        raise BadRequest(
            f"Project slug {slug!r} is reserved for a team page ({', '.join(sorted(RESERVED_PROJECT_SLUGS))} "
            "are); pick another.",
            code=ErrorCode.RESERVED_SLUG,
        )
    project, _ = Project.objects.get_or_create(team=team, slug=slug, defaults={"name": name or slug})
    return project


MAX_RETENTION_DAYS = 36_500


def project_retention_set(*, project: Project, days: int | None) -> Project:
    """Keep the project's raw events `days` days (None: keep every one); older folded events are
    deleted by the daily prune (apps.ingestion.retention), the aggregates stay."""
    if days is not None and not 1 <= days <= MAX_RETENTION_DAYS:
        raise BadRequest(f"Retention is 1 to {MAX_RETENTION_DAYS:,} days, or empty to keep everything.",
                         code=ErrorCode.INVALID_RETENTION)  # fmt: skip
    project.raw_events_retention_days = days
    project.save(update_fields=["raw_events_retention_days", "updated_at"])
    return project


@transaction.atomic
def api_key_create(
    *, project: Project, scope: str = ApiKey.Scope.INGEST, name: str = "default", rate_limit_per_minute: int | None = None
) -> IssuedKey:
    """Create a key for the project; the plaintext is returned here and never again."""
    if scope not in ApiKey.Scope.values:
        raise BadRequest(f"Scope must be one of {', '.join(ApiKey.Scope.values)}.", code=ErrorCode.INVALID_SCOPE)
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
        raise NotFound(f"No API key with prefix {prefix!r}.", code=ErrorCode.API_KEY_NOT_FOUND)
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at", "updated_at"])
    return api_key


def username_check(*, username: str) -> None:
    """The user model's username rules (letters, digits and @.+-_), or BadRequest."""
    try:
        get_user_model().username_validator(username)
    except ValidationError as error:
        raise BadRequest(" ".join(error.messages), code=ErrorCode.INVALID_USERNAME) from error


def password_check(*, password: str, user: AbstractBaseUser) -> None:
    """AUTH_PASSWORD_VALIDATORS against `user` (saved or not), or one BadRequest naming every rule broken."""
    try:
        validate_password(password, user=user)
    except ValidationError as error:
        raise BadRequest("Password rejected: " + " ".join(error.messages), code=ErrorCode.INVALID_PASSWORD) from error


@transaction.atomic
def member_add(*, team: Team, username: str, password: str | None = None, role: str = Membership.Role.MEMBER) -> Membership:
    """Add (or re-role) a user in the team directly, creating the user when missing: the operator's path.

    No consent is asked, so only operators reach it (`add_member`, the demo seed); a team admin
    invites instead (`invitation_create`). A password is validated before it is set.
    """
    if role not in Membership.Role.values:
        raise BadRequest(f"Role must be one of {', '.join(Membership.Role.values)}.", code=ErrorCode.INVALID_ROLE)
    user_model = get_user_model()
    user = user_model.objects.filter(username=username).first()
    created = user is None
    if created:
        username_check(username=username)
        user = user_model(username=username)
    if password and (created or not user.check_password(password)):
        password_check(password=password, user=user)
        user.set_password(password)
        user.save()
    elif created:
        user.set_unusable_password()
        user.save()
    membership, _ = Membership.objects.update_or_create(user=user, team=team, defaults={"role": role})
    return membership


def member_set_role(*, membership: Membership, role: str) -> Membership:
    if role not in Membership.Role.values:
        raise BadRequest(f"Role must be one of {', '.join(Membership.Role.values)}.", code=ErrorCode.INVALID_ROLE)
    membership.role = role
    membership.save(update_fields=["role", "updated_at"])
    return membership


def user_create_unless_taken(*, username: str, password: str) -> None:
    """Create the user with this (validated) password when no one has the username; else change nothing.

    Returns nothing, and hashes the password either way, so that a caller cannot tell by the
    result or by the time taken whether the name was free.
    """
    password_hash = make_password(password)
    get_user_model().objects.get_or_create(username=username, defaults={"password": password_hash})


@transaction.atomic
def invitation_create(*, team: Team, username: str, role: str, created_by: AbstractBaseUser | None) -> Invitation:
    """Invite `username` to the team (renewing its pending invitation): the same row whether or not the user exists."""
    if role not in Membership.Role.values:
        raise BadRequest(f"Role must be one of {', '.join(Membership.Role.values)}.", code=ErrorCode.INVALID_ROLE)
    invitation, _ = Invitation.objects.update_or_create(
        team=team,
        username=username,
        status=Invitation.Status.PENDING,
        defaults={"role": role, "created_by": created_by, "expires_at": timezone.now() + INVITATION_LIFETIME},
    )
    return invitation


def _open_invitation_for_update(*, user: AbstractBaseUser, invitation_id: int) -> Invitation:
    invitation = (
        Invitation.objects.select_for_update()
        .filter(pk=invitation_id, username=user.get_username(), status=Invitation.Status.PENDING,
                expires_at__gt=timezone.now())
        .select_related("team")
        .first()
    )  # fmt: skip
    if invitation is None:
        raise NotFound("No such invitation.", code=ErrorCode.INVITATION_NOT_FOUND)
    return invitation


def _invitation_answer(*, user: AbstractBaseUser, invitation_id: int, status: str) -> Invitation:
    """Record the invited user's answer; call inside a transaction (the row stays locked)."""
    invitation = _open_invitation_for_update(user=user, invitation_id=invitation_id)
    invitation.status = status
    invitation.responded_at = timezone.now()
    invitation.save(update_fields=["status", "responded_at", "updated_at"])
    return invitation


@transaction.atomic
def invitation_accept(*, user: AbstractBaseUser, invitation_id: int) -> Membership:
    """The invited user joins the team with the invitation's role (a membership they already have is kept as is)."""
    invitation = _invitation_answer(user=user, invitation_id=invitation_id, status=Invitation.Status.ACCEPTED)
    membership, _ = Membership.objects.get_or_create(user=user, team=invitation.team, defaults={"role": invitation.role})
    return membership


@transaction.atomic
def invitation_decline(*, user: AbstractBaseUser, invitation_id: int) -> Invitation:
    """The invited user turns the invitation down; no membership is created."""
    return _invitation_answer(user=user, invitation_id=invitation_id, status=Invitation.Status.DECLINED)


def invitation_revoke(*, invitation: Invitation) -> Invitation:
    """Withdraw a pending invitation; it can no longer be accepted."""
    invitation.status = Invitation.Status.REVOKED
    invitation.responded_at = timezone.now()
    invitation.save(update_fields=["status", "responded_at", "updated_at"])
    return invitation
