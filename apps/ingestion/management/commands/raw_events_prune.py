from django.core.management.base import BaseCommand

from apps.ingestion.retention import PRUNE_BATCH, raw_events_prune


class Command(BaseCommand):
    help = ("Delete folded raw events older than their project's retention period (projects without one keep "
            "everything): whole monthly partitions on PostgreSQL where every project's period allows it, short "
            "batches elsewhere; aggregates are kept. The daily beat job runs the same.")  # fmt: skip

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=PRUNE_BATCH, help="events per transaction")

    def handle(self, *args, **options):
        deleted = raw_events_prune(batch_size=max(1, options["batch_size"]))
        self.stdout.write(f"Deleted {deleted} raw events past their project's retention.")
