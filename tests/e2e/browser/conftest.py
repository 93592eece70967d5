"""Debian's Chromium, driven by Playwright (no downloaded browser). Screenshots go to
test-artifacts/ (or $BASTION_ARTIFACTS)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("BASTION_ARTIFACTS", Path(__file__).resolve().parents[3] / "test-artifacts"))


@pytest.fixture(scope="module")
def chromium():
    # module scope: Playwright's sync API keeps an event loop running in this thread while it is
    # open, which would break asyncio.run() in the tests an xdist worker runs after these
    if not os.path.exists(CHROMIUM):  # never a silent skip: the browser paths must be tested
        pytest.fail("chromium is needed for the browser tests (apt-get install chromium; scripts/services does it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()


@pytest.fixture()
def page(chromium):
    context = chromium.new_context()
    pg = context.new_page()
    pg.console_errors = []  # type: ignore[attr-defined]
    pg.on("console", lambda m: m.type == "error" and pg.console_errors.append(m.text))  # type: ignore[attr-defined]
    pg.on("pageerror", lambda e: pg.console_errors.append(str(e)))  # type: ignore[attr-defined]
    pg.failed_loads = []  # type: ignore[attr-defined]
    pg.on("response", lambda r: r.status >= 400 and pg.failed_loads.append((r.status, r.url)))  # type: ignore[attr-defined]
    yield pg
    context.close()


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def real_errors(page) -> list[str]:
    """Console errors, less the browser's own favicon probe (a 404 no page asked for)."""
    favicon_only = all(url.endswith("/favicon.ico") for _, url in page.failed_loads)
    return [e for e in page.console_errors if not (favicon_only and e.startswith("Failed to load resource"))]
