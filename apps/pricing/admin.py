from django.contrib import admin

from apps.pricing.models import PriceOverride


@admin.register(PriceOverride)
class PriceOverrideAdmin(admin.ModelAdmin):
    """Overrides are history: an admin adds a new row with a later effective date instead of editing."""

    list_display = ("project", "model", "input_per_million_usd", "output_per_million_usd",
                    "cache_read_per_million_usd", "cache_write_per_million_usd", "effective_from", "created_by")  # fmt: skip
    list_filter = ("project",)
    search_fields = ("model",)

    def has_change_permission(self, request, obj=None) -> bool:
        return obj is None and super().has_change_permission(request, obj)

    def save_model(self, request, obj, form, change):
        obj.created_by = request.user
        super().save_model(request, obj, form, change)
