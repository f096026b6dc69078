"""Realistic demo data for `make run`: a team, three projects and a week of agent sessions.

Events go through the real ingest service (validation, pricing, folding), so the demo shows
exactly what a client's events would.
"""
from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone

from apps.accounts.models import Project
from apps.accounts.services import member_add, project_get_or_create, team_get_or_create
from apps.ingestion.services import events_ingest

DEMO_TEAM = "demo"
DEMO_USER = "demo"
DEMO_PASSWORD = "demo-password"


@dataclass(frozen=True)
class Workflow:
    project: str
    steps: tuple[tuple[str, str, str, int, int], ...]  # (step, provider, model, typical input, typical output)
    sessions_per_day: int


WORKFLOWS = (
    Workflow(
        "support-bot",
        (
            ("classify_ticket", "openai", "gpt-4o-mini", 900, 40),
            ("retrieve_context", "openai", "text-embedding-3-small", 2500, 0),
            ("draft_reply", "anthropic", "claude-sonnet-4-5", 6000, 700),
            ("tone_check", "openai", "gpt-4o-mini", 1200, 120),
        ),
        10,
    ),
    Workflow(
        "research-agent",
        (
            ("plan", "openai", "o3-mini", 3000, 1500),
            ("persona_generation", "openai", "gpt-4o", 42000, 7500),
            ("web_summaries", "gemini", "gemini-2.5-flash", 30000, 2000),
            ("summary_generation", "openai", "gpt-4o", 3230, 1250),
        ),
        6,
    ),
    Workflow(
        "batch-summaries",
        (
            ("chunk_summaries", "self-hosted", "acme-llm-7b-instruct", 8000, 600),
            ("merge", "openai", "gpt-4o-mini", 5000, 900),
        ),
        4,
    ),
)


def _ratelimit_headers(provider: str, input_tokens: int, output_tokens: int) -> dict:
    """The rate-limit headers the SDK's shims capture into a call's attributes: OpenAI and
    Anthropic announce their limits (Tier 2-like figures here), Gemini and self-hosted models do not."""
    if provider == "openai":
        return {"x-ratelimit-limit-requests": 5000, "x-ratelimit-remaining-requests": 4999,
                "x-ratelimit-reset-requests": "12ms", "x-ratelimit-limit-tokens": 450_000,
                "x-ratelimit-remaining-tokens": 450_000 - input_tokens - output_tokens,
                "x-ratelimit-reset-tokens": "1.2s"}  # fmt: skip
    if provider == "anthropic":
        return {"anthropic-ratelimit-requests-limit": 1000, "anthropic-ratelimit-requests-remaining": 999,
                "anthropic-ratelimit-input-tokens-limit": 40_000,
                "anthropic-ratelimit-input-tokens-remaining": max(0, 40_000 - input_tokens),
                "anthropic-ratelimit-output-tokens-limit": 16_000,
                "anthropic-ratelimit-output-tokens-remaining": max(0, 16_000 - output_tokens)}  # fmt: skip
    return {}


def _session_events(rng: random.Random, workflow: Workflow, session_id: str, start: datetime, user: str) -> list[dict]:
    events: list[dict] = []
    clock = start
    for step, provider, model, typical_in, typical_out in workflow.steps:
        for _ in range(rng.randint(1, 4)):
            call_id = uuid.uuid4().hex
            if rng.random() < 0.08:  # a provider rate limit: one or two waits before the call succeeds
                for attempt in range(1, rng.randint(2, 3)):
                    wait_ms = rng.choice([500, 1000, 2000, 4000]) * attempt
                    events.append({
                        "event_id": str(uuid.uuid4()), "type": "throttle", "session_id": session_id, "step": step,
                        "provider": provider, "model": model, "timestamp": clock.isoformat(), "wait_ms": wait_ms,
                        "status_code": 429, "attempt": attempt, "retry_after_ms": wait_ms, "call_id": call_id,
                    })  # fmt: skip
                    clock += timedelta(milliseconds=wait_ms)
            input_tokens = max(1, int(rng.gauss(typical_in, typical_in * 0.25)))
            output_tokens = max(0, int(rng.gauss(typical_out, typical_out * 0.3))) if typical_out else 0
            ttft_ms = rng.uniform(150, 900)
            duration_ms = ttft_ms + (output_tokens / rng.uniform(40, 160)) * 1000
            cache_read = int(input_tokens * rng.choice([0, 0, 0.3, 0.6])) if provider != "self-hosted" else 0
            thought = int(output_tokens * 0.5) if model.startswith("o3") else 0
            events.append({
                "event_id": str(uuid.uuid4()), "type": "usage", "session_id": session_id, "step": step,
                "provider": provider, "model": model, "timestamp": clock.isoformat(), "duration_ms": round(duration_ms, 1),
                "time_to_first_token_ms": round(ttft_ms, 1), "input_tokens": input_tokens,
                "output_tokens": output_tokens, "cache_read_tokens": cache_read, "thought_tokens": thought,
                "call_id": call_id, "attributes": {"user": user, "environment": "production", "app": workflow.project,
                                                   **_ratelimit_headers(provider, input_tokens, output_tokens)},
            })  # fmt: skip
            # Some calls of a step run in parallel, which shows as concurrency and bursts.
            clock += timedelta(milliseconds=duration_ms * rng.choice([0.2, 1.0, 1.0]) + rng.uniform(50, 500))
    return events


def demo_seed(*, days: int = 7, seed: int = 7) -> list[Project]:
    """Create the demo team, its owner and projects, and ingest `days` days of sessions (idempotent)."""
    team = team_get_or_create(slug=DEMO_TEAM, name="Demo team")
    member_add(team=team, username=DEMO_USER, password=DEMO_PASSWORD, role="owner")
    rng = random.Random(seed)
    now = timezone.now().replace(microsecond=0)
    projects = []
    for workflow in WORKFLOWS:
        project = project_get_or_create(team=team, slug=workflow.project, name=workflow.project.replace("-", " ").title())
        projects.append(project)
        if project.raw_events.exists():
            continue
        batch: list[dict] = []
        for day in range(days, -1, -1):
            for index in range(workflow.sessions_per_day):
                start = now - timedelta(days=day, hours=rng.uniform(0, 23 if day else 2), minutes=rng.uniform(0, 59))
                session_id = f"{workflow.project}-{start:%Y%m%d-%H%M%S}-{index:03d}"
                user = rng.choice(["alice", "bob", "carol", "dan"])
                batch.extend(_session_events(rng, workflow, session_id, start, user))
                if len(batch) >= 500:
                    events_ingest(project=project, body=json.dumps({"events": batch}).encode())
                    batch = []
        if batch:
            events_ingest(project=project, body=json.dumps({"events": batch}).encode())
    return projects
