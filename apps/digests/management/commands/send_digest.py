from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from apps.digests.models import Frequency
from apps.digests.services import digests_send


class Command(BaseCommand):
    help = (
        "Send the daily and weekly digests that are due (the last complete UTC day / ISO week, from "
        "DIGEST_SEND_HOUR_UTC on), each once; beat runs this hourly."
    )

    def add_arguments(self, parser):
        parser.add_argument("--frequency", choices=[Frequency.DAILY, Frequency.WEEKLY], default=None,
                            help="Only this kind (default: both).")  # fmt: skip
        parser.add_argument("--user", default=None, help="Only this username's digests.")
        parser.add_argument("--team", default=None, help="Only this team's digests.")
        parser.add_argument("--force", action="store_true", help="Send again digests already sent for the period.")

    def handle(self, *args, **options):
        run = digests_send(
            now=timezone.now(), frequency=options["frequency"], username=options["user"], team_slug=options["team"],
            force=options["force"],
        )  # fmt: skip
        for label in run.sent:
            self.stdout.write(f"sent {label}")
        for label in run.failed:
            self.stderr.write(f"failed {label}")
        self.stdout.write(
            f"{len(run.sent)} sent, {run.already} already sent, {run.empty} without usage, {len(run.failed)} failed"
        )
        if run.failed:
            raise CommandError(f"{len(run.failed)} digests could not be sent; they are retried on the next run.")
