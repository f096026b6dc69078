"""Forms of the dashboards: the query strings of the project and People pages and the settings page's actions."""
from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

from django import forms
from tokensite_client.events import EARLIEST_EVENT_TIME, MAX_MODEL_CHARS

from apps.accounts.models import ApiKey, Membership
from apps.dashboards.selectors import PEOPLE_SORTS, SESSION_SORTS, TimeRange
from apps.digests.models import Frequency
from apps.pricing.context_windows import MAX_CONTEXT_WINDOW_TOKENS

RANGES = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
MAX_CUSTOM_RANGE = timedelta(days=400)
# Custom days stay inside years that can hold usage (no event starts before the SDK's earliest
# time), so range and bin arithmetic never leaves the calendar (date.min - 1 day would overflow).
EARLIEST_DAY, LATEST_DAY = EARLIEST_EVENT_TIME.date(), date(2999, 12, 31)
SORT_CHOICES = [(key, key) for key in SESSION_SORTS] + [(f"-{key}", f"-{key}") for key in SESSION_SORTS]
PEOPLE_SORT_CHOICES = [(key, key) for key in PEOPLE_SORTS] + [(f"-{key}", f"-{key}") for key in PEOPLE_SORTS]


class RangeQueryForm(forms.Form):
    """`?range=24h|7d|30d|custom&from=YYYY-MM-DD&to=YYYY-MM-DD` (dates in UTC, `to` inclusive): the time
    range a page keeps in its URL."""

    range = forms.ChoiceField(choices=[(key, key) for key in RANGES] + [("custom", "custom")], required=False)
    start = forms.DateField(required=False, label="From")
    end = forms.DateField(required=False, label="To")

    def __init__(self, data=None, **kwargs):
        # `from` and `to` are the public parameter names; they are Python keywords, hence the mapping.
        if data is not None:
            data = data.copy()
            for public, name in (("from", "start"), ("to", "end")):
                if public in data:
                    data[name] = data[public]
        super().__init__(data, **kwargs)

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("range") == "custom":
            start, end = cleaned.get("start"), cleaned.get("end")
            # An open end means today, and counts toward the span like any other last day.
            last_day = end if end is not None else datetime.now(timezone.utc).date()
            if start is None:
                self.add_error("start", "Pick the first day of the custom range.")
            elif not (EARLIEST_DAY <= start and last_day <= LATEST_DAY):
                self.add_error("start" if start < EARLIEST_DAY else "end",
                               f"Days must lie between {EARLIEST_DAY} and {LATEST_DAY}.")
            elif last_day < start:
                self.add_error("end" if end is not None else "start", "The last day must not be before the first.")
            elif last_day - start > MAX_CUSTOM_RANGE:
                self.add_error("end" if end is not None else "start",
                               f"A custom range spans at most {MAX_CUSTOM_RANGE.days} days.")
        return cleaned

    def time_range(self, *, now: datetime) -> TimeRange:
        """The range asked for, or the last 24 h when the query is missing or invalid."""
        data = self.cleaned_data if self.is_valid() else {}
        key = data.get("range") or "24h"
        if key == "custom":
            since = datetime.combine(data["start"], time.min, tzinfo=timezone.utc)
            last_day = data.get("end") or now.date()
            until = datetime.combine(last_day + timedelta(days=1), time.min, tzinfo=timezone.utc)
            return TimeRange(key="custom", since=since, until=until)
        return TimeRange(key=key, since=now - RANGES[key], until=now)


class ProjectQueryForm(RangeQueryForm):
    """The range plus `&q=...&developer=...&source=...&sort=-cost&page=2`."""

    q = forms.CharField(required=False, max_length=200, strip=True, label="Search sessions")
    developer = forms.CharField(required=False, max_length=200, strip=True, label="Developer")
    source = forms.CharField(required=False, max_length=200, strip=True, label="Source")
    sort = forms.ChoiceField(choices=SORT_CHOICES, required=False)
    page = forms.IntegerField(required=False, min_value=1)


class PeopleQueryForm(RangeQueryForm):
    """The People page: the range plus `&sort=-cost` (a PEOPLE_SORTS key, `-` for descending)."""

    sort = forms.ChoiceField(choices=PEOPLE_SORT_CHOICES, required=False)


class DeveloperSessionsQueryForm(RangeQueryForm):
    """One developer's sessions across the team's projects: the range plus
    `&developer=ada@example.com&sort=-cost&page=2`."""

    developer = forms.CharField(max_length=200, strip=True, label="Developer")
    sort = forms.ChoiceField(choices=SORT_CHOICES, required=False)
    page = forms.IntegerField(required=False, min_value=1)


class DigestQueryForm(forms.Form):
    """`/<team>/digest/?period=daily|weekly&start=YYYY-MM-DD`: a day, or the ISO week holding `start`;
    without `start`, the last complete one."""

    period = forms.ChoiceField(choices=[(Frequency.DAILY, "Daily"), (Frequency.WEEKLY, "Weekly")], required=False)
    start = forms.DateField(required=False)

    def clean_start(self):
        start = self.cleaned_data["start"]
        if start is not None and not EARLIEST_DAY <= start <= LATEST_DAY:
            raise forms.ValidationError(f"Days must lie between {EARLIEST_DAY} and {LATEST_DAY}.")
        return start


class DigestSubscriptionForm(forms.Form):
    frequency = forms.ChoiceField(
        choices=Frequency.choices, widget=forms.RadioSelect, label="Digest",
        help_text="A mail each morning (UTC) about the day before, or each Monday about the week before.",
    )  # fmt: skip
    email = forms.EmailField(required=False, help_text="Leave blank to use your account's address.")


class ApiKeyCreateForm(forms.Form):
    name = forms.CharField(max_length=100, initial="default")
    scope = forms.ChoiceField(choices=ApiKey.Scope.choices, initial=ApiKey.Scope.INGEST)


class ApiKeyRevokeForm(forms.Form):
    prefix = forms.CharField(max_length=16)


class PriceOverrideForm(forms.Form):
    model = forms.CharField(max_length=MAX_MODEL_CHARS, help_text="The model name exactly as events send it.")
    input_per_million_usd = forms.DecimalField(min_value=0, max_digits=14, decimal_places=6, label="Input $/M")
    output_per_million_usd = forms.DecimalField(min_value=0, max_digits=14, decimal_places=6, label="Output $/M")
    cache_read_per_million_usd = forms.DecimalField(
        min_value=0, max_digits=14, decimal_places=6, required=False, label="Cache read $/M"
    )
    cache_write_per_million_usd = forms.DecimalField(
        min_value=0, max_digits=14, decimal_places=6, required=False, label="Cache write $/M"
    )
    effective_from = forms.DateTimeField(
        label="Effective from (UTC)",
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"],
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )
    reprice = forms.BooleanField(required=False, label="Re-price stored events from this date")

    def clean_effective_from(self):
        value = self.cleaned_data["effective_from"]
        # The form is in UTC whatever the server's zone, as the label says.
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class RetentionForm(forms.Form):
    """Days raw events are kept; empty keeps every one."""

    raw_events_retention_days = forms.IntegerField(
        required=False, min_value=1, max_value=36_500, label="Keep raw events (days)",
        help_text="Empty keeps every raw event. Aggregates are always kept.",
    )  # fmt: skip
class RepriceUnpricedForm(forms.Form):
    """Price the project's unpriced events with the books and overrides now in force: no fields."""


class ContextWindowOverrideForm(forms.Form):
    """Set (or remove) the project's input window for a model, in tokens."""

    model = forms.CharField(max_length=MAX_MODEL_CHARS, help_text="The model name exactly as events send it.")
    max_input_tokens = forms.IntegerField(min_value=1, max_value=MAX_CONTEXT_WINDOW_TOKENS, required=False,
                                          label="Input window (tokens)")  # fmt: skip
    remove = forms.BooleanField(required=False, label="Remove the override (litellm's window applies again)")

    def clean(self):
        cleaned = super().clean()
        if not cleaned.get("remove") and cleaned.get("max_input_tokens") is None and "max_input_tokens" not in self.errors:
            self.add_error("max_input_tokens", "Give the model's input window in tokens.")
        return cleaned


class MemberAddForm(forms.Form):
    """Invite a username; the optional password creates that account first if no one has the name."""

    username = forms.CharField(max_length=150)
    password = forms.CharField(
        required=False,
        widget=forms.PasswordInput,
        help_text="Creates the account if the name is free; an existing account keeps its password.",
    )
    role = forms.ChoiceField(choices=Membership.Role.choices, initial=Membership.Role.MEMBER)


# Row ids as the database can hold them: a larger number is a form error, not an overflow.
_ROW_ID = {"min_value": 1, "max_value": 2**63 - 1}


class InvitationRevokeForm(forms.Form):
    invitation = forms.IntegerField(widget=forms.HiddenInput, **_ROW_ID)


class InvitationAnswerForm(forms.Form):
    invitation = forms.IntegerField(widget=forms.HiddenInput, **_ROW_ID)
    decision = forms.ChoiceField(choices=[("accept", "Accept"), ("decline", "Decline")])


class MemberRoleForm(forms.Form):
    membership = forms.IntegerField(widget=forms.HiddenInput)
    role = forms.ChoiceField(choices=Membership.Role.choices)
