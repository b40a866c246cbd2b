"""The dashboard in a real browser: `streamlit run` against the test database, headless Chromium
driven by Playwright, signing in with the demo key and visiting every page.

Screenshots land in `tests/artifacts/` (one per page) with `timings.json`, the seconds each
page took from the click to the app going idle. Chromium is Debian's (`/usr/bin/chromium`;
.ci/run installs it), never a browser Playwright downloads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.conftest import free_port
from tests.dashboard.conftest import ENTRY, RIVAL_FEATURES, SeededOrg

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
# (link text in the sidebar, the page's title, screenshot name)
PAGES = (
    ("Overview", "Overview", "overview"),
    ("Features", "Features", "features"),
    ("Providers & models", "Providers & models", "providers"),
    ("End users", "End users", "end_users"),
    ("Requests", "Requests", "requests"),
    ("Recommendations", "Recommendations", "recommendations"),
    ("Anomalies", "Anomalies", "anomalies"),
    ("Settings", "Settings", "settings"),
)


@pytest.fixture
def dashboard_url(pg_url: str, demo_org: SeededOrg, rival_org: SeededOrg, tmp_path: Path) -> Iterator[str]:
    """`streamlit run dashboard/streamlit_app.py` on a free port, pointed at the test database."""
    port = free_port()
    log = open(tmp_path / "streamlit.log", "wb")
    env = {**os.environ, "DATABASE_URL": pg_url, "LECTR_PROXY_URL": "http://localhost:8080/v1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ENTRY), "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError((tmp_path / "streamlit.log").read_text())
            try:
                if httpx.get(f"{url}/_stcore/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("streamlit did not start: " + (tmp_path / "streamlit.log").read_text())
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _idle(page: Page, title: str) -> None:
    """Wait for the page's title, for the script run to finish and for the charts to draw."""
    expect(page.get_by_role("heading", name=title, exact=True).first).to_be_visible(timeout=30_000)
    # Streamlit marks its root with the script's state; the new title plus "notRunning" means the
    # run that drew this page has finished (no stale elements from the previous page remain).
    page.locator("[data-testid='stApp'][data-test-script-state='notRunning']").wait_for(timeout=30_000)
    page.wait_for_load_state("networkidle")
    for grid in page.locator("[data-testid='stDataFrame']").all():
        if grid.is_visible():  # tables in a closed expander are not drawn
            expect(grid.locator("canvas").first).to_be_attached(timeout=15_000)
    for chart in page.locator("[data-testid='stVegaLiteChart']").all():
        if chart.is_visible():
            expect(chart.locator("canvas, svg").first).to_be_visible(timeout=15_000)


def _screenshot(page: Page, path: Path) -> None:
    """The whole page: Streamlit scrolls inside its main area, so grow the viewport to fit it."""
    height = page.evaluate(
        "() => Math.max(...[...document.querySelectorAll("
        "'[data-testid=\"stMain\"], [data-testid=\"stMainBlockContainer\"]')].map(e => e.scrollHeight), 1000)"
    )
    page.set_viewport_size({"width": 1440, "height": min(int(height) + 80, 8000)})
    page.wait_for_timeout(300)  # let charts re-layout to the new size
    page.screenshot(path=str(path))
    page.set_viewport_size({"width": 1440, "height": 1000})


def test_every_page_in_chromium(dashboard_url: str, demo_org: SeededOrg) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.goto(dashboard_url)
            password = page.locator("input[type='password']")
            expect(password).to_be_visible(timeout=30_000)
            _screenshot(page, ARTIFACTS / "0-sign-in.png")
            password.fill(demo_org.key)
            page.get_by_role("button", name="Sign in").click()
            _idle(page, "Overview")
            # 30 days hold the demo's runaway day and provider incident (the anomalies).
            page.locator("[data-testid='stSidebar']").get_by_text("30d", exact=True).click()
            _idle(page, "Overview")
            for index, (link, title, name) in enumerate(PAGES, start=1):
                started = time.perf_counter()
                page.locator("[data-testid='stSidebarNav']").get_by_text(link, exact=True).click()
                _idle(page, title)
                timings[name] = round(time.perf_counter() - started, 2)
                text = page.locator("[data-testid='stMain']").inner_text()
                assert "Traceback" not in text, text[:2000]
                assert page.locator("[data-testid='stException']").count() == 0, text[:2000]
                for feature in RIVAL_FEATURES:
                    assert feature not in text, f"{feature} (another org's) shown on {title}"
                _screenshot(page, ARTIFACTS / f"{index}-{name}.png")
            assert demo_org.key not in page.content(), "the org key must not stay in the page"
            page.locator("[data-testid='stSidebar']").get_by_role("button", name="Sign out").click()
            expect(page.locator("input[type='password']")).to_be_visible(timeout=30_000)
        finally:
            browser.close()
    (ARTIFACTS / "timings.json").write_text(json.dumps(timings, indent=2))
    print("seconds per page (click to idle):", timings)
