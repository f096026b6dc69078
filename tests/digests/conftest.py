"""A real SMTP server on 127.0.0.1 (aiosmtpd) that keeps what it receives, and a team with usage
on two consecutive days."""
from __future__ import annotations

import email
import email.policy
from datetime import datetime, timezone
from email.message import Message

import pytest
from aiosmtpd.controller import Controller

from apps.accounts.services import member_add, project_get_or_create
from apps.digests.services import digest_subscription_set
from tests.conftest import throttle_event, usage_event
from tests.core.servers import free_port
from tests.dashboards.conftest import PASSWORD, ingest, outsider, users  # noqa: F401 (fixtures)

# Wednesday 25 November 2026, after the 07:00 UTC send hour: Tuesday's digest is due.
WEDNESDAY_MORNING = datetime(2026, 11, 25, 7, 30, tzinfo=timezone.utc)
TUESDAY = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)
MONDAY = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)


class Inbox:
    """Collects every message the SMTP server accepts."""

    def __init__(self):
        self.received: list[tuple[list[str], Message]] = []

    async def handle_DATA(self, server, session, envelope):
        self.received.append((list(envelope.rcpt_tos), email.message_from_bytes(envelope.content, policy=email.policy.default)))
        return "250 Message accepted for delivery"

    def texts(self) -> dict[str, str]:
        """Plain-text body of each message by subject."""
        return {message["Subject"]: _part(message, "text/plain") for _, message in self.received}

    def htmls(self) -> dict[str, str]:
        return {message["Subject"]: _part(message, "text/html") for _, message in self.received}


def _part(message: Message, content_type: str) -> str:
    for part in message.walk():
        if part.get_content_type() == content_type:
            return part.get_content().replace("\r\n", "\n")
    raise AssertionError(f"no {content_type} part")


class SmtpServer:
    def __init__(self, port: int):
        self.port = port
        self.inbox = Inbox()
        self.controller: Controller | None = None

    def start(self) -> None:
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def smtp_server(settings):
    """Django's SMTP backend pointed at a real server on a free loopback port (started)."""
    server = SmtpServer(free_port())
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", server.port, 5
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.DIGEST_SEND_HOUR_UTC = 7
    settings.SITE_URL = "https://tokensite.example.com"
    server.start()
    yield server
    server.stop()


@pytest.fixture
def two_days(team, project):
    """acme/chatbot and acme/agents with usage on Monday and (more) on Tuesday, ada and bob, a
    throttled model and an unpriced one on Tuesday."""
    agents = project_get_or_create(team=team, slug="agents", name="Agents")
    ada, bob = {"user": "ada@example.com"}, {"user": "bob@example.com"}
    ingest(project, [
        usage_event(session_id="mon-1", timestamp=MONDAY.isoformat(), model="gpt-4o", input_tokens=100_000,
                    output_tokens=10_000, attributes=ada),
        usage_event(session_id="tue-1", timestamp=TUESDAY.isoformat(), model="gpt-4o", input_tokens=200_000,
                    output_tokens=20_000, attributes=ada),
        throttle_event(session_id="tue-1", timestamp=TUESDAY.isoformat(), model="gpt-4o", wait_ms=4000),
        throttle_event(session_id="tue-1", timestamp=TUESDAY.isoformat(), model="gpt-4o-mini", wait_ms=1000),
    ])  # fmt: skip
    ingest(agents, [
        usage_event(session_id="tue-2", timestamp=TUESDAY.isoformat(), provider="self-hosted",
                    model="acme-unpriced-llm", input_tokens=7000, output_tokens=700, attributes=bob),
    ])  # fmt: skip
    return {"chatbot": project, "agents": agents}


@pytest.fixture
def subscribers(team):
    """daily-dora (daily, own address), weekly-wes (weekly), off-otto (no digest), all in acme."""
    users = {}
    for username, frequency in (("daily-dora", "daily"), ("weekly-wes", "weekly"), ("off-otto", "off")):
        user = member_add(team=team, username=username, password=PASSWORD, role="member").user
        user.email = f"{username}@example.com"
        user.save()
        digest_subscription_set(user=user, frequency=frequency)
        users[username] = user
    return users
