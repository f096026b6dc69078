"""Budget status from TokenSite and the opt-in budget guard.

`BudgetPoller` fetches `GET /api/v1/budgets` on the tracker's sender thread, every
`refresh_s` seconds once the guard is on or `budget_status()` was first called: the application's threads only read the last list fetched (one
reference swap, no lock, no I/O). A failed fetch keeps the last good list, so a server
that is away neither blocks calls nor lifts a block it had reported.

The guard (`Tracker(budget_guard=True)`) raises `BudgetExceeded` before an instrumented
call when a budget marked hard is spent and applies to the call: every budget the key's
project sees applies unless it is narrowed to another developer (`user`) or another model.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx

logger = logging.getLogger("tokensite_client")

DEFAULT_BUDGET_REFRESH_S = 15.0
# A budget read must never hold the sender thread (and the events behind it) for long.
LONGEST_FETCH_S = 5.0

# A dated snapshot and its alias are one model for a guard: "gpt-4o" may be served as
# "gpt-4o-2024-08-06", and "claude-sonnet-4" as "claude-sonnet-4-20250514".
_DATE_SUFFIX = re.compile(r"(-\d{4}-\d{2}-\d{2}|-\d{8}|@\d{8})$")


class BudgetExceeded(Exception):
    """A hard budget that applies to this call is spent; the provider was not called."""

    def __init__(self, budget: BudgetStatus, *, model: str, user: str | None) -> None:
        self.budget = budget
        self.model = model
        self.user = user
        super().__init__(f"TokenSite budget {budget.id} ({budget.describe()}) is spent: "
                         f"{budget.share:.0%} of its {budget.period}; the call to {model} was not made")


@dataclass(frozen=True)
class BudgetStatus:
    """One budget as `GET /api/v1/budgets` reports it (money as Decimal, instants in UTC)."""

    id: int
    scope: str
    project: str | None
    user: str
    model: str
    period: str
    period_start: datetime
    period_end: datetime
    amount_usd: Decimal | None
    amount_tokens: int | None
    spent_usd: Decimal
    spent_tokens: int
    unpriced_tokens: int
    share: float
    forecast_share: float
    forecast_exceeds: bool
    hard: bool
    exceeded: bool

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> BudgetStatus:
        """Raises ValueError (or KeyError, TypeError) for an item that is not a budget."""
        return cls(
            id=int(item["id"]), scope=str(item["scope"]), project=item.get("project"),
            user=str(item.get("user") or ""), model=str(item.get("model") or ""), period=str(item["period"]),
            period_start=_instant(item["period_start"]), period_end=_instant(item["period_end"]),
            amount_usd=_decimal(item.get("amount_usd")),
            amount_tokens=None if item.get("amount_tokens") is None else int(item["amount_tokens"]),
            spent_usd=_decimal(item.get("spent_usd")) or Decimal(0), spent_tokens=int(item.get("spent_tokens") or 0),
            unpriced_tokens=int(item.get("unpriced_tokens") or 0), share=float(item["share"]),
            forecast_share=float(item.get("forecast_share") or 0.0),
            forecast_exceeds=bool(item.get("forecast_exceeds")), hard=bool(item["hard"]),
            exceeded=bool(item["exceeded"]),
        )

    def describe(self) -> str:
        where = f"project {self.project}" if self.scope == "project" else "the team"
        amount = f"${self.amount_usd}" if self.amount_usd is not None else f"{self.amount_tokens:,} tokens"
        narrowed = "".join(f", {kind} {value}" for kind, value in (("user", self.user), ("model", self.model)) if value)
        return f"{amount} per {self.period} for {where}{narrowed}"

    def applies_to(self, *, model: str, user: str | None) -> bool:
        """Whether a call of `model` by `user` counts against this budget."""
        if self.user and self.user != user:
            return False
        return not self.model or same_model(self.model, model)


def same_model(budget_model: str, call_model: str) -> bool:
    """Model names equal up to case, a routing prefix (`openai/gpt-4o`) and a date suffix."""
    return _model_key(budget_model) == _model_key(call_model)


def _model_key(name: str) -> str:
    return _DATE_SUFFIX.sub("", name.strip().lower().rsplit("/", 1)[-1])


class BudgetPoller:
    """Keeps the last budget list fetched from the server; `refresh` runs on the sender thread."""

    def __init__(self, *, url: str, api_key: str, refresh_s: float, timeout_s: float) -> None:
        self.endpoint = url.rstrip("/") + "/api/v1/budgets"
        self.api_key = api_key
        self.refresh_s = refresh_s
        self.timeout_s = min(timeout_s, LONGEST_FETCH_S)
        self.statuses: tuple[BudgetStatus, ...] = ()
        # The hard, spent budgets with their model keys, worked out once per fetch: the check
        # before every call looks at these only.
        self._spent_hard: tuple[tuple[BudgetStatus, str], ...] = ()
        self.fetched = False
        self.last_error: str | None = None
        # Only trackers that guard calls or were asked for their budgets poll: the others (and
        # servers without budgets) see no extra request.
        self.wanted = False
        self._next_fetch_at = 0.0  # the first fetch happens as soon as the thread runs

    def refresh_if_due(self, client: httpx.Client) -> None:
        now = time.monotonic()
        if not self.wanted or now < self._next_fetch_at:
            return
        self._next_fetch_at = now + self.refresh_s
        self.refresh(client)

    def refresh(self, client: httpx.Client) -> None:
        """Fetch the list; on any failure log it once per kind and keep the last good list."""
        try:
            response = client.get(self.endpoint, headers={"Authorization": f"Bearer {self.api_key}"},
                                  timeout=self.timeout_s)
        except httpx.HTTPError as exc:
            self._failed(f"{type(exc).__name__}: {exc}")
            return
        if response.status_code != 200:
            self._failed(f"HTTP {response.status_code}: {response.text[:200]}")
            return
        try:
            items = response.json()["budgets"]
            statuses = tuple(BudgetStatus.from_json(item) for item in items)
        except (ValueError, KeyError, TypeError, InvalidOperation) as exc:
            self._failed(f"unreadable budget list: {exc!r}")
            return
        self._spent_hard = tuple((status, _model_key(status.model)) for status in statuses
                                 if status.hard and status.exceeded)
        self.statuses = statuses
        self.fetched = True
        self.last_error = None

    def blocking(self, *, model: str, user: str | None) -> BudgetStatus | None:
        """The first hard, spent budget that applies to the call (as `BudgetStatus.applies_to` says)
        and is still in the period it was spent in: a status fetched before a new period began
        says nothing about the new one."""
        spent_hard = self._spent_hard
        if not spent_hard:
            return None
        now = datetime.now(timezone.utc)
        call_key = _model_key(model)
        for status, budget_key in spent_hard:
            if (now < status.period_end and (not status.user or status.user == user)
                    and (not status.model or budget_key == call_key)):
                return status
        return None

    def _failed(self, error: str) -> None:
        if error.split(":", 1)[0] != (self.last_error or "").split(":", 1)[0]:
            logger.warning("TokenSite budget status not refreshed (%s); keeping the last one fetched", error)
        self.last_error = error


def _instant(value: Any) -> datetime:
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"instant without a time zone: {value!r}")
    return parsed.astimezone(timezone.utc)


def _decimal(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))
