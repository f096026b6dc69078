from django.core.management.base import BaseCommand

from apps.metrics.peaks_kernel import PeakGroup, groups_peaks


class Command(BaseCommand):
    help = "Compile the fold's numba kernel into its on-disk cache (make install runs this once)."

    def handle(self, *args, **options):
        # Compiling takes seconds, loading the cache a fraction of one: a worker's first fold
        # should not pay for it.
        groups_peaks([PeakGroup([(0, 10_000_000, 90_000_000, 100, 100)])])
        self.stdout.write("Fold kernel compiled and cached.")
