from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("accounts", "0003_reserved_project_slugs"),
    ]

    operations = [
        migrations.AddField(
            model_name="project",
            name="raw_events_retention_days",
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
    ]
