from django.core.management.base import BaseCommand, CommandError

from apps.accounts.models import ApiKey
from apps.accounts.services import api_key_create, project_get_or_create, team_get_or_create
from apps.core.errors import ApplicationError


class Command(BaseCommand):
    help = "Create an API key for a project (creating the team and project if missing); prints the key last."

    def add_arguments(self, parser):
        parser.add_argument("--team", required=True)
        parser.add_argument("--project", required=True)
        parser.add_argument("--scope", choices=ApiKey.Scope.values, default=ApiKey.Scope.INGEST)
        parser.add_argument("--name", default="default")
        parser.add_argument("--rate-limit-per-minute", type=int, default=None)

    def handle(self, *args, **options):
        try:
            team = team_get_or_create(slug=options["team"])
            project = project_get_or_create(team=team, slug=options["project"])
            issued = api_key_create(
                project=project,
                scope=options["scope"],
                name=options["name"],
                rate_limit_per_minute=options["rate_limit_per_minute"],
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"Created {issued.api_key.scope} key {issued.api_key.prefix!r} for {project}. It is shown only once:")
        self.stdout.write(issued.plaintext)
