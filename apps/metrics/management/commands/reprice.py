from datetime import datetime, time, timezone

from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_date, parse_datetime

from apps.metrics.management.commands._projects import project_named
from apps.metrics.services import events_reprice


class Command(BaseCommand):
    help = "Recompute stored costs of a project's events after a price override changed; aggregates follow."

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True, help="project slug, or team/project when slugs repeat")
        parser.add_argument("--since", help="only events at or after this date (YYYY-MM-DD) or RFC 3339 time")

    def handle(self, *args, **options):
        project = project_named(options["project"])
        since = None
        if options["since"]:
            since = parse_datetime(options["since"])
            if since is None and (day := parse_date(options["since"])) is not None:
                since = datetime.combine(day, time.min, tzinfo=timezone.utc)
            if since is None:
                raise CommandError(f"--since {options['since']!r} is not a date or an RFC 3339 time.")
            if since.tzinfo is None:
                since = since.replace(tzinfo=timezone.utc)
        changed = events_reprice(project=project, since=since)
        self.stdout.write(f"Repriced {changed} events of {project}.")
