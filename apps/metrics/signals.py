"""Signals other apps listen to, so the fold need not know them (apps.budgets evaluates budgets)."""
from django.dispatch import Signal

# Sent by sessions_fold after it folded events of a project (kwargs: project_id, events), possibly
# inside the caller's transaction: receivers that read the new aggregates defer to on_commit.
project_folded = Signal()
