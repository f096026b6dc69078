from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("metrics", "0002_quarantined_session"),
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
