from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from apps.accounts.models import Membership
from apps.accounts.services import member_add, team_get_or_create
from apps.core.errors import ApplicationError


class Command(BaseCommand):
    help = (
        "Add a user to a team (creating both if missing) with a role, without an invitation: the operator's path. "
        "The password must pass AUTH_PASSWORD_VALIDATORS."
    )

    def add_arguments(self, parser):
        parser.add_argument("--team", required=True)
        parser.add_argument("--username", required=True)
        parser.add_argument("--password", required=True)
        parser.add_argument("--role", choices=Membership.Role.values, default=Membership.Role.MEMBER)

    def handle(self, *args, **options):
        try:
            # One transaction: a rejected password leaves no new team behind.
            with transaction.atomic():
                team = team_get_or_create(slug=options["team"])
                membership = member_add(
                    team=team, username=options["username"], password=options["password"], role=options["role"]
                )
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"{membership.user.username} is {membership.role} of team {team.slug}.")
