"""Exactly-once moves to RawEventKey, and on PostgreSQL the raw table becomes partitioned by month
of received_at (apps.ingestion.partitions).

Every stored event gets its key before the unique constraint goes, so no resend is stored twice
across the change. On PostgreSQL the table is rebuilt: a partitioned table with the same columns,
defaults, checks, foreign key and indexes (same names), primary key (id, received_at) because a
partitioned table's must hold its partition column, and the id identity continuing from the old
sequence; every existing row is copied into the partition of its month. The rebuild holds the
table's lock while it copies: expect ingest to wait for it on a large table. Django's model state
is unchanged (an ordinary table with id as primary key); SQLite keeps one table.
"""
import django.db.models.deletion
from django.db import migrations, models

from apps.ingestion.partitions import (
    DEFAULT_PARTITION,
    RAW_TABLE,
    month_start,
    partition_indexes_name,
    partition_name,
    raw_partition_create,
    raw_partitions_ensure,
)

OLD_SUFFIX = "_before_0009"


def _copy_sql(schema_editor, model, source: str) -> str:
    columns = ", ".join(schema_editor.quote_name(field.column) for field in model._meta.local_concrete_fields)
    return f"INSERT INTO {RAW_TABLE} ({columns}) SELECT {columns} FROM {source}"


def _set_aside(cursor, model) -> str:
    """Rename the table, its primary key, indexes and id sequence out of the way; returns the new name."""
    old = f"{RAW_TABLE}{OLD_SUFFIX}"
    cursor.execute(f"LOCK TABLE {RAW_TABLE} IN ACCESS EXCLUSIVE MODE")
    cursor.execute(f"ALTER TABLE {RAW_TABLE} RENAME TO {old}")
    cursor.execute(f"ALTER INDEX {RAW_TABLE}_pkey RENAME TO {RAW_TABLE}_pkey{OLD_SUFFIX}")
    for index in model._meta.indexes:
        cursor.execute(f"ALTER INDEX {index.name} RENAME TO {index.name}{OLD_SUFFIX}")
    cursor.execute(f"ALTER SEQUENCE {RAW_TABLE}_id_seq RENAME TO {RAW_TABLE}_id_seq{OLD_SUFFIX}")
    return old


def _rebuild(schema_editor, model, old: str, partitioned: bool) -> None:
    """Create RAW_TABLE like `old` (partitioned or not), with its keys, indexes and foreign key."""
    cursor = schema_editor.connection.cursor()
    partition_by = " PARTITION BY RANGE (received_at)" if partitioned else ""
    cursor.execute(
        f"CREATE TABLE {RAW_TABLE} (LIKE {old} INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING CONSTRAINTS "
        f"INCLUDING STORAGE){partition_by}"
    )
    primary_key = "id, received_at" if partitioned else "id"
    cursor.execute(f"ALTER TABLE {RAW_TABLE} ADD CONSTRAINT {RAW_TABLE}_pkey PRIMARY KEY ({primary_key})")
    for index in model._meta.indexes:
        schema_editor.execute(index.create_sql(model, schema_editor))
    project = model._meta.get_field("project")
    schema_editor.execute(schema_editor._create_fk_sql(model, project, "_fk_%(to_table)s_%(to_column)s"))
    # Continue the old sequence exactly where it was.
    cursor.execute(f"SELECT last_value, is_called FROM {RAW_TABLE}_id_seq{OLD_SUFFIX}")
    last_value, is_called = cursor.fetchone()
    cursor.execute("SELECT setval(pg_get_serial_sequence(%s, 'id'), %s, %s)", [RAW_TABLE, last_value, is_called])


def _raw_table_rebuild(apps, schema_editor, *, partitioned: bool) -> None:
    """Rebuild the raw table (PostgreSQL only), partitioned or not, with every row copied over."""
    if schema_editor.connection.vendor != "postgresql":
        return
    model = apps.get_model("ingestion", "RawEvent")
    cursor = schema_editor.connection.cursor()
    old = _set_aside(cursor, model)
    _rebuild(schema_editor, model, old, partitioned=partitioned)
    if partitioned:
        _partitions_create(cursor, old)
    cursor.execute(_copy_sql(schema_editor, model, old))
    cursor.execute(f"DROP TABLE {old}")
    cursor.execute(f"ANALYZE {RAW_TABLE}")


def _partitions_create(cursor, old: str) -> None:
    """The default partition, one for every month of `old`'s rows, and the coming months'."""
    cursor.execute(f"CREATE TABLE {DEFAULT_PARTITION} PARTITION OF {RAW_TABLE} DEFAULT")
    partition_indexes_name(cursor, DEFAULT_PARTITION, "default")
    cursor.execute(f"SELECT DISTINCT date_trunc('month', received_at AT TIME ZONE 'UTC') FROM {old}")
    for (month,) in cursor.fetchall():
        start = month_start(month)
        cursor.execute("SELECT to_regclass(%s)", [partition_name(start)])
        if cursor.fetchone()[0] is None:
            raw_partition_create(cursor, start)
    cursor.execute("SELECT now()")
    raw_partitions_ensure(now=cursor.fetchone()[0])


def raw_table_partition(apps, schema_editor):
    _raw_table_rebuild(apps, schema_editor, partitioned=True)


def raw_table_unpartition(apps, schema_editor):
    _raw_table_rebuild(apps, schema_editor, partitioned=False)


class Migration(migrations.Migration):

    dependencies = [
        ("accounts", "0004_project_raw_events_retention_days"),
        ("ingestion", "0008_rawevent_session_throttles"),
    ]

    operations = [
        migrations.CreateModel(
            name="RawEventKey",
            fields=[
                ("pk", models.CompositePrimaryKey("event_id", "project_id", blank=True, editable=False,
                                                  primary_key=True, serialize=False)),  # fmt: skip
                ("event_id", models.UUIDField()),
                ("project", models.ForeignKey(db_constraint=False, db_index=False,
                                              on_delete=django.db.models.deletion.CASCADE, related_name="+",
                                              to="accounts.project")),  # fmt: skip
                ("received_at", models.DateTimeField()),
            ],
        ),
        migrations.RunSQL(
            f"INSERT INTO ingestion_raweventkey (event_id, project_id, received_at) "
            f"SELECT event_id, project_id, received_at FROM {RAW_TABLE}",
            migrations.RunSQL.noop,
        ),
        migrations.RemoveConstraint(
            model_name="rawevent",
            name="rawevent_unique_event_id_project",
        ),
        migrations.RunPython(raw_table_partition, raw_table_unpartition),
    ]
