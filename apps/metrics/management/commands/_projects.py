"""What the commands share (Django runs no module whose name starts with an underscore)."""
from django.core.management.base import CommandError

from apps.accounts.models import Project


def project_named(name: str) -> Project:
    """The project a `--project` option names: its slug, or team/project when slugs repeat."""
    team_slug, _, project_slug = name.rpartition("/")
    projects = Project.objects.filter(slug=project_slug)
    if team_slug:
        projects = projects.filter(team__slug=team_slug)
    if projects.count() != 1:
        raise CommandError(f"Found {projects.count()} projects named {name!r}; use team/project.")
    return projects.get()
