"""The report's charts in a real browser (headless Chromium, tests/browser.py): drawn by the
inlined Observable Plot with no console error (a CSP violation is one) and no request; a mark
per matrix cell, per attempt; a field chosen redraws its job's chart; batch text stays text;
10,000 attempts are drawn. And the vendored libraries are the files their README names."""

from __future__ import annotations

import hashlib
import json
import re
import time
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from browser import browser, console_messages, open_page, screenshot
from conftest import Project
from report_batches import (
    HOSTILE_LINE,
    SCRIPT_LINE,
    big_manifest,
    default_behaviour,
    run_fake_batch,
)
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver import Chrome
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from safeagents_batch.report import page as report_page
from safeagents_batch.report.page import write_report

pytestmark = pytest.mark.browser
__all__ = ["browser"]  # the fixture, imported for the tests below
PATIENCE_SECONDS = 30.0


def open_charts(driver: Chrome, report: Path) -> tuple[list[str], dict[str, Any]]:
    """Opens the report, waits for its charts; the URLs it asked for and its page data."""
    requested = open_page(driver, report)
    WebDriverWait(driver, PATIENCE_SECONDS).until(
        lambda d: d.execute_script("return document.body.dataset.charts") == "drawn"
    )
    script = "return document.getElementById('report-data').textContent"
    return requested, json.loads(driver.execute_script(script))


def count(driver: Chrome, selector: str) -> int:
    return int(driver.execute_script(f"return document.querySelectorAll({selector!r}).length"))


def first_fields(cells: list[dict[str, Any]]) -> dict[str, str]:
    """Each job's first field: what its chart shows until another is chosen."""
    fields: dict[str, str] = {}
    for cell in cells:
        fields.setdefault(cell["job"], cell["field"])
    return fields


def shown_cells(cells: list[dict[str, Any]], job: str, field: str) -> list[dict[str, Any]]:
    return [c for c in cells if c["job"] == job and c["field"] == field]


def dots(driver: Chrome, job: str) -> int:
    return count(driver, f'.cell-chart[data-job="{job}"] g.cell-mean circle')


@pytest.fixture
def report(project: Project) -> Path:
    return write_report(run_fake_batch(project, default_behaviour)).html


def test_charts_draw_a_mark_per_cell_attempt_and_bin_with_no_error_and_no_request(
    browser: Chrome, report: Path, tmp_path: Path
) -> None:
    requested, data = open_charts(browser, report)
    assert requested == [report.as_uri()]  # the libraries are inlined: nothing fetched
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0
    assert console_messages(browser) == []  # nor a CSP violation (d3's `new Function` unused)

    cells = data["cells"]
    fields = first_fields(cells)
    assert set(fields) == {"grid", "single"}
    for job, field in fields.items():
        assert dots(browser, job) == len(shown_cells(cells, job, field)) > 0
    shown = [c for job, field in fields.items() for c in shown_cells(cells, job, field)]
    assert count(browser, "g.cell-mean circle") == len(shown)
    bounded = [c for c in shown if c["lo"] is not None and c["hi"] is not None]
    assert count(browser, "g.cell-interval line") == len(bounded) > 0

    assert len(data["attempts"]) == 13
    assert count(browser, "#timeline g.attempt rect") == 13
    assert count(browser, "#durations g.duration rect") > 0
    assert browser.find_elements(By.CSS_SELECTOR, "#charts figure svg")  # with legends
    screenshot(browser, "report-charts", tmp_path)


def test_choosing_a_field_redraws_its_jobs_chart_and_a_tip_names_the_cell(
    browser: Chrome, report: Path
) -> None:
    _, data = open_charts(browser, report)
    select = Select(browser.find_element(By.CSS_SELECTOR, '.cell-chart[data-job="grid"] select'))
    options = [str(o.get_attribute("value")) for o in select.options]
    assert options == list(dict.fromkeys(c["field"] for c in data["cells"] if c["job"] == "grid"))
    assert select.first_selected_option.get_attribute("value") == options[0]
    select.select_by_value(options[1])
    expected = len(shown_cells(data["cells"], "grid", options[1]))
    WebDriverWait(browser, PATIENCE_SECONDS).until(lambda d: dots(d, "grid") == expected)
    assert options[1] in browser.find_element(By.CSS_SELECTOR, '.cell-chart[data-job="grid"]').text

    dot = browser.find_element(By.CSS_SELECTOR, '.cell-chart[data-job="grid"] g.cell-mean circle')
    ActionChains(browser).move_to_element(dot).perform()
    tip = '.cell-chart[data-job="grid"] g[aria-label="tip"]'
    WebDriverWait(browser, PATIENCE_SECONDS).until(lambda d: "n" in tip_text(d, tip))
    assert "VARIANT=" in tip_text(browser, tip)
    assert console_messages(browser) == []


def tip_text(driver: Chrome, selector: str) -> str:
    return str(driver.execute_script(f"return document.querySelector({selector!r}).textContent"))


def without_cells(monkeypatch: pytest.MonkeyPatch) -> None:
    """Page data as before the matrix estimates were added: no `cells` at all."""
    original = report_page.page_data

    def page_data(*args: Any) -> dict[str, Any]:
        data = original(*args)
        del data["cells"]
        return data

    monkeypatch.setattr(report_page, "page_data", page_data)


def test_a_page_without_cells_draws_the_other_charts(
    browser: Chrome, project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    without_cells(monkeypatch)
    report = write_report(run_fake_batch(project, default_behaviour)).html
    _, data = open_charts(browser, report)
    assert "cells" not in data
    assert browser.find_elements(By.CSS_SELECTOR, "#cell-charts > *") == []
    assert count(browser, "#timeline g.attempt rect") == 13
    assert console_messages(browser) == []


def test_batch_text_in_a_chart_stays_text(
    browser: Chrome, project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = report_page.page_data

    def page_data(*args: Any) -> dict[str, Any]:
        data = original(*args)
        hostile = {"job": HOSTILE_LINE, "cell": SCRIPT_LINE, "field": HOSTILE_LINE, "n": 2,
                   "mean": 0.5, "lo": 0.1, "hi": 0.9, "method": "wilson"}  # fmt: skip
        data["cells"] = [*data["cells"], hostile]
        data["attempts"][0]["lane"] = HOSTILE_LINE
        return data

    monkeypatch.setattr(report_page, "page_data", page_data)
    report = write_report(run_fake_batch(project, default_behaviour)).html
    open_charts(browser, report)
    assert browser.find_elements(By.CSS_SELECTOR, "img") == []
    charts = browser.find_element(By.ID, "charts").text
    assert HOSTILE_LINE in charts and SCRIPT_LINE in charts
    try:
        browser.switch_to.alert  # noqa: B018 -- raises when there is none
        pytest.fail("an alert ran")
    except NoAlertPresentException:
        pass
    assert console_messages(browser) == []


def test_10000_runs_draw_every_attempt(
    browser: Chrome, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    batch = tmp_path / "big"
    batch.mkdir()
    big_manifest(batch, 10_000)
    page = write_report(batch).html
    started = time.monotonic()
    _, data = open_charts(browser, page)
    opened = time.monotonic() - started
    assert count(browser, "#timeline g.attempt rect") == len(data["attempts"]) == 10_000
    fields = first_fields(data["cells"])
    assert set(fields) == {"job1", "job3"}  # the jobs whose runs left a result.json
    for job, field in fields.items():
        assert dots(browser, job) == len(shown_cells(data["cells"], job, field))
    assert console_messages(browser) == []
    with capsys.disabled():  # a figure, never asserted (benchmarks/report_open.py measures)
        print(f"\n10,000 runs with charts: opened and drawn in {opened:.2f} s")


def test_the_vendored_libraries_are_the_files_their_readme_names() -> None:
    """Unmodified npm files: what tests/test_report.py leaves out of its scan of the page."""
    vendor = resources.files("safeagents_batch.report").joinpath("templates", "vendor")
    readme = vendor.joinpath("README.md").read_text("utf-8")
    named = dict(re.findall(r"^\| `([\w.]+\.js)` \|.*\| `([0-9a-f]{64})` \|$", readme, re.M))
    assert set(named) == {"d3.min.js", "plot.umd.min.js"}
    for name, digest in named.items():
        assert hashlib.sha256(vendor.joinpath(name).read_bytes()).hexdigest() == digest, name
    for licence in ("LICENSE.d3", "LICENSE.plot"):
        assert "Permission to use, copy, modify" in vendor.joinpath(licence).read_text("utf-8")
