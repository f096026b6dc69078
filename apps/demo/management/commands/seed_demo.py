from django.core.management.base import BaseCommand

from apps.accounts.services import api_key_create
from apps.demo.services import DEMO_PASSWORD, DEMO_USER, demo_seed
from apps.metrics.services import fold_pending_now


class Command(BaseCommand):
    help = "Seed a demo team with a week of realistic sessions (idempotent) and print how to log in."

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, default=7)

    def handle(self, *args, **options):
        projects = demo_seed(days=options["days"])
        # Folded before the server starts (and whatever an earlier server left queued): the
        # dashboards open on complete figures.
        fold_pending_now()
        first = projects[0]
        ingest_key = api_key_create(project=first, scope="ingest", name="make-run").plaintext
        read_key = api_key_create(project=first, scope="read", name="make-run").plaintext
        self.stdout.write(
            "\nTokenSite demo is ready.\n"
            f"  Open      http://127.0.0.1:8000/  and log in as {DEMO_USER} / {DEMO_PASSWORD}\n"
            f"  Project   http://127.0.0.1:8000/{first.team.slug}/{first.slug}/\n"
            f"  Ingest key for {first}: {ingest_key}\n"
            f"  Read key for {first}:   {read_key}\n"
            "  Post a batch:\n"
            f"    curl -sS -X POST http://127.0.0.1:8000/api/v1/events -H 'Authorization: Bearer {ingest_key}' \\\n"
            "      -H 'Content-Type: application/json' -d @docs/example-batch.json\n"
        )
