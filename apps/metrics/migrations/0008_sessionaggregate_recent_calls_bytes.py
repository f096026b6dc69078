from django.db import migrations, models


class Migration(migrations.Migration):
    """Recent calls stored as bytes (apps.metrics.recent_calls.to_bytes) instead of JSON.

    The stored states are dropped, not converted: a session without one reloads its recent calls
    from the raw events at its next fold and stores them again, the path every session took
    before 0005. Dropping and adding a nullable column rewrites no row.
    """

    dependencies = [
        ("metrics", "0007_aggregates_half_filled_pages"),
    ]

    operations = [
        migrations.RemoveField(model_name="sessionaggregate", name="recent_calls"),
        migrations.AddField(
            model_name="sessionaggregate", name="recent_calls", field=models.BinaryField(blank=True, null=True)
        ),
    ]
