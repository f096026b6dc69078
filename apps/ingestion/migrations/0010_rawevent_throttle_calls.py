"""The partial index on each session's throttle rows gains call_id (see RawEvent.Meta), so a fold
finds the folded waits a claimed usage call links to without reading every wait of the session.

On PostgreSQL the raw table is partitioned (0009), and CREATE INDEX CONCURRENTLY cannot build a
partitioned index: the new one is built CONCURRENTLY on each partition, created on the parent
alone (ON ONLY) and each partition's index attached, so ingest keeps writing while a large table
is indexed; partition indexes are named `<index>_<partition suffix>` as apps.ingestion.partitions
names them. The old index is dropped after. SQLite builds the index in place.
"""
from django.db import migrations, models

from apps.ingestion.partitions import RAW_TABLE

OLD = models.Index(fields=["project", "session_id"], condition=models.Q(type="throttle"), name="rawevent_session_throttles")
NEW = models.Index(
    fields=["project", "session_id", "call_id"], condition=models.Q(type="throttle"), name="rawevent_throttle_calls"
)
_COLUMNS = {OLD.name: "project_id, session_id", NEW.name: "project_id, session_id, call_id"}


def _partitioned_index_create(cursor, name: str) -> None:
    cursor.execute(
        "SELECT child.relname FROM pg_inherits i JOIN pg_class child ON child.oid = i.inhrelid "
        "WHERE i.inhparent = %s::regclass ORDER BY child.relname",
        [RAW_TABLE],
    )
    partitions = [partition for (partition,) in cursor.fetchall()]
    definition = f"({_COLUMNS[name]}) WHERE type = 'throttle'"
    for partition in partitions:
        suffix = partition.removeprefix(f"{RAW_TABLE}_")
        cursor.execute(f'CREATE INDEX CONCURRENTLY IF NOT EXISTS "{name}_{suffix}" ON "{partition}" {definition}')
    cursor.execute(f'CREATE INDEX IF NOT EXISTS "{name}" ON ONLY "{RAW_TABLE}" {definition}')
    for partition in partitions:
        suffix = partition.removeprefix(f"{RAW_TABLE}_")
        cursor.execute(f'ALTER INDEX "{name}" ATTACH PARTITION "{name}_{suffix}"')


def _index_swap(schema_editor, model, add: models.Index, drop: models.Index) -> None:
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        schema_editor.add_index(model, add)
        schema_editor.remove_index(model, drop)
        return
    with connection.cursor() as cursor:
        _partitioned_index_create(cursor, add.name)
        # A partitioned index cannot be dropped CONCURRENTLY; dropping it is a catalog change.
        cursor.execute(f'DROP INDEX IF EXISTS "{drop.name}"')


def throttle_index_add_call_id(apps, schema_editor):
    _index_swap(schema_editor, apps.get_model("ingestion", "RawEvent"), NEW, OLD)


def throttle_index_drop_call_id(apps, schema_editor):
    _index_swap(schema_editor, apps.get_model("ingestion", "RawEvent"), OLD, NEW)


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [
        ("ingestion", "0009_raw_event_keys_and_partitions"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveIndex(model_name="rawevent", name=OLD.name),
                migrations.AddIndex(model_name="rawevent", index=NEW),
            ],
            database_operations=[migrations.RunPython(throttle_index_add_call_id, throttle_index_drop_call_id)],
        ),
    ]
