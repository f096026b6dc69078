"""Unfolded events move from `RawEvent.processed_at IS NULL` to rows of PendingEvent (see its
docstring). Every raw event not yet folded gets its pending row before the column goes, so
nothing stored is skipped or folded twice across the change.
"""
import django.db.models.deletion
from django.db import migrations, models


def _tables(apps) -> tuple[str, str]:
    return apps.get_model("ingestion", "RawEvent")._meta.db_table, apps.get_model("ingestion", "PendingEvent")._meta.db_table


def unfolded_events_queue(apps, schema_editor):
    raw, pending = _tables(apps)
    schema_editor.execute(
        f"INSERT INTO {pending} (project_id, session_id, raw_event_id, received_at) "
        f"SELECT project_id, session_id, id, received_at FROM {raw} WHERE processed_at IS NULL"
    )


def folded_events_mark(apps, schema_editor):
    raw, pending = _tables(apps)
    schema_editor.execute(
        f"UPDATE {raw} SET processed_at = CURRENT_TIMESTAMP "
        f"WHERE id NOT IN (SELECT raw_event_id FROM {pending})"
    )


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0001_initial'),
        ('ingestion', '0002_rawevent_session_led_indexes'),
    ]

    operations = [
        migrations.CreateModel(
            name='PendingEvent',
            fields=[
                ('pk', models.CompositePrimaryKey('project_id', 'session_id', 'raw_event_id', blank=True, editable=False, primary_key=True, serialize=False)),
                ('project', models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='accounts.project')),
                ('session_id', models.CharField(max_length=200)),
                ('raw_event', models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='ingestion.rawevent')),
                ('received_at', models.DateTimeField()),
            ],
        ),
        migrations.RunPython(unfolded_events_queue, folded_events_mark),
        migrations.RemoveIndex(
            model_name='rawevent',
            name='rawevent_unprocessed',
        ),
        migrations.RemoveField(
            model_name='rawevent',
            name='processed_at',
        ),
    ]
