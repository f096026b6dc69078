from django.core.management.base import BaseCommand, CommandError

from apps.metrics.management.commands._projects import project_named
from apps.metrics.selectors import quarantined_sessions
from apps.metrics.services import quarantine_release


class Command(BaseCommand):
    help = (
        "List the sessions the fold quarantined (their events are stored but not folded), or put them "
        "back on the fold once the cause is fixed."
    )

    def add_arguments(self, parser):
        parser.add_argument("--project", help="only this project: slug, or team/project when slugs repeat")
        release = parser.add_mutually_exclusive_group()
        release.add_argument("--release", metavar="SESSION", help="put this session back on the fold")
        release.add_argument("--release-all", action="store_true", help="put every listed session back on the fold")

    def handle(self, *args, **options):
        project = project_named(options["project"]) if options["project"] else None
        if options["release"] is not None or options["release_all"]:
            released = quarantine_release(project_id=project.pk if project else None, session_id=options["release"])
            if options["release"] is not None and not released:
                raise CommandError(f"No quarantined session {options['release']!r}.")
            self.stdout.write(f"Released {released} session{'' if released == 1 else 's'}; they fold again now.")
            return
        sessions = quarantined_sessions(project=project)
        self.stdout.write(
            f"{len(sessions)} quarantined session{'' if len(sessions) == 1 else 's'}, "
            f"{sum(s.pending_events for s in sessions)} events not folded."
        )
        for session in sessions:
            self.stdout.write(
                f"{session.project}  {session.session_id}  {session.pending_events} events  "
                f"since {session.quarantined_at:%Y-%m-%d %H:%M:%S}Z  {session.error}"
            )
