"""Numbers and times formatted for people: 53,980 tokens; $1,234.57 or $0.4213 under a dollar;
unpriced never shown as $0; times as UTC ISO in <time> tags that a small script shows in the
viewer's zone (the UTC text stays when JavaScript is off)."""
from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from urllib.parse import quote

from django import template
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from tokensite_client.summary import format_usd

register = template.Library()
DASH = "—"


@register.filter
def tokens(value) -> str:
    """53980 -> "53,980"; a non-integer average keeps one decimal."""
    if value is None or value == "":
        return DASH
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    return f"{int(value):,}"


def usd_text(value) -> str:
    """The SDK's and the CLI box's money format, so every surface reads the same:
    $1,234.57 from a dollar up, up to 4 decimals under a dollar ($0.42, $0.0042)."""
    return format_usd(float(value))


@register.filter
def usd(value) -> str:
    return "unpriced" if value is None else usd_text(value)


@register.simple_tag
def cost(value, unpriced_tokens=0):
    """A cost with its unpriced tokens flagged beside it; all-unpriced reads "unpriced", never $0."""
    if value is None:
        count = format_html(' <span class="unpriced">({} tokens)</span>', tokens(unpriced_tokens)) if unpriced_tokens else ""
        return format_html('<span class="unpriced-cost" title="No known price for these tokens">unpriced</span>{}', count)
    flag = ""
    if unpriced_tokens:
        flag = format_html(
            ' <span class="unpriced" title="No known price for these tokens; they are not in the cost">'
            "+ {} unpriced tokens</span>",
            tokens(unpriced_tokens),
        )
    return format_html("{}{}", usd_text(value), flag)


@register.filter
def rate(value) -> str:
    """Tokens per second with one decimal."""
    return DASH if value is None else f"{value:,.1f}"


@register.filter
def ms(value) -> str:
    """A wait in whole milliseconds, with a readable duration beside it from a second up."""
    if value is None:
        return DASH
    value = round(value)
    text = f"{value:,} ms"
    seconds = value / 1000
    if seconds >= 3600:
        return f"{text} ({seconds / 3600:.1f} h)"
    if seconds >= 60:
        return f"{text} ({seconds / 60:.1f} min)"
    if seconds >= 1:
        return f"{text} ({seconds:.1f} s)"
    return text


@register.filter
def percent(value) -> str:
    return DASH if value is None else f"{value * 100:.1f}%"


@register.filter
def change(value) -> str:
    """A change against the previous period: +25.0% / -3.1%; a dash when it cannot be told (a cost
    that was all unpriced before)."""
    return DASH if value is None else f"{value * 100:+.1f}%"


@register.filter
def utc(value):
    """A <time> in UTC ISO; dashboards.js rewrites its text in the viewer's zone."""
    if not value:
        return DASH
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    value = value.astimezone(timezone.utc)
    iso = value.isoformat(timespec="seconds").replace("+00:00", "Z")
    return format_html('<time class="local-time" datetime="{}">{} UTC</time>', iso, value.strftime("%Y-%m-%d %H:%M:%S"))


@register.simple_tag
def session_url(project, session_id: str, suffix: str = "") -> str:
    """The session page (or its `metadata.json` / `calls.csv`), with the id percent-encoded.

    reverse() keeps "/" readable; an id with a "." or ".." segment gets its slashes encoded too,
    because browsers would otherwise collapse those segments before sending the request.
    """
    names = {"": "session", "metadata.json": "session-metadata", "calls.csv": "session-calls"}
    if any(segment in (".", "..") for segment in session_id.split("/")):
        return f"/{project.team.slug}/{project.slug}/sessions/{quote(session_id, safe='')}/{suffix}"
    return reverse(names[suffix], args=[project.team.slug, project.slug, session_id])


@register.simple_tag(takes_context=True)
def query_with(context, **changes) -> str:
    """The current query string with some parameters replaced (None removes one)."""
    query = context["request"].GET.copy()
    for name, value in changes.items():
        name = {"from_": "from", "to_": "to"}.get(name, name)
        if value is None or value == "":
            query.pop(name, None)
        else:
            query[name] = value
    encoded = query.urlencode()
    return f"?{encoded}" if encoded else "?"


@register.simple_tag
def sort_link(request, current: str, key: str, label: str):
    """A column header that sorts by `key`, descending first, toggling when already sorted by it."""
    query = request.GET.copy()
    query.pop("page", None)
    next_sort = key if current == f"-{key}" else f"-{key}"
    query["sort"] = next_sort
    arrow = " ▼" if current == f"-{key}" else " ▲" if current == key else ""
    return format_html('<a href="?{}">{}{}</a>', query.urlencode(), label, arrow)


@register.simple_tag
def sparkline(values, width: int = 120, height: int = 28, unit: str = "day"):
    """An inline SVG polyline of daily (or hourly) totals: drawn on the server, so it shows without JavaScript."""
    values = list(values or [])
    if not values:
        return ""
    top = max(values) or 1
    step = width / max(1, len(values) - 1)
    points = " ".join(f"{index * step:.1f},{height - 2 - (value / top) * (height - 4):.1f}" for index, value in enumerate(values))
    return format_html(
        '<svg class="sparkline" width="{}" height="{}" viewBox="0 0 {} {}" role="img" aria-label="{}">'
        '<polyline fill="none" stroke="currentColor" stroke-width="1.5" points="{}"/></svg>',
        width, height, width, height, f"{'daily' if unit == 'day' else 'hourly'} tokens, last {len(values)} {unit}s, "
        f"peak {top:,}", points,
    )  # fmt: skip


@register.simple_tag
def attribute_chips(attributes):
    return format_html_join(" ", '<span class="chip">{}={}</span>', sorted((attributes or {}).items()))


@register.filter
def price(value) -> str:
    """A stored price per million tokens without trailing zeros: 2.500000 -> "$2.5"."""
    if value is None:
        return ""
    text = format(Decimal(value).normalize(), "f")
    return f"${text}"
