"""A partial index on each session's throttle rows (see RawEvent.Meta).

Built with CREATE INDEX CONCURRENTLY on PostgreSQL, so ingest keeps writing to the raw table
while a large one is indexed; SQLite has no such form and builds it in place.
"""
from django.db import migrations, models


def _concurrently(schema_editor) -> dict:
    return {"concurrently": True} if schema_editor.connection.vendor == "postgresql" else {}


class AddIndexConcurrentlyOnPostgres(migrations.AddIndex):
    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        model = to_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            schema_editor.add_index(model, self.index, **_concurrently(schema_editor))

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        model = from_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            schema_editor.remove_index(model, self.index, **_concurrently(schema_editor))


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [
        ("ingestion", "0007_rawevent_derived_values"),
    ]

    operations = [
        AddIndexConcurrentlyOnPostgres(
            model_name="rawevent",
            index=models.Index(
                condition=models.Q(type="throttle"), fields=["project", "session_id"], name="rawevent_session_throttles"
            ),
        ),
    ]
