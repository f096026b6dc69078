from django.contrib import admin

from apps.ingestion.models import RawEvent


@admin.register(RawEvent)
class RawEventAdmin(admin.ModelAdmin):
    """Read-only: raw events are the append-only source of truth."""

    list_display = ("event_id", "project", "type", "session_id", "step", "model", "timestamp", "received_at")
    list_filter = ("type", "project")
    search_fields = ("session_id", "event_id")
    date_hierarchy = "timestamp"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
