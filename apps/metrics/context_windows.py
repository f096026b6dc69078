"""Context window pressure per session step and per session model: how full the calls' input
windows were, folded with the step and model sums (apps.metrics.folding._groups_add).

Each usage event carries its share of its model's input window, fixed at ingest
(`RawEvent.context_share`, apps.pricing.context_windows; NULL when the window is unknown). A fold
adds its claimed calls to the step and model rows in the grouped statement that adds their sums:
counts add up, the largest share is the larger of the stored and the new one, and a call whose
window is unknown counts in none of them. The same SQL runs on PostgreSQL and SQLite (>= 3.35).
"""
from __future__ import annotations

# A call is "above 80%" when its input is more than 80% of the window (strictly: exactly 80% is not).
HIGH_SHARE = 0.80
CRITICAL_SHARE = 0.95
PRESSURE_COLUMNS = ("context_known_calls", "context_max_share", "context_calls_over_80", "context_calls_over_95")
# Each column over raw rows `r` of one group.
PRESSURE_MEASURES = {
    "context_known_calls": "COUNT(r.context_share)",
    "context_max_share": "MAX(r.context_share)",
    "context_calls_over_80": f"SUM(CASE WHEN r.context_share > {HIGH_SHARE!r} THEN 1 ELSE 0 END)",
    "context_calls_over_95": f"SUM(CASE WHEN r.context_share > {CRITICAL_SHARE!r} THEN 1 ELSE 0 END)",
}


def pressure_update(column: str) -> str:
    """ON CONFLICT update expression of a pressure column (apps.metrics.upserts' form, `{table}`
    for the table): the larger share, either of which may be NULL (unknown); counts add up."""
    if column == "context_max_share":
        return (
            f"CASE WHEN {{table}}.{column} IS NULL OR excluded.{column} > {{table}}.{column} "
            f"THEN excluded.{column} ELSE {{table}}.{column} END"
        )
    return f"{{table}}.{column} + excluded.{column}"
