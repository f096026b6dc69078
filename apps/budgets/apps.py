from django.apps import AppConfig


class BudgetsConfig(AppConfig):
    name = "apps.budgets"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Connects the evaluation after each fold (`make run` has no beat to evaluate budgets).
        from apps.budgets import triggers  # noqa: F401
