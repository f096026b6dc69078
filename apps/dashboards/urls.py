"""Dashboard URLs. The paths are contracts (issue 6): links and scripts depend on them.

Session ids may hold "/" and any printable character, hence `<path:session_id>`; the two
download suffixes come before the page so that `.../metadata.json` is never read as a session
id (a session really named "x/metadata.json" still has its page at `.../x/metadata.json/`).
"""
from django.contrib.auth import views as auth_views
from django.urls import path

from apps.dashboards import budget_views, views

PROJECT = "<slug:team_slug>/<slug:project_slug>/"
# Team pages sit where a project's page would: their names are reserved project slugs
# (apps.accounts.models.RESERVED_PROJECT_SLUGS), so no project can hide behind them.
TEAM = "<slug:team_slug>/"

urlpatterns = [
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", views.TeamOverviewView.as_view(), name="team-overview"),
    path("invitations/", views.InvitationsView.as_view(), name="invitations"),
    path("settings/", views.UserSettingsView.as_view(), name="user-settings"),
    path(TEAM + "people/", views.TeamPeopleView.as_view(), name="team-people"),
    path(TEAM + "people/sessions/", views.DeveloperSessionsView.as_view(), name="developer-sessions"),
    path(TEAM + "digest/", views.TeamDigestView.as_view(), name="team-digest"),
    # Before the project pages: "budgets" is a reserved project slug (issue 16).
    path("<slug:team_slug>/budgets/", budget_views.TeamBudgetsView.as_view(), name="team-budgets"),
    path("<slug:team_slug>/budgets/alerts/", budget_views.BudgetAlertsView.as_view(), name="team-budget-alerts"),
    path("<slug:team_slug>/budgets/<int:budget_id>/", budget_views.BudgetView.as_view(), name="team-budget"),
    path(PROJECT, views.ProjectDashboardView.as_view(), name="project"),
    path(PROJECT + "live.json", views.ProjectLiveView.as_view(), name="project-live"),
    path(PROJECT + "settings/", views.ProjectSettingsView.as_view(), name="project-settings"),
    path(PROJECT + "sessions/<path:session_id>/metadata.json", views.SessionMetadataView.as_view(), name="session-metadata"),
    path(PROJECT + "sessions/<path:session_id>/calls.csv", views.SessionCallsCsvView.as_view(), name="session-calls"),
    path(PROJECT + "sessions/<path:session_id>/", views.SessionView.as_view(), name="session"),
]
