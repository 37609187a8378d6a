"""A running batch's page in Chromium: it reloads itself while the batch runs, and once the
page the batch ends with is in its place, it stops."""

from __future__ import annotations

import time

import pytest
from browser import browser, console_messages, open_page
from conftest import Project
from fakes import FakeBackend
from report_batches import MATRIX_JOBS, default_behaviour
from selenium.webdriver import Chrome
from selenium.webdriver.support.ui import WebDriverWait
from test_report_live import ReportMidway

from safeagents_batch.execution.batch import run_batch
from safeagents_batch.jobs.load import load_and_expand
from safeagents_batch.report.page import write_report

pytestmark = pytest.mark.browser
__all__ = ["browser"]
PATIENCE_SECONDS = 30.0  # an upper bound for a reload to come, not a timing assertion
STILL_SECONDS = 3.0  # three reload periods of the running page: a page that reloads would


def loaded_at(driver: Chrome) -> float:
    return float(driver.execute_script("return performance.timeOrigin"))


def reloaded(driver: Chrome, since: float) -> float:
    """Waits for the page to load anew (and its script to run); returns when it did."""
    WebDriverWait(driver, PATIENCE_SECONDS).until(
        lambda d: (
            loaded_at(d) != since
            and d.execute_script("return document.body && document.body.dataset.ready") == "true"
        )
    )
    return loaded_at(driver)


def test_a_running_batchs_page_reloads_until_the_batch_has_finished(
    browser: Chrome, project: Project
) -> None:
    jobs_file, specs = load_and_expand(project.write("jobs.yaml", MATRIX_JOBS))
    backend = FakeBackend({s.run_id: [default_behaviour(s)] for s in specs})
    reporter = ReportMidway(refresh=1)
    batch = run_batch(jobs_file, specs, backend, reporter).batch_dir
    page = batch / "report.html"
    assert reporter.midway is not None
    page.write_text(reporter.midway, encoding="utf-8")  # the page as it was mid-batch

    open_page(browser, page)
    first = loaded_at(browser)
    assert "state running" in browser.find_element("tag name", "header").text
    second = reloaded(browser, first)  # it reloads by itself

    write_report(batch)  # the batch's last page, finished
    last = reloaded(browser, second)
    assert "state finished" in browser.find_element("tag name", "header").text
    time.sleep(STILL_SECONDS)
    assert loaded_at(browser) == last  # and it stays
    assert console_messages(browser) == []
