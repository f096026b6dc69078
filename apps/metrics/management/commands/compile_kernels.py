from django.core.management.base import BaseCommand

from apps.metrics.claimed_sums import kernels_compile


class Command(BaseCommand):
    help = "Compile the fold's numba kernels into their on-disk cache (make install runs this once)."

    def handle(self, *args, **options):
        kernels_compile()
        self.stdout.write("Fold kernels compiled and cached.")
