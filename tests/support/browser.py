"""Debian's Chromium through Playwright, for the page tests (``tests/e2e``).

Never a downloaded browser: ``executable_path`` is the system's chromium, and a
missing one fails the session at once with the command that installs it.
Set ``SIEVE_E2E_SCREENSHOTS=<folder>`` to keep a screenshot of each page there.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
TIMEOUT_MS = 15_000
SCREENSHOTS = os.environ.get("SIEVE_E2E_SCREENSHOTS", "")


@pytest.fixture(scope="session")  # before live_server: a missing browser fails fast
def browser() -> Iterator[Any]:
    """One headless Chromium for the session."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests need Debian's chromium package "
            "(`make test` installs it; by hand: apt-get install -y chromium)",
            pytrace=False,
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            "the python package playwright is missing: pip install -e '.[dev]'", pytrace=False
        )
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.fixture
def console_errors() -> list[str]:
    """Console errors and uncaught exceptions of the test's page, filled as they happen."""
    return []


@contextmanager
def open_tab(browser: Any, url: str, console_errors: list[str]) -> Iterator[Any]:
    """A tab in a fresh context on ``url`` whose console errors go to ``console_errors``."""
    context = browser.new_context(base_url=url, viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    tab.on("console", lambda msg: console_errors.append(msg.text) if msg.type == "error" else None)
    tab.on("pageerror", lambda exc: console_errors.append(f"uncaught: {exc}"))
    try:
        yield tab
    finally:
        context.close()


def screenshot(page: Any, name: str) -> None:
    """Keep a full-page screenshot under ``SIEVE_E2E_SCREENSHOTS``, when it is set."""
    if SCREENSHOTS:
        page.screenshot(path=str(Path(SCREENSHOTS) / name), full_page=True)
