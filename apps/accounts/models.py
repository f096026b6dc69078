"""Teams, their members, their projects and the API keys that write to and read from a project."""
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from apps.core.models import TimeStampedModel


class Team(TimeStampedModel):
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)

    def __str__(self) -> str:
        return self.slug


class Membership(TimeStampedModel):
    class Role(models.TextChoices):
        OWNER = "owner"
        ADMIN = "admin"
        MEMBER = "member"
        VIEWER = "viewer"

    # Roles that may change a project's settings (keys, price overrides, members).
    MANAGER_ROLES = (Role.OWNER, Role.ADMIN)

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "team"], name="membership_unique_user_team")]

    @property
    def can_manage(self) -> bool:
        return self.role in self.MANAGER_ROLES


# Team pages live where a project's page would (/<team>/people/, /<team>/budgets/, /<team>/digest/),
# so a project with one of these slugs could never be reached: new ones are refused, and the
# migration that introduced the list renamed existing ones (people -> people-1).
RESERVED_PROJECT_SLUGS = frozenset({"people", "budgets", "digest"})


def validate_project_slug_not_reserved(value: str) -> None:
    if value in RESERVED_PROJECT_SLUGS:
        raise ValidationError(f"{value!r} names a team page; pick another project slug.", code="reserved")


class Project(TimeStampedModel):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="projects")
    slug = models.SlugField(max_length=64, validators=[validate_project_slug_not_reserved])
    name = models.CharField(max_length=200)
    # Raw events older than this many days are deleted once folded (apps.ingestion.retention);
    # the aggregates stay. Null keeps every raw event.
    raw_events_retention_days = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "slug"], name="project_unique_team_slug")]

    def __str__(self) -> str:
        return f"{self.team.slug}/{self.slug}"


class ApiKey(TimeStampedModel):
    """A project key `tsk_<prefix>_<secret>`: the prefix is public, the secret is stored only as a hash."""

    class Scope(models.TextChoices):
        INGEST = "ingest"
        READ = "read"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, default="default")
    scope = models.CharField(max_length=8, choices=Scope.choices, default=Scope.INGEST)
    prefix = models.CharField(max_length=16, unique=True)
    secret_hash = models.CharField(max_length=64)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # Requests per minute; null uses settings.INGEST_DEFAULT_RATE_LIMIT_PER_MINUTE.
    rate_limit_per_minute = models.PositiveIntegerField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.prefix} ({self.scope})"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None


class Invitation(TimeStampedModel):
    """A team's offer of a role to a username. The membership exists only once that user accepts.

    Addressed by username, not by user, so that inviting a name nobody has looks exactly like
    inviting someone: the row is the same either way.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        ACCEPTED = "accepted"
        DECLINED = "declined"
        REVOKED = "revoked"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="invitations")
    username = models.CharField(max_length=150)
    role = models.CharField(max_length=16, choices=Membership.Role.choices, default=Membership.Role.MEMBER)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    expires_at = models.DateTimeField()
    responded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["team", "username"], condition=models.Q(status="pending"), name="invitation_one_pending_per_user"
            )
        ]
        indexes = [models.Index(fields=["username", "status"], name="invitation_username_status")]

    def __str__(self) -> str:
        return f"{self.username} → {self.team.slug} ({self.status})"
