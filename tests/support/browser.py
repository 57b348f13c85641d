"""Playwright driving Debian's Chromium (packages chromium and chromium-driver; scripts/install-system-deps).

Never ``playwright install``: the browser is the system one, launched by path, with everything that
would reach the network at start-up turned off.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).is_file():
        raise RuntimeError(f"{CHROMIUM} not found: run scripts/install-system-deps (Debian chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Requests:
    """Every request a page made, and the ones that went anywhere but the allowed origins."""

    allowed: tuple[str, ...]
    seen: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    def route(self, route: Any) -> None:
        url = route.request.url
        if url.startswith(self.allowed):
            route.continue_()
        else:
            self.refused.append(url)
            route.abort()


def watch_requests(page: Any, *allowed: str) -> Requests:
    """Record every request of ``page``; continue those under ``allowed``, abort (and record) the rest."""
    requests = Requests(allowed)
    page.on("request", lambda request: requests.seen.append(request.url))
    page.route("**/*", requests.route)
    return requests


@contextlib.contextmanager
def screenshot_on_failure(page: Any, folder: Path, name: str) -> Iterator[None]:
    """Re-raise a failed assertion with the path of a full-page screenshot taken at that moment."""
    try:
        yield
    except AssertionError as err:
        path = folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        raise AssertionError(f"{err}\nscreenshot: {path}") from err
