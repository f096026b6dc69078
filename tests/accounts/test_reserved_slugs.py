"""Project slugs that name team pages (people, budgets, digest) are refused for new projects, by the
service, the command and the model's validation, and the migration renames existing ones."""
from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from apps.accounts.models import Project, Team
from apps.accounts.services import project_get_or_create, team_get_or_create
from apps.core.errors import BadRequest, ErrorCode

BEFORE = [("accounts", "0002_invitation")]
AFTER = [("accounts", "0003_reserved_project_slugs")]


@pytest.mark.django_db
@pytest.mark.parametrize("slug", ["people", "budgets", "digest", "People"])
def test_the_service_refuses_a_reserved_project_slug(team, slug):
    with pytest.raises(BadRequest) as raised:
        project_get_or_create(team=team, slug=slug)
    assert raised.value.code == ErrorCode.RESERVED_SLUG and "reserved" in raised.value.message
    assert not Project.objects.exists()
    assert project_get_or_create(team=team, slug="people-1").slug == "people-1"  # near names stay free


@pytest.mark.django_db
def test_the_command_refuses_a_reserved_project_slug():
    with pytest.raises(CommandError, match="reserved"):
        call_command("create_api_key", "--team", "acme", "--project", "budgets", stdout=StringIO())
    assert not Project.objects.exists()


@pytest.mark.django_db
def test_model_validation_refuses_a_reserved_slug_for_forms_and_the_admin(team):
    with pytest.raises(ValidationError) as raised:
        Project(team=team, slug="people", name="People").full_clean()
    assert "slug" in raised.value.message_dict
    Project(team=team, slug="peoples", name="Peoples").full_clean()


@pytest.mark.django_db(transaction=True)
def test_the_migration_renames_existing_reserved_projects_to_free_slugs():
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    try:
        old_apps = executor.loader.project_state(BEFORE).apps
        old_project, old_team = old_apps.get_model("accounts", "Project"), old_apps.get_model("accounts", "Team")
        acme, globex = old_team.objects.create(slug="acme", name="Acme"), old_team.objects.create(slug="globex", name="G")
        people = old_project.objects.create(team=acme, slug="people", name="People")
        old_project.objects.create(team=acme, slug="people-1", name="Taken already")
        budgets = old_project.objects.create(team=acme, slug="budgets", name="Budgets")
        other = old_project.objects.create(team=globex, slug="people", name="Other team's")
        kept = old_project.objects.create(team=acme, slug="chatbot", name="Chatbot")
        executor = MigrationExecutor(connection)
        executor.migrate(AFTER)
        # The model as of that migration: later migrations may add columns not there yet.
        migrated_project = executor.loader.project_state(AFTER).apps.get_model("accounts", "Project")
        slugs = dict(migrated_project.objects.values_list("pk", "slug"))
        assert (slugs[people.pk], slugs[budgets.pk], slugs[other.pk], slugs[kept.pk]) == (
            "people-2", "budgets-1", "people-1", "chatbot")
        assert migrated_project.objects.get(pk=people.pk).name == "People"  # only the slug changes
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())
        Project.objects.all().delete()
        Team.objects.all().delete()


@pytest.mark.django_db
def test_a_team_page_is_never_taken_for_a_project(client, team):
    from apps.accounts.services import member_add

    user = member_add(team=team, username="ada", password="pw-reserved-123", role="member").user
    project_get_or_create(team=team, slug="chatbot")
    client.force_login(user)
    response = client.get("/acme/people/")
    assert response.status_code == 200 and response.templates[0].name == "dashboards/people.html"
    assert team_get_or_create(slug="acme") == team
