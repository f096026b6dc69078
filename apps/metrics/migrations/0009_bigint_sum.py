from django.db import migrations

# Read by apps.metrics.folding._sum.
CREATE = "CREATE AGGREGATE bigint_sum(bigint) (SFUNC = int8pl, STYPE = bigint)"
DROP = "DROP AGGREGATE IF EXISTS bigint_sum(bigint)"


def _on_postgresql(sql: str):
    def run(apps, schema_editor) -> None:
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):
    """`bigint_sum(bigint)`: the sum of bigints as a bigint, for the fold's grouped statements.

    PostgreSQL's SUM(bigint) returns numeric: each group's sums are converted to numeric and
    back when written to a bigint column, which doubled the grouping time of a fold's step and
    model statements (BENCHMARKS.md, "Sums as bigints"). `int8pl` is the bigint `+`: it raises on
    overflow as the numeric sum's write to a bigint column does, and, being strict with no initial
    state, it skips NULLs and gives NULL over no rows, as SUM does. SQLite's SUM of integers is
    already an integer.
    """

    dependencies = [
        ("metrics", "0008_sessionaggregate_recent_calls_bytes"),
    ]

    operations = [
        migrations.RunPython(_on_postgresql(CREATE), _on_postgresql(DROP), elidable=False),
    ]
