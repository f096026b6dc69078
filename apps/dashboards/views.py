"""Server-rendered pages. Every page under /<team>/ reaches team data through TeamScopedMixin.

The mixin resolves the caller's membership of the team in the URL (and the project, for
project pages) in `dispatch`, before any handler runs: a handler only ever sees
`self.membership` and `self.project`, so it cannot query another team's data. Anyone who is not
a member gets the same 404 as for a team that does not exist; `NotFound` raised anywhere in a
handler (an unknown session) becomes that 404 too.
"""
from __future__ import annotations

import csv
from datetime import timedelta
from urllib.parse import quote

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.mixins import AccessMixin, LoginRequiredMixin
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseRedirect, JsonResponse, StreamingHttpResponse
from django.urls import reverse
from django.utils import timezone
from django.views import View
from django.views.generic import TemplateView

from apps.accounts.models import Membership, Project
from apps.accounts.forms import LoginForm
from apps.accounts.selectors import (
    invitation_get_open_for_team,
    invitations_open_for_team,
    invitations_open_for_user,
    membership_get,
    project_get_for_member,
    teams_for_user,
)
from apps.accounts.services import (
    api_key_create,
    api_key_revoke,
    invitation_accept,
    invitation_decline,
    project_retention_set,
)
from apps.budgets.selectors import budget_statuses
from apps.core.errors import ApplicationError, Forbidden, NotFound
from apps.dashboards import forms, selectors
from apps.dashboards.services import team_invitation_revoke, team_member_invite, team_member_role_change
from apps.limits.selectors import limits_table
from apps.digests.models import Frequency
from apps.digests.selectors import (
    digest_period_last_complete,
    digest_period_starting,
    digest_subscription_for,
    team_digest,
)
from apps.digests.services import digest_subscription_set
from apps.metrics.selectors import session_metadata
from apps.metrics.services import events_reprice, unpriced_events_reprice
from apps.pricing.context_windows import context_window_override_delete, context_window_override_set
from apps.pricing.services import price_override_create


class TeamScopedMixin(AccessMixin):
    """Resolves `self.membership` for the team in the URL; a visitor who is not a member gets 404."""

    membership: Membership

    def dispatch(self, request, *args, **kwargs):
        if not request.user.is_authenticated:
            return self.handle_no_permission()  # to /login/, for existing and unknown teams alike
        try:
            self.membership = membership_get(user=request.user, team_slug=kwargs["team_slug"])
            self.resolve_scope(**kwargs)
            return super().dispatch(request, *args, **kwargs)
        except NotFound as error:
            raise Http404(error.message) from error
        except Forbidden as error:
            raise PermissionDenied(error.message) from error

    def resolve_scope(self, **kwargs) -> None:
        """Resolve further objects of the URL inside the membership's team (raise NotFound)."""

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context.update(membership=self.membership, team=self.membership.team)
        return context


class ProjectScopedMixin(TeamScopedMixin):
    """Also resolves `self.project`, looked up inside the membership's team only."""

    project: Project

    def resolve_scope(self, **kwargs) -> None:
        self.project = project_get_for_member(membership=self.membership, project_slug=kwargs["project_slug"])

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["project"] = self.project
        return context


def _download_name(session_id: str, extension: str) -> str:
    safe = "".join(char if char.isalnum() or char in "-_." else "_" for char in session_id)[:120]
    return f"session-{safe or 'session'}.{extension}"


def _content_disposition(filename: str) -> str:
    return f"attachment; filename=\"{filename}\"; filename*=UTF-8''{quote(filename)}"


class LoginView(auth_views.LoginView):
    """`/login/`, throttled per username and per address; a blocked sign-in is a 429 with Retry-After."""

    template_name = "dashboards/login.html"
    authentication_form = LoginForm

    def form_invalid(self, form):
        response = super().form_invalid(form)
        if form.retry_after_s:
            response.status_code = 429
            response["Retry-After"] = str(form.retry_after_s)
        return response


class TeamOverviewView(LoginRequiredMixin, TemplateView):
    """`/`: the user's own teams only (teams_for_user), so it needs no team in the URL."""

    template_name = "dashboards/team_overview.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["teams"] = selectors.team_overview(user=self.request.user, now=timezone.now())
        context["budgets_by_team"] = {card.team.pk: budget_statuses(team=card.team) for card in context["teams"]}
        context["invitation_count"] = invitations_open_for_user(user=self.request.user).count()
        return context


class InvitationsView(LoginRequiredMixin, TemplateView):
    """`/invitations/`: the signed-in user's own pending invitations, to accept or decline.

    Lookups go through the user's username, so another user's invitation is a 404 like an
    unknown one.
    """

    template_name = "dashboards/invitations.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["invitations"] = list(invitations_open_for_user(user=self.request.user))
        return context

    def post(self, request, *args, **kwargs):
        form = forms.InvitationAnswerForm(request.POST)
        if not form.is_valid():
            messages.error(request, "The answer was not understood: " + " ".join(_form_errors(form)))
            return self.render_to_response(self.get_context_data(), status=400)
        invitation_id = form.cleaned_data["invitation"]
        try:
            if form.cleaned_data["decision"] == "accept":
                membership = invitation_accept(user=request.user, invitation_id=invitation_id)
                messages.success(request, f"You joined {membership.team.name} as {membership.role}.")
                return HttpResponseRedirect("/")
            invitation = invitation_decline(user=request.user, invitation_id=invitation_id)
        except NotFound as error:
            raise Http404(error.message) from error
        messages.success(request, f"You declined the invitation to {invitation.team.name}.")
        return HttpResponseRedirect(request.path)


RANGE_CHOICES = [("24h", "24 h"), ("7d", "7 days"), ("30d", "30 days")]


class ProjectDashboardView(ProjectScopedMixin, TemplateView):
    template_name = "dashboards/project.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        query = forms.ProjectQueryForm(self.request.GET)
        time_range = query.time_range(now=timezone.now())
        params = query.cleaned_data if query.is_valid() else {}
        context.update(
            query=query,
            time_range=time_range,
            range_choices=RANGE_CHOICES,
            custom_last_day=time_range.until - timedelta(days=1),
            base_url=self.request.build_absolute_uri("/"),
            search=params.get("q", ""),
            developer=params.get("developer", ""),
            source=params.get("source", ""),
            sort=params.get("sort") or "-started",
            sessions=selectors.sessions_page(
                project=self.project, time_range=time_range, search=params.get("q", ""),
                sort=params.get("sort") or "-started", page=params.get("page") or 1,
                developer=params.get("developer", ""), source=params.get("source", ""),
            ),  # fmt: skip
            live=selectors.live_rates(project=self.project, now=timezone.now()),
            project_budgets=budget_statuses(team=self.project.team, project=self.project),
            limits=limits_table(project=self.project, since=time_range.since, until=time_range.until),
            **selectors.project_dashboard(project=self.project, time_range=time_range),
        )
        return context


class TeamPeopleView(TeamScopedMixin, TemplateView):
    """`/<team>/people/`: per developer across the team's projects, in the range of the URL."""

    template_name = "dashboards/people.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        query = forms.PeopleQueryForm(self.request.GET)
        time_range = query.time_range(now=timezone.now())
        sort = (query.cleaned_data.get("sort") if query.is_valid() else "") or "-cost"
        context.update(
            query=query, time_range=time_range, range_choices=RANGE_CHOICES, sort=sort,
            custom_last_day=time_range.until - timedelta(days=1),
            people=selectors.team_people(team=self.membership.team, time_range=time_range, sort=sort),
        )  # fmt: skip
        return context


class DeveloperSessionsView(TeamScopedMixin, TemplateView):
    """`/<team>/people/sessions/?developer=...`: one developer's sessions across the team's projects."""

    template_name = "dashboards/developer_sessions.html"

    def get(self, request, *args, **kwargs):
        query = forms.DeveloperSessionsQueryForm(request.GET)
        if not query.is_valid() and "developer" in query.errors:
            # No developer (or an impossible one) to list: the People page lists them all.
            kept = request.GET.copy()
            kept.pop("developer", None)
            kept.pop("page", None)
            return HttpResponseRedirect(reverse("team-people", args=[self.membership.team.slug]) + "?" + kept.urlencode())
        return super().get(request, *args, query=query, **kwargs)

    def get_context_data(self, **kwargs):
        query = kwargs.pop("query")
        context = super().get_context_data(**kwargs)
        time_range = query.time_range(now=timezone.now())
        params = query.cleaned_data if query.is_valid() else {"developer": query.cleaned_data["developer"]}
        sort = params.get("sort") or "-started"
        context.update(
            query=query, time_range=time_range, range_choices=RANGE_CHOICES, sort=sort,
            custom_last_day=time_range.until - timedelta(days=1), developer=params["developer"],
            sessions=selectors.developer_sessions_page(
                team=self.membership.team, developer=params["developer"], time_range=time_range, sort=sort,
                page=params.get("page") or 1,
            ),
        )  # fmt: skip
        return context


class TeamDigestView(TeamScopedMixin, TemplateView):
    """`/<team>/digest/`: the digest mail's content as a page, for the period in the URL."""

    template_name = "dashboards/digest.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        query = forms.DigestQueryForm(self.request.GET)
        params = query.cleaned_data if query.is_valid() else {}
        chosen = digest_subscription_for(user=self.request.user).frequency
        frequency = params.get("period") or (chosen if chosen != Frequency.OFF else Frequency.DAILY)
        if params.get("start"):
            period = digest_period_starting(frequency=frequency, day=params["start"])
        else:
            period = digest_period_last_complete(frequency=frequency, now=timezone.now())
        context.update(query=query, **team_digest(team=self.membership.team, period=period))
        # Links to the neighbouring periods; a later one only once it is complete.
        context["earlier"] = period.previous_start.date().isoformat()
        next_end = period.end + (period.end - period.start)
        context["later"] = period.end.date().isoformat() if next_end <= timezone.now() else None
        return context


class UserSettingsView(LoginRequiredMixin, TemplateView):
    """`/settings/`: the signed-in user's own settings (the digest), nobody else's."""

    template_name = "dashboards/user_settings.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        subscription = digest_subscription_for(user=self.request.user)
        context.setdefault("form", forms.DigestSubscriptionForm(
            initial={"frequency": subscription.frequency, "email": subscription.email}))  # fmt: skip
        context["account_email"] = self.request.user.email
        context["teams"] = list(teams_for_user(user=self.request.user))
        return context

    def post(self, request, *args, **kwargs):
        form = forms.DigestSubscriptionForm(request.POST)
        if form.is_valid():
            try:
                subscription = digest_subscription_set(user=request.user, **form.cleaned_data)
            except ApplicationError as error:
                form.add_error(None, error.message)
            else:
                if subscription.frequency == Frequency.OFF:
                    messages.success(request, "You get no digest.")
                else:
                    address = subscription.email or request.user.email
                    messages.success(request, f"Your {subscription.frequency} digest goes to {address}.")
                return HttpResponseRedirect(request.path)
        messages.error(request, "The change was not saved: " + " ".join(_form_errors(form)))
        return self.render_to_response(self.get_context_data(form=form), status=400)


class ProjectLiveView(ProjectScopedMixin, View):
    """`live.json`: rolling rates for the page's script to refresh without a reload."""

    def get(self, request, *args, **kwargs):
        response = JsonResponse(selectors.live_rates(project=self.project, now=timezone.now()))
        response["Cache-Control"] = "no-store"
        return response


class SessionView(ProjectScopedMixin, TemplateView):
    template_name = "dashboards/session.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context.update(selectors.session_page(project=self.project, session_id=kwargs["session_id"]))
        return context


class SessionMetadataView(ProjectScopedMixin, View):
    """`metadata.json`: the DESIGN.md section 7 document, the same one the session page shows."""

    def get(self, request, *args, **kwargs):
        document = session_metadata(project=self.project, session_id=kwargs["session_id"])
        response = JsonResponse(document, json_dumps_params={"indent": 2})
        response["Content-Disposition"] = _content_disposition(_download_name(kwargs["session_id"], "json"))
        return response


class _Echo:
    def write(self, value: str) -> str:
        return value


class SessionCallsCsvView(ProjectScopedMixin, View):
    """`calls.csv`: one row per call and per throttle wait of the session, streamed."""

    def get(self, request, *args, **kwargs):
        session_id = kwargs["session_id"]
        if not selectors.session_exists(project=self.project, session_id=session_id):
            raise NotFound("Session not found.")
        # OWASP: every cell quoted, quotes inside doubled; text cells are defused by the selector.
        writer = csv.writer(_Echo(), quoting=csv.QUOTE_ALL)
        rows = selectors.session_csv_rows(project=self.project, session_id=session_id)
        response = StreamingHttpResponse((writer.writerow(row) for row in rows), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = _content_disposition(_download_name(session_id, "csv"))
        return response


class ProjectSettingsView(ProjectScopedMixin, TemplateView):
    """Keys, price overrides, price books and members: everyone in the team reads, owners and admins change."""

    template_name = "dashboards/settings.html"
    actions = {
        "key_create": forms.ApiKeyCreateForm,
        "key_revoke": forms.ApiKeyRevokeForm,
        "price_override": forms.PriceOverrideForm,
        "retention": forms.RetentionForm,
        "reprice_unpriced": forms.RepriceUnpricedForm,
        "context_window": forms.ContextWindowOverrideForm,
        "member_add": forms.MemberAddForm,
        "member_role": forms.MemberRoleForm,
        "invitation_revoke": forms.InvitationRevokeForm,
    }

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context.update(selectors.project_settings(project=self.project))
        context.setdefault("key_form", forms.ApiKeyCreateForm())
        context.setdefault("price_form", forms.PriceOverrideForm(initial={"effective_from": timezone.now()}))
        context.setdefault("member_form", forms.MemberAddForm())
        context.setdefault(
            "retention_form", forms.RetentionForm(initial={"raw_events_retention_days": self.project.raw_events_retention_days})
        )
        context.setdefault("context_window_form", forms.ContextWindowOverrideForm())
        context["context_window_overrides"] = selectors.context_window_overrides(project=self.project)
        context["can_manage"] = self.membership.can_manage
        context["invitations"] = list(invitations_open_for_team(team=self.membership.team))
        return context

    def post(self, request, *args, **kwargs):
        if not self.membership.can_manage:
            raise PermissionDenied("Only owners and admins can change project settings.")
        action = request.POST.get("action", "")
        form_class = self.actions.get(action)
        if form_class is None:
            messages.error(request, "Unknown action.")
            return HttpResponseRedirect(request.path)
        form = form_class(request.POST)
        if form.is_valid():
            try:
                response = getattr(self, f"_{action}")(form.cleaned_data)
            except Forbidden:
                raise
            except ApplicationError as error:
                form.add_error(None, error.message)
            else:
                return response or HttpResponseRedirect(request.path)
        context_name = {"key_create": "key_form", "price_override": "price_form", "member_add": "member_form",
                        "retention": "retention_form", "context_window": "context_window_form"}  # fmt: skip
        messages.error(request, "The change was not saved: " + " ".join(_form_errors(form)))
        return self.render_to_response(self.get_context_data(**{context_name.get(action, "failed_form"): form}), status=400)

    def _key_create(self, data):
        issued = api_key_create(project=self.project, scope=data["scope"], name=data["name"])
        # Rendered, not redirected: the plaintext exists only in this response and is never stored.
        response = self.render_to_response(self.get_context_data(issued_key=issued))
        response["Cache-Control"] = "no-store"
        return response

    def _key_revoke(self, data):
        api_key = api_key_revoke(prefix=data["prefix"], project=self.project)
        messages.success(self.request, f"Key {api_key.prefix} is revoked.")

    def _price_override(self, data):
        reprice = data.pop("reprice")
        override = price_override_create(project=self.project, created_by=self.request.user, **data)
        text = f"Price for {override.model} from {override.effective_from:%Y-%m-%d %H:%M} UTC saved."
        if reprice:
            changed = events_reprice(project=self.project, since=override.effective_from)
            text += f" {changed:,} stored events were re-priced."
        messages.success(self.request, text)

    def _retention(self, data):
        days = data["raw_events_retention_days"]
        project_retention_set(project=self.project, days=days)
        messages.success(self.request, "Every raw event is kept." if days is None else
                         f"Raw events older than {days} days will be deleted once folded; aggregates are kept.")  # fmt: skip
    def _reprice_unpriced(self, data):
        changed = unpriced_events_reprice(projects=[self.project])[self.project]
        messages.success(self.request, f"{changed:,} unpriced events were priced; priced events kept their prices.")

    def _context_window(self, data):
        model = data["model"].strip()
        if data["remove"]:
            removed = context_window_override_delete(project=self.project, model=model)
            text = f"{model} uses litellm's context window again." if removed else f"{model} had no override."
        else:
            override = context_window_override_set(
                project=self.project, model=model, max_input_tokens=data["max_input_tokens"], updated_by=self.request.user
            )
            text = f"Calls of {model} stored from now on are measured against {override.max_input_tokens:,} input tokens."
        messages.success(self.request, text)

    def _member_add(self, data):
        invitation = team_member_invite(actor=self.membership, team=self.membership.team, **data)
        # The same words whether or not the name belonged to anyone (README "Accounts, invitations and sign-in").
        text = f"{invitation.username} is invited as {invitation.role} and joins after accepting the invitation."
        if data["password"]:
            text += f" If no account was named {invitation.username}, one was created with the password you gave."
        messages.success(self.request, text)

    def _invitation_revoke(self, data):
        try:
            invitation = invitation_get_open_for_team(team=self.membership.team, invitation_id=data["invitation"])
        except NotFound as error:
            raise Http404(error.message) from error
        invitation = team_invitation_revoke(actor=self.membership, invitation=invitation)
        messages.success(self.request, f"The invitation of {invitation.username} is withdrawn.")

    def _member_role(self, data):
        target = selectors.team_membership_get(team=self.membership.team, membership_id=data["membership"])
        membership = team_member_role_change(actor=self.membership, membership=target, role=data["role"])
        messages.success(self.request, f"{membership.user.username} is now {membership.role}.")


def _form_errors(form) -> list[str]:
    return [f"{'' if name == '__all__' else name + ': '}{error}" for name, errors in form.errors.items() for error in errors]
