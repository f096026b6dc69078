from django.core.management.base import BaseCommand

from apps.metrics.claimed_events import CLAIM_COLUMNS, ClaimedEvents, compile_decoders
from apps.metrics.claimed_sums import claimed_sums
from apps.metrics.peaks_kernel import PeakGroup, groups_peaks


class Command(BaseCommand):
    help = "Compile the fold's numba kernels into their on-disk cache (make install runs this once)."

    def handle(self, *args, **options):
        # Compiling takes seconds, loading the cache a fraction of one: a worker's first fold
        # should not pay for it. One usage event crossing a minute reaches every kernel.
        row = dict.fromkeys(CLAIM_COLUMNS, 0)
        row.update(id=1, session_id="s", type="usage", step="", provider="p", model="m", call_id="", timestamp=0,
                   end_at=90_000_000, attributes="{}", duration_ms=90_000.0, time_to_first_token_ms=None,
                   token_source="client", wait_ms=0.0, cost_nanousd=None, price_source="")  # fmt: skip
        batches, _ = claimed_sums(ClaimedEvents.from_rows([tuple(row[name] for name in CLAIM_COLUMNS)]))
        groups_peaks([PeakGroup(batches["s"].calls)])
        compile_decoders()
        self.stdout.write("Fold kernels compiled and cached.")
