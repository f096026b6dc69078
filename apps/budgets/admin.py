from django.contrib import admin

from apps.budgets.models import AlertDelivery, Budget, BudgetAlert


@admin.register(Budget)
class BudgetAdmin(admin.ModelAdmin):
    """For operators; teams manage budgets on their settings pages (checked by apps.budgets.services)."""

    list_display = ("id", "team", "project", "user", "model", "period", "amount_usd", "amount_tokens", "hard")
    list_filter = ("period", "hard")
    search_fields = ("team__slug", "project__slug", "user", "model")
    # The webhook target is checked by budget_create and budget_update, not by this form.
    readonly_fields = ("webhook_url", "webhook_secret", "created_at", "updated_at", "created_by")

    def has_add_permission(self, request) -> bool:
        return False  # budget_create's checks (webhook targets above all) are not the admin form's


@admin.register(BudgetAlert)
class BudgetAlertAdmin(admin.ModelAdmin):
    """Alerts are history: read-only."""

    list_display = ("budget", "period_start", "kind", "threshold", "share", "created_at")
    list_filter = ("kind",)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(AlertDelivery)
class AlertDeliveryAdmin(admin.ModelAdmin):
    list_display = ("alert", "channel", "target", "status", "attempts", "sent_at", "next_attempt_at")
    list_filter = ("status", "channel")
    readonly_fields = ("alert", "channel", "target", "attempts", "last_error", "sent_at")

    def has_add_permission(self, request) -> bool:
        return False
