import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    """The step and model rows' session link loses its foreign key constraint and its one-column
    index (apps.metrics.models says why): the deferred checks of new rows cost the live fold about
    10 ms per 1,000 sessions at commit, and the unique keys already lead with the session."""

    dependencies = [("metrics", "0009_bigint_sum")]

    operations = [
        migrations.AlterField(
            model_name="sessionmodelaggregate",
            name="session",
            field=models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.CASCADE,
                                    related_name="models", to="metrics.sessionaggregate"),  # fmt: skip
        ),
        migrations.AlterField(
            model_name="sessionstepaggregate",
            name="session",
            field=models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.CASCADE,
                                    related_name="steps", to="metrics.sessionaggregate"),  # fmt: skip
        ),
    ]
