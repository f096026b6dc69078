"""End to end in a real headless Chromium: log in, read the project and session pages, see the
charts drawn, download the metadata. Screenshots go to artifacts/ (gitignored)."""
from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest

from apps.metrics.selectors import session_metadata
from tests.dashboards.conftest import PASSWORD, ingest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]  # fmt: skip
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (requirements.txt pins it)")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed (apt-get install chromium)"),
    pytest.mark.django_db(transaction=True),
]

# Draws every canvas of the page must have: a Chart.js instance and some non-transparent pixels.
CHARTS_DRAWN = """() => Array.from(document.querySelectorAll('canvas[data-chart]')).map(canvas => {
  const chart = window.Chart && window.Chart.getChart(canvas);
  const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let painted = 0;
  for (let i = 3; i < pixels.length; i += 4) { if (pixels[i] !== 0) { painted++; } }
  return {chart: canvas.dataset.chart, instance: Boolean(chart), points: chart ? chart.data.datasets.reduce(
    (n, d) => n + d.data.length, 0) : 0, painted: painted};
})"""


@contextmanager
def chromium_page():
    """A page in headless Chromium. Playwright's sync API runs an event loop in this thread, so
    the test does its ORM work before entering (Django refuses queries inside a running loop)."""
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True,
                                      timezone_id="America/New_York")  # fmt: skip
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        try:
            yield page, errors
        finally:
            browser.close()


def test_logged_in_member_reads_project_and_session_pages_in_chromium(live_server, project, users, session_events):
    ingest(project, session_events)
    expected_metadata = session_metadata(project=project, session_id="s-1")
    ARTIFACTS.mkdir(exist_ok=True)
    with chromium_page() as (page, errors):
        _read_pages(page, live_server.url)
    assert errors == []
    assert json.loads((ARTIFACTS / "dashboards-session-metadata.json").read_text()) == expected_metadata


def _read_pages(page, live_server_url: str) -> None:
    page.goto(f"{live_server_url}/acme/chatbot/")
    assert "/login/" in page.url  # anonymous: sent to log in first
    page.fill("#id_username", "viewer-user")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server_url}/acme/chatbot/")

    assert page.inner_text("#fig-total-tokens") == "59,005"
    page.wait_for_function("document.querySelectorAll('canvas[data-chart]').length === 4 && typeof window.Chart === 'function'")
    charts = page.evaluate(CHARTS_DRAWN)
    assert {c["chart"] for c in charts} == {"tokens", "cost", "throttle", "live"}
    assert all(c["instance"] and c["points"] > 0 and c["painted"] > 500 for c in charts), charts
    # Times were rewritten into the viewer's zone (UTC text only without JavaScript).
    first_time = page.locator("time.local-time").first
    assert first_time.get_attribute("datetime").endswith("Z") and "UTC" not in first_time.inner_text()
    page.screenshot(path=str(ARTIFACTS / "dashboards-project.png"), full_page=True)

    page.click("text=s-1")
    page.wait_for_url(f"{live_server_url}/acme/chatbot/sessions/s-1/")
    charts = page.evaluate(CHARTS_DRAWN)
    assert {c["chart"] for c in charts} == {"steps", "timeline"}
    assert all(c["instance"] and c["points"] > 0 and c["painted"] > 500 for c in charts), charts
    page.screenshot(path=str(ARTIFACTS / "dashboards-session.png"), full_page=True)

    with page.expect_download() as download_info:
        page.click("text=Download metadata")
    download = download_info.value
    assert download.suggested_filename == "session-s-1.json"
    download.save_as(ARTIFACTS / "dashboards-session-metadata.json")
