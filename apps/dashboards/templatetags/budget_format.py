"""How budget channels are shown: a webhook URL is a secret (whoever holds a Slack or Teams
incoming-webhook URL can post to the channel), so pages show its host only."""
from __future__ import annotations

from urllib.parse import urlsplit

from django import template

register = template.Library()


@register.filter
def webhook_host(url: str) -> str:
    """`https://hooks.slack.com/services/T0/B0/secret` -> `hooks.slack.com`."""
    try:
        return urlsplit(url).hostname or "?"
    except ValueError:
        return "?"


@register.filter
def channel_target(delivery) -> str:
    """A delivery's target as pages may show it: the address for email, the host for a webhook."""
    return webhook_host(delivery.target) if delivery.channel == "webhook" else delivery.target


@register.filter
def delivery_error(delivery) -> str:
    """The last error of a delivery, with a webhook's URL or path (which errors may quote) cut away."""
    error = delivery.last_error or ""
    if delivery.channel == "webhook" and delivery.target:
        error = error.replace(delivery.target, webhook_host(delivery.target))
        try:
            secret_part = urlsplit(delivery.target).path  # HTTP client errors quote the path alone
        except ValueError:
            secret_part = ""
        if len(secret_part) > 1:
            error = error.replace(secret_part, "/…")
    return error


@register.filter
def budgets_of(budgets_by_team: dict, team) -> list:
    """The team overview's budget statuses of one team (`budgets_by_team|budgets_of:card.team`)."""
    return budgets_by_team.get(team.pk, []) if budgets_by_team else []
