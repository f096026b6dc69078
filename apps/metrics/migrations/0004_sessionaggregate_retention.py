from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("metrics", "0003_step_model_context_window_pressure"),
    ]

    operations = [
        migrations.AddField(
            model_name="sessionaggregate",
            name="raw_pruned_through",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="sessionaggregate",
            name="peaks_approximate",
            field=models.BooleanField(db_default=False, default=False),
        ),
    ]
