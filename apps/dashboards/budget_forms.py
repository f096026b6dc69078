"""The budget form of the team's budgets page and a budget's page (create and edit).

The form turns the browser's text into the budgets services' arguments; the services
(apps.budgets.services) make every check that a command or an API caller needs too, and the
view shows their refusals on the form.
"""
from __future__ import annotations

from django import forms
from tokensite_client.events import MAX_MODEL_CHARS

from apps.accounts.models import Project, Team
from apps.budgets.models import Budget

TEAM_SCOPE = ""


class BudgetForm(forms.Form):
    project = forms.ChoiceField(label="Scope", required=False)
    user = forms.CharField(label="Developer", required=False, max_length=200, strip=True,
                           help_text="Only this developer's calls (the events' user); empty: everyone.")
    model = forms.CharField(label="Model", required=False, max_length=MAX_MODEL_CHARS, strip=True,
                            help_text="Only this model; empty: every model.")
    period = forms.ChoiceField(choices=Budget.Period.choices, initial=Budget.Period.MONTH)
    amount_usd = forms.DecimalField(label="Amount USD", required=False, min_value=0, max_digits=14, decimal_places=2)
    amount_tokens = forms.IntegerField(label="or amount in tokens", required=False, min_value=1)
    thresholds = forms.CharField(label="Alert at %", initial="50,80,100", max_length=200, strip=True)
    forecast_warning = forms.BooleanField(label="warn when the run rate projects past 100%", required=False,
                                          initial=True)
    hard = forms.BooleanField(label="hard: SDK guards refuse calls once it is spent", required=False)
    webhook_url = forms.CharField(label="Webhook URL (Slack, Teams, any HTTPS receiver)", required=False,
                                  max_length=2000, strip=True)
    email = forms.EmailField(label="Email", required=False, max_length=254)

    def __init__(self, *args, team: Team, **kwargs):
        super().__init__(*args, **kwargs)
        self.team = team
        self.projects = {project.slug: project for project in Project.objects.filter(team=team).order_by("name", "slug")}
        self.fields["project"].choices = [(TEAM_SCOPE, f"the whole team {team.name}")] + [
            (slug, f"project {project.name}") for slug, project in self.projects.items()
        ]

    @classmethod
    def for_budget(cls, budget: Budget, data=None) -> BudgetForm:
        """The edit form, filled with the budget's current values unless `data` was posted."""
        initial = {
            "project": budget.project.slug if budget.project_id else TEAM_SCOPE, "user": budget.user,
            "model": budget.model, "period": budget.period, "amount_usd": budget.amount_usd,
            "amount_tokens": budget.amount_tokens, "thresholds": ",".join(str(t) for t in budget.thresholds),
            "forecast_warning": budget.forecast_warning, "hard": budget.hard, "webhook_url": budget.webhook_url,
            "email": budget.email,
        }  # fmt: skip
        return cls(data, team=budget.team, initial=initial)

    def clean_thresholds(self) -> list[int]:
        text = self.cleaned_data["thresholds"]
        try:
            return [int(part) for part in text.replace("%", "").replace(" ", "").split(",") if part]
        except ValueError:
            raise forms.ValidationError("Whole percents separated by commas, such as 50,80,100.") from None

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("amount_usd") is not None and cleaned.get("amount_tokens") is not None:
            self.add_error("amount_tokens", "Give one amount: in USD, or in tokens for models nobody prices.")
        elif cleaned.get("amount_usd") is None and cleaned.get("amount_tokens") is None and not self.has_error("amount_usd"):
            self.add_error("amount_usd", "Give an amount in USD, or in tokens for models nobody prices.")
        return cleaned

    def service_arguments(self) -> dict:
        """The budgets services' keyword arguments for the cleaned form."""
        data = self.cleaned_data
        return {
            "project": self.projects.get(data["project"]), "user": data["user"], "model": data["model"],
            "period": data["period"], "amount_usd": data["amount_usd"], "amount_tokens": data["amount_tokens"],
            "thresholds": data["thresholds"], "forecast_warning": data["forecast_warning"], "hard": data["hard"],
            "webhook_url": data["webhook_url"], "email": data["email"],
        }  # fmt: skip
