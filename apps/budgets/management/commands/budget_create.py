from django.core.management.base import BaseCommand, CommandError

from apps.accounts.models import Project, Team
from apps.budgets.models import Budget
from apps.budgets.services import budget_create
from apps.core.errors import ApplicationError


def _thresholds(value: str) -> list[int]:
    parts = [part.strip() for part in value.split(",") if part.strip()]
    if not parts or not all(part.isdigit() for part in parts):
        raise CommandError(f"--thresholds takes whole percents separated by commas, such as 50,80,100; not {value!r}.")
    return [int(part) for part in parts]


class Command(BaseCommand):
    help = (
        "Create a budget of a team (or of one of its projects), optionally narrowed to one developer (--user) "
        "or model. Prints the budget's id on the last line."
    )

    def add_arguments(self, parser):
        parser.add_argument("--team", required=True, help="team slug")
        parser.add_argument("--project", help="project slug; omitted: the whole team")
        parser.add_argument("--user", default="", help="the events' `user`; omitted: everyone")
        parser.add_argument("--model", default="", help="omitted: every model")
        parser.add_argument("--period", required=True, choices=Budget.Period.values)
        amount = parser.add_mutually_exclusive_group(required=True)
        amount.add_argument("--amount-usd", help="amount in USD, such as 100 or 99.50")
        amount.add_argument("--amount-tokens", type=int, help="amount in tokens (input + output)")
        parser.add_argument("--thresholds", default="50,80,100", help="alert percents (default 50,80,100)")
        parser.add_argument("--no-forecast", action="store_true", help="no alert when the run rate projects past 100%%")
        parser.add_argument("--webhook", default="", help="http(s) URL to post alerts to (Slack, Teams or any)")
        parser.add_argument("--email", default="", help="address to mail alerts to")
        parser.add_argument("--hard", action="store_true", help="SDK clients with budget_guard stop once it is spent")

    def handle(self, *args, **options):
        team = Team.objects.filter(slug=options["team"]).first()
        if team is None:
            raise CommandError(f"No team {options['team']!r}.")
        project = None
        if options["project"]:
            project = Project.objects.filter(team=team, slug=options["project"]).first()
            if project is None:
                raise CommandError(f"No project {options['project']!r} in team {team.slug!r}.")
        try:
            budget = budget_create(
                team=team, project=project, user=options["user"], model=options["model"], period=options["period"],
                amount_usd=options["amount_usd"], amount_tokens=options["amount_tokens"],
                thresholds=_thresholds(options["thresholds"]), forecast_warning=not options["no_forecast"],
                hard=options["hard"], webhook_url=options["webhook"], email=options["email"],
            )  # fmt: skip
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        scope = f"project {team.slug}/{project.slug}" if project else f"team {team.slug}"
        amount = f"${budget.amount_usd}" if budget.amount_usd is not None else f"{budget.amount_tokens:,} tokens"
        self.stdout.write(f"Budget of {scope}: {amount} per {budget.period}, alerts at {budget.thresholds} %.")
        if budget.webhook_url:
            self.stdout.write(f"Webhook secret (verify X-TokenSite-Signature with it): {budget.webhook_secret}")
        self.stdout.write(str(budget.pk))
