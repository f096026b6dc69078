"""Re-pricing stored usage events with today's price books and overrides, aggregates following.

Here rather than in apps.pricing: it rewrites events (apps.ingestion) and moves the aggregates
folded from them (apps.metrics.costs), while pricing only answers what a call costs, so pricing
depends on neither.
"""
from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from apps.accounts.models import Project
from apps.ingestion.models import RawEvent
from apps.metrics.costs import CostChange, session_costs_change, sessions_with_unpriced_events
from apps.pricing.calls import CallUsage
from apps.pricing.selectors import price_book_for_project

REPRICE_CHUNK = 2000
REPRICE_SESSIONS_PER_QUERY = 500


def events_reprice(*, project: Project, since: datetime | None = None, unpriced_only: bool = False) -> int:
    """Recompute stored costs of the project's usage events (from `since`; only the unpriced ones
    with `unpriced_only`) with today's books and overrides, and move the aggregates by the
    difference; returns how many events changed."""
    book = price_book_for_project(project=project)
    events = RawEvent.objects.filter(project=project, type=RawEvent.Type.USAGE)
    if since is not None:
        events = events.filter(timestamp__gte=since)
    if unpriced_only:
        # Through the sessions that can hold one, so the session-led index finds them without
        # reading every event of the project.
        sessions = sessions_with_unpriced_events(project_id=project.pk)
        unpriced = events.filter(cost_nanousd__isnull=True)
        querysets = [
            unpriced.filter(session_id__in=sessions[start : start + REPRICE_SESSIONS_PER_QUERY])
            for start in range(0, len(sessions), REPRICE_SESSIONS_PER_QUERY)
        ]
    else:
        querysets = [events]
    changes_by_session: dict[str, list[CostChange]] = defaultdict(list)
    for queryset in querysets:
        for event in queryset.only(
            "id", "session_id", "model", "provider", "timestamp", "input_tokens", "output_tokens", "cache_read_tokens",
            "cache_write_tokens", "cache_write_1h_tokens", "thought_tokens", "service_tier", "cost_nanousd",
            "price_source", "price_book",
        ).iterator(chunk_size=REPRICE_CHUNK):  # fmt: skip
            cost, source, price_book = book.call_price(CallUsage.of(event))
            if (cost, source, price_book) != (event.cost_nanousd, event.price_source, event.price_book):
                changes_by_session[event.session_id].append(CostChange(event.pk, cost, source, price_book))
    return sum(
        session_costs_change(project_id=project.pk, session_id=session_id, changes=changes)
        for session_id, changes in sorted(changes_by_session.items())
    )


def unpriced_events_reprice(*, projects: list[Project]) -> dict[Project, int]:
    """Price the unpriced usage events of these projects with today's books and overrides (priced
    events keep their prices); returns how many events each project had priced."""
    return {project: events_reprice(project=project, unpriced_only=True) for project in projects}
