"""Aggregate rows updated in place: the session cost index goes, and PostgreSQL fills aggregate
pages to 70% so that a row's next version fits on its page (a HOT update, no index entries).
The session table's index of the project alone goes too (see SessionAggregate.project).

Measured on the live-traffic fold (benchmarks/aggregate.py): with full pages 17% of step-row
updates were HOT and the dead versions piled up until autovacuum came; with 60% pages, 86%.
Only new pages are filled to the new mark; existing ones as they are rewritten.
"""
import django.db.models.deletion
from django.db import migrations, models

AGGREGATE_TABLES = ("metrics_sessionaggregate", "metrics_sessionstepaggregate", "metrics_sessionmodelaggregate",
                    "metrics_usagebucket")  # fmt: skip
AGGREGATE_FILLFACTOR = 70


def _fillfactor(value: int):
    def apply(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return  # SQLite has no fillfactor
        for table in AGGREGATE_TABLES:
            schema_editor.execute(f"ALTER TABLE {schema_editor.quote_name(table)} SET (fillfactor = {value})")

    return apply


class Migration(migrations.Migration):

    dependencies = [
        ("accounts", "0004_project_raw_events_retention_days"),
        ("metrics", "0005_sessionaggregate_recent_calls"),
    ]

    operations = [
        migrations.RemoveIndex(model_name="sessionaggregate", name="sessionagg_project_cost"),
        migrations.AlterField(
            model_name="sessionaggregate",
            name="project",
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE,
                                    related_name="sessions", to="accounts.project"),
        ),
        migrations.RunPython(_fillfactor(AGGREGATE_FILLFACTOR), _fillfactor(100)),
    ]
