"""Raw-event indexes a planner with stale statistics cannot misuse (see RawEvent.Meta).

The new idempotency constraint is created before the old one is dropped, so uniqueness of
(project, event_id) holds at every step.
"""
import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0001_initial'),
        ('ingestion', '0001_initial'),
    ]

    operations = [
        migrations.AddConstraint(
            model_name='rawevent',
            constraint=models.UniqueConstraint(fields=('event_id', 'project'), name='rawevent_unique_event_id_project'),
        ),
        migrations.RemoveConstraint(
            model_name='rawevent',
            name='rawevent_unique_project_event_id',
        ),
        migrations.RemoveIndex(
            model_name='rawevent',
            name='rawevent_project_time',
        ),
        migrations.AlterField(
            model_name='rawevent',
            name='project',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='raw_events', to='accounts.project'),
        ),
    ]
