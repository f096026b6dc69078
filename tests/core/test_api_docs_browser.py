"""/api/docs/ in a real headless Chromium: Swagger UI renders every operation from the app's own
files, under the Content-Security-Policy, without a request to any other origin."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.dashboards.test_browser import ARTIFACTS, CHROMIUM, chromium_page

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed (apt-get install chromium)"),
    pytest.mark.django_db(transaction=True),
]


def test_api_docs_render_every_operation_offline(live_server, client):
    documented = sorted(client.get("/api/schema/", HTTP_ACCEPT="application/json").json()["paths"])
    assert "/api/v1/events" in documented and "/api/v1/budgets" in documented
    ARTIFACTS.mkdir(exist_ok=True)
    with chromium_page() as (page, errors):
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        page.goto(f"{live_server.url}/api/docs/")
        page.wait_for_selector(".opblock-summary-path", timeout=15_000)
        paths = sorted({text.strip() for text in page.locator(".opblock-summary-path").all_inner_texts()})
        page.screenshot(path=str(ARTIFACTS / "api-docs.png"), full_page=True)
    assert errors == []
    assert paths == documented
    assert requested and all(url.startswith(live_server.url) or url.startswith("data:") for url in requested), requested
