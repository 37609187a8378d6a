"""Headless Chromium for the report's browser tests: Debian's `chromium` driven by selenium
through Debian's `chromium-driver`. Nothing is downloaded: both paths are given, so selenium's
own driver manager never runs. A missing browser fails the tests (scripts/provision-browser
installs it), it never skips them."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver import Chrome
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = Path(os.environ.get("SAFEAGENTS_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("SAFEAGENTS_CHROMEDRIVER", "/usr/bin/chromedriver"))
ARTIFACTS = Path(__file__).resolve().parents[1] / "build" / "test-artifacts"
PATIENCE_SECONDS = 60.0  # an upper bound for a page to settle, not a timing assertion
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-default-apps",
    "--window-size=1400,1600",
)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Chrome]:
    """A fresh Chromium (its own profile dir) that logs console messages and network events."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if shutil.which(p) is None]
    if missing:
        pytest.fail(f"not installed: {', '.join(missing)}; run scripts/provision-browser")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def open_page(driver: Chrome, page: Path) -> list[str]:
    """Loads `page` from file:// and waits for its script; returns every URL the page asked
    for (from the performance log; Chromium's own start-up pages are drained before)."""
    driver.get("about:blank")
    browser_log(driver, "performance")
    driver.get(page.absolute().as_uri())
    WebDriverWait(driver, PATIENCE_SECONDS).until(
        lambda d: d.execute_script("return document.body.dataset.ready") == "true"
    )
    return requested_urls(driver)


def requested_urls(driver: Chrome) -> list[str]:
    urls = []
    for entry in browser_log(driver, "performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def browser_log(driver: Chrome, kind: str) -> list[dict[str, Any]]:
    """Chromium's log of `kind` since the last call (reading it empties it)."""
    entries: list[dict[str, Any]] = driver.get_log(kind)  # type: ignore[no-untyped-call]
    return entries


def console_messages(driver: Chrome) -> list[str]:
    return [f"{e['level']}: {e['message']}" for e in browser_log(driver, "browser")]


def screenshot(driver: Chrome, name: str, beside: Path) -> Path:
    """Saves the page as `name`.png in the test's files and in build/test-artifacts/ (kept
    after the run, for a look; tmp dirs of passing tests are removed)."""
    shot = beside / f"{name}.png"
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, min(int(height) + 200, 8000))  # the whole page, not the top
    driver.save_screenshot(str(shot))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, ARTIFACTS / shot.name)
    return shot
