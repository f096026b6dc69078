from django.core.management.base import BaseCommand, CommandError

from apps.accounts.services import api_key_revoke
from apps.core.errors import ApplicationError


class Command(BaseCommand):
    help = "Revoke the API key with this public prefix."

    def add_arguments(self, parser):
        parser.add_argument("prefix")

    def handle(self, *args, **options):
        try:
            api_key = api_key_revoke(prefix=options["prefix"])
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"Revoked key {api_key.prefix} of {api_key.project}.")
