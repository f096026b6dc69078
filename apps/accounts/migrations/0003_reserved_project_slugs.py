"""Project slugs that name team pages (people, budgets, digest) become reserved: the field refuses
them, and existing projects holding one are renamed to the first free `<slug>-<n>` of their team."""
from django.db import migrations, models

import apps.accounts.models

# Spelled out, not imported: the migration must keep renaming exactly these whatever the list becomes.
RESERVED = ("people", "budgets", "digest")


def rename_reserved_projects(apps, schema_editor):
    Project = apps.get_model("accounts", "Project")
    for project in Project.objects.filter(slug__in=RESERVED).order_by("id"):
        taken = set(Project.objects.filter(team_id=project.team_id).values_list("slug", flat=True))
        number = 1
        while f"{project.slug}-{number}" in taken:
            number += 1
        project.slug = f"{project.slug}-{number}"
        project.save(update_fields=["slug"])


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_invitation"),
    ]

    operations = [
        migrations.RunPython(rename_reserved_projects, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="project",
            name="slug",
            field=models.SlugField(
                max_length=64,
                validators=[apps.accounts.models.validate_project_slug_not_reserved],
            ),
        ),
    ]
