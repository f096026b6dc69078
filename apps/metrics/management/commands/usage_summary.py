from django.core.management.base import BaseCommand, CommandError
from tokensite_client.summary import render_summary_box

from apps.accounts.models import Project
from apps.core.errors import NotFound
from apps.metrics.selectors import priced_usd, session_get


class Command(BaseCommand):
    help = "Print a session's 'Token Usage Summary' box with its rate, burst and throttle lines."

    def add_arguments(self, parser):
        parser.add_argument("--team", required=True)
        parser.add_argument("--project", required=True)
        parser.add_argument("--session", required=True)

    def handle(self, *args, **options):
        project = Project.objects.filter(team__slug=options["team"], slug=options["project"]).first()
        if project is None:
            raise CommandError(f"No project {options['team']}/{options['project']}.")
        try:
            session = session_get(project=project, session_id=options["session"])
        except NotFound as exc:
            raise CommandError(exc.message) from exc
        tokens_per_second = session.tokens_per_second or 0.0
        self.stdout.write(
            render_summary_box(
                input_tokens=session.input_tokens,
                output_tokens=session.output_tokens,
                cost_usd=priced_usd(session.cost_nanousd, session.unpriced_tokens, session.total_tokens),
                unpriced_tokens=session.unpriced_tokens,
                extra_rows=(
                    ("Tokens per second:", f"{tokens_per_second:,.1f}"),
                    ("Burst (1 s peak):", f"{session.burst_1s:,.0f} tok/s"),
                    ("Peak tokens/minute:", f"{session.burst_60s * 60:,.0f}"),
                    ("Throttle wait:", f"{session.throttle_wait_ms:,.0f} ms ({session.throttle_count} wait{'' if session.throttle_count == 1 else 's'})"),
                ),
            )
        )
