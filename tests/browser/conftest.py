"""Real-browser tests: headless Chromium (Debian's ``chromium`` package) driven by Playwright against
the ``running_platform`` fixture. Screenshots land in test-artifacts/screenshots/.

No browser download ever happens here: Playwright is pointed at /usr/bin/chromium, which
``scripts/test`` installs with apt-get when it can. A missing browser is a test failure, never a skip.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("MAAS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"


@pytest.fixture(scope="session")
async def browser():
    try:
        from playwright.async_api import async_playwright
    except ImportError:  # pragma: no cover - scripts/install --test installs it
        pytest.fail("playwright is not installed: run scripts/install --test (pip install playwright)")
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        pytest.fail(f"no Chromium at {CHROMIUM}: install Debian's package (apt-get install -y chromium); "
                    "scripts/test does it when run as root")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


class Console:
    """One logged-in browser page on the console, with screenshots and JS-error tracking."""

    def __init__(self, page, base_url: str, name: str):
        self.page, self.base_url, self.name = page, base_url, name
        self.errors: list[str] = []
        self.shots = 0
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("console", lambda msg: self.errors.append(f"console.{msg.type}: {msg.text}")
                if msg.type == "error" and "Failed to load resource" not in msg.text else None)

    async def goto(self, path: str) -> None:
        await self.page.goto(self.base_url + path)

    async def shot(self, step: str) -> Path:
        self.shots += 1
        path = SCREENSHOTS / f"{self.name}-{self.shots:02d}-{step}.png"
        await self.page.screenshot(path=str(path), full_page=True)
        return path


def _test_name(request) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", request.node.name)[:60]


@pytest.fixture
async def console(browser, running_platform, request):
    """A fresh browser context, logged in with the admin's token (the login journey uses the form)."""
    context = await browser.new_context(viewport={"width": 1400, "height": 900}, locale="en-US")
    page = await context.new_page()
    page.set_default_timeout(20_000)
    ui = Console(page, running_platform["url"], _test_name(request))
    admin = running_platform["admin"]
    await ui.goto("/console/login")
    await page.evaluate("([token, user]) => { localStorage.setItem('maas.token', token);"
                        " localStorage.setItem('maas.user', JSON.stringify(user)); localStorage.setItem('maas.lang', 'en'); }",
                        [admin.token, {"username": admin.username}])
    yield ui
    await context.close()
    assert not [e for e in ui.errors if e.startswith("pageerror")], ui.errors
