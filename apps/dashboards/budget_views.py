"""The budget pages of a team: `/<team>/budgets/` (every budget with its status; owners and admins
create), `/<team>/budgets/<id>/` (one budget: status, forecast, unpriced tokens, its alerts; owners
and admins edit or delete) and `/<team>/budgets/alerts/` (the team's alerts history).

Every member reads; a write by a member or viewer is a 403; a budget of another team is a 404 like
an unknown one, because budgets are looked up inside the membership's team only.
"""
from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from django.views.generic import TemplateView

from apps.budgets.selectors import budget_alert_history, budget_alerts, budget_get, budget_status, budget_statuses
from apps.budgets.services import budget_create, budget_delete, budget_update
from apps.budgets.webhooks import WebhookTargetRefused
from apps.core.errors import ApplicationError
from apps.dashboards.budget_forms import BudgetForm
from apps.dashboards.views import TeamScopedMixin, _form_errors

ALERTS_SHOWN = 200


def _save(form: BudgetForm, write) -> object | None:
    """Run a budgets service on a valid form; its refusal becomes an error on the form (None)."""
    try:
        return write(**form.service_arguments())
    except WebhookTargetRefused as error:
        form.add_error("webhook_url", error.message)
    except ApplicationError as error:
        form.add_error(None, error.message)
    return None


class _ManagersWrite:
    def require_manager(self) -> None:
        if not self.membership.can_manage:
            raise PermissionDenied("Only owners and admins of the team change its budgets.")


class TeamBudgetsView(_ManagersWrite, TeamScopedMixin, TemplateView):
    """`/<team>/budgets/`: the budgets and their status this period; the create form for managers."""

    template_name = "dashboards/budgets.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        team = self.membership.team
        context["budgets"] = budget_statuses(team=team, now=timezone.now())
        context["can_manage"] = self.membership.can_manage
        context.setdefault("form", BudgetForm(team=team))
        return context

    def post(self, request, *args, **kwargs):
        self.require_manager()
        form = BudgetForm(request.POST, team=self.membership.team)
        if form.is_valid():
            budget = _save(form, lambda **fields: budget_create(team=self.membership.team, created_by=request.user,
                                                                **fields))
            if budget is not None:
                messages.success(request, f"Budget {budget.pk} is saved.")
                return HttpResponseRedirect(reverse("team-budget", args=[self.membership.team.slug, budget.pk]))
        messages.error(request, "The budget was not saved: " + " ".join(_form_errors(form)))
        return self.render_to_response(self.get_context_data(form=form), status=400)


class BudgetView(_ManagersWrite, TeamScopedMixin, TemplateView):
    """`/<team>/budgets/<id>/`: one budget's status, forecast, unpriced tokens and alerts."""

    template_name = "dashboards/budget.html"

    def resolve_scope(self, **kwargs) -> None:
        self.budget = budget_get(team=self.membership.team, budget_id=kwargs["budget_id"])

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["status"] = budget_status(budget=self.budget, now=timezone.now())
        context["alerts"] = budget_alert_history(budget=self.budget, limit=ALERTS_SHOWN)
        context["can_manage"] = self.membership.can_manage
        context.setdefault("form", BudgetForm.for_budget(self.budget))
        return context

    def post(self, request, *args, **kwargs):
        self.require_manager()
        team = self.membership.team
        if request.POST.get("action") == "delete":
            budget_delete(budget=self.budget)
            messages.success(request, f"Budget {kwargs['budget_id']} is deleted, with its alerts.")
            return HttpResponseRedirect(reverse("team-budgets", args=[team.slug]))
        form = BudgetForm.for_budget(self.budget, data=request.POST)
        if form.is_valid() and _save(form, lambda **fields: budget_update(budget=self.budget, **fields)) is not None:
            messages.success(request, f"Budget {self.budget.pk} is saved.")
            return HttpResponseRedirect(request.path)
        messages.error(request, "The budget was not saved: " + " ".join(_form_errors(form)))
        return self.render_to_response(self.get_context_data(form=form), status=400)


class BudgetAlertsView(TeamScopedMixin, TemplateView):
    """`/<team>/budgets/alerts/`: every alert of the team's budgets, newest first, with deliveries."""

    template_name = "dashboards/budget_alerts.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["alerts"] = budget_alerts(team=self.membership.team, limit=ALERTS_SHOWN)
        context["alerts_shown"] = ALERTS_SHOWN
        return context
