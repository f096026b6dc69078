from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from apps.accounts.models import Project
from apps.core.errors import ApplicationError
from apps.metrics.selectors import unpriced_calls_by_model
from apps.metrics.services import unpriced_events_reprice
from apps.pricing.selectors import unpriced_models_now_priced
from apps.pricing.services import price_book_import

MAX_FILE_BYTES = 64 * 1024 * 1024  # litellm's file is about 3 MB
SHOWN_MODELS = 10


class Command(BaseCommand):
    help = (
        "Import a price file in litellm's model_prices_and_context_window.json format as the newest price book; "
        "it prices the models it lists from now on (project overrides still win)."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", help="path of the price file")
        parser.add_argument(
            "--reprice-unpriced", action="store_true",
            help="then price every project's unpriced events with the books now in force "
                 "(priced events keep their prices)",
        )  # fmt: skip

    def handle(self, *args, **options):
        path = Path(options["file"])
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                raise CommandError(f"{path} is over {MAX_FILE_BYTES // 2**20} MiB: not a price file.")
            data = path.read_bytes()
        except OSError as error:
            raise CommandError(f"Cannot read {path}: {error.strerror or error}.") from None
        try:
            imported = price_book_import(data=data, file_name=path.name)
        except ApplicationError as error:
            raise CommandError(f"{path}: {error.message}") from None
        book = imported.book
        if not imported.created:
            self.stdout.write(f"{path.name} is already the newest price book, {book.version}: nothing imported.")
        else:
            self.stdout.write(f"Imported {path.name} as price book {book.version}: {book.model_count:,} models priced.")
            for label, keys in (("newly priced", book.newly_priced), ("prices changed", book.price_changed),
                                ("not in this file, still priced by the earlier books", book.not_listed)):  # fmt: skip
                self.stdout.write(f"  {label}: {len(keys):,}{_listed(keys)}")
        projects = list(Project.objects.select_related("team").order_by("team__slug", "slug"))
        if options["reprice_unpriced"]:
            for project, changed in unpriced_events_reprice(projects=projects).items():
                if changed:
                    self.stdout.write(f"Priced {changed:,} unpriced events of {project.team.slug}/{project.slug}.")
            return
        offers = [
            (project, unpriced_models_now_priced(project=project,
                                                 unpriced_calls=unpriced_calls_by_model(project_id=project.pk)))
            for project in projects
        ]  # fmt: skip
        offers = [(project, models) for project, models in offers if models]
        if offers:
            self.stdout.write("Unpriced events these prices can price now:")
            for project, models in offers:
                described = ", ".join(f"{row.model} ({row.calls:,} calls)" for row in models[:SHOWN_MODELS])
                self.stdout.write(f"  {project.team.slug}/{project.slug}: {described}")
            self.stdout.write(
                "Price them with: manage.py prices_import FILE --reprice-unpriced (the same file adds no book), "
                "or the button on a project's settings page."
            )


def _listed(keys: list[str]) -> str:
    if not keys:
        return ""
    more = len(keys) - SHOWN_MODELS
    return " (" + ", ".join(keys[:SHOWN_MODELS]) + (f", and {more:,} more" if more > 0 else "") + ")"
