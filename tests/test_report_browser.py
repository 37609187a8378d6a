"""The report in a real browser (headless Chromium, tests/browser.py): it renders with no
console error and fetches nothing, shows every run, filters narrow the rows, its links resolve
after the batch dir is moved, script output stays text, and 10,000 runs are paged."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from browser import browser, console_messages, open_page, screenshot
from conftest import Project
from fakes import Behaviour
from report_batches import (
    HOSTILE_LINE,
    MATRIX_JOBS,
    SCRIPT_LINE,
    big_manifest,
    default_behaviour,
    failing,
    run_fake_batch,
    succeeded_with,
)
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver import Chrome
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from safeagents_batch.jobs.plan import RunSpec
from safeagents_batch.report.page import write_report

pytestmark = pytest.mark.browser
__all__ = ["browser"]  # the fixture, imported for the tests below
PATIENCE_SECONDS = 30.0


def rows(driver: Chrome) -> list[str]:
    """The run ids of the table's rows, read in one go: a render may replace them meanwhile."""
    script = "return [...document.querySelectorAll('#run-body > tr')].map(r => r.dataset.run)"
    return [str(run_id) for run_id in driver.execute_script(script)]


def shown(driver: Chrome) -> str:
    return str(driver.find_element(By.ID, "shown").text)


def until_rows(driver: Chrome, count: int) -> list[str]:
    WebDriverWait(driver, PATIENCE_SECONDS).until(lambda d: len(rows(d)) == count)
    return rows(driver)


def no_alert(driver: Chrome) -> bool:
    try:
        driver.switch_to.alert  # noqa: B018 -- raises when there is none
    except NoAlertPresentException:
        return True
    return False


@pytest.fixture
def report(project: Project) -> Path:
    return write_report(run_fake_batch(project, default_behaviour)).html


def test_the_page_renders_every_run_with_no_console_error_and_no_request(
    browser: Chrome, report: Path, tmp_path: Path
) -> None:
    requested = open_page(browser, report)
    assert requested == [report.as_uri()]  # the page itself, nothing else
    resources = browser.execute_script("return performance.getEntriesByType('resource').length")
    assert resources == 0
    assert console_messages(browser) == []
    assert len(rows(browser)) == 13
    assert shown(browser) == "showing 1\u201313 of 13 matching runs (13 in the batch)"
    assert "2/2" in browser.find_element(By.ID, "matrix").text
    screenshot(browser, "report-fake-batch", tmp_path)


def test_filters_narrow_the_rows_and_headers_sort_them(browser: Chrome, report: Path) -> None:
    open_page(browser, report)
    Select(browser.find_element(By.ID, "f-status")).select_by_value("failed")
    assert until_rows(browser, 2) == ["grid-a-harmful-large-r1", "grid-a-harmful-large-r2"]
    Select(browser.find_element(By.ID, "f-status")).select_by_value("")
    Select(browser.find_element(By.ID, "f-job")).select_by_value("single")
    assert until_rows(browser, 1) == ["single-b"]
    Select(browser.find_element(By.ID, "f-job")).select_by_value("")
    matrix_filter = browser.find_element(By.CSS_SELECTOR, "#f-matrix select[data-key='m0']")
    Select(matrix_filter).select_by_value("jailbreak")
    assert len(until_rows(browser, 4)) == 4
    Select(matrix_filter).select_by_value("")
    browser.find_element(By.ID, "f-text").send_keys("small-r2")
    assert until_rows(browser, 3) == [
        "grid-a-benign-small-r2",
        "grid-a-harmful-small-r2",
        "grid-a-jailbreak-small-r2",
    ]
    browser.find_element(By.ID, "f-text").clear()
    browser.find_element(By.ID, "f-text").send_keys(" ")  # an input event; blank: no filter
    until_rows(browser, 13)
    run_header = browser.find_element(By.CSS_SELECTOR, "#run-head th")
    run_header.click()
    run_header.click()  # descending
    assert rows(browser)[0] == "single-b"
    assert console_messages(browser) == []


def test_links_resolve_to_files_after_the_batch_dir_is_moved(
    browser: Chrome, report: Path, tmp_path: Path
) -> None:
    moved = tmp_path / "moved" / "batch-copy"
    moved.parent.mkdir()
    shutil.move(report.parent, moved)
    open_page(browser, moved / report.name)
    anchors = browser.find_elements(By.CSS_SELECTOR, "a[href]")
    targets = [str(a.get_property("href")) for a in anchors]
    assert len(targets) > 13 * 4  # three logs and a dir per run, artifacts, batch files
    for url in targets:
        parsed = urlparse(url)
        assert parsed.scheme == "file", url
        path = Path(unquote(parsed.path))
        assert path.exists(), url
        assert moved in path.parents or path == moved, url


def test_script_output_shows_as_text_and_runs_nothing(browser: Chrome, report: Path) -> None:
    open_page(browser, report)
    tails = browser.find_elements(By.CSS_SELECTOR, "pre.tail")
    assert len(tails) == 2  # the failed runs' stderr, inline
    assert HOSTILE_LINE in tails[0].text and SCRIPT_LINE in tails[0].text
    errors = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "td.err")]
    assert any(SCRIPT_LINE in text for text in errors)
    assert browser.find_elements(By.CSS_SELECTOR, "img") == []
    assert len(browser.find_elements(By.TAG_NAME, "script")) == 5  # data, ours, d3, Plot, charts
    assert no_alert(browser)
    assert console_messages(browser) == []


def test_10000_runs_are_paged_and_filter_without_stalling(
    browser: Chrome, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    batch = tmp_path / "big"
    batch.mkdir()
    big_manifest(batch, 10_000)
    page = write_report(batch).html
    started = time.monotonic()
    open_page(browser, page)
    opened = time.monotonic() - started
    assert len(rows(browser)) == 100  # one page in the document, not 10,000 rows
    assert shown(browser) == "showing 1\u2013100 of 10000 matching runs (10000 in the batch)"
    started = time.monotonic()
    browser.find_element(By.ID, "f-text").send_keys("-r9999")
    assert until_rows(browser, 1) == ["job3-task-v9-r9999"]
    filtered = time.monotonic() - started
    browser.find_element(By.ID, "f-text").clear()
    browser.find_element(By.ID, "f-text").send_keys(" ")
    until_rows(browser, 100)
    Select(browser.find_element(By.ID, "f-status")).select_by_value("failed")
    WebDriverWait(browser, PATIENCE_SECONDS).until(lambda d: "of 500 matching" in shown(d))
    browser.find_element(By.ID, "next").click()
    WebDriverWait(browser, PATIENCE_SECONDS).until(lambda d: "101\u2013200 of 500" in shown(d))
    assert console_messages(browser) == []
    with capsys.disabled():  # figures for README, never asserted
        size = page.stat().st_size / 1024**2
        print(f"\n10,000 runs: {size:.2f} MiB, opened in {opened:.2f} s, text filter in "
              f"{filtered:.2f} s (with 120 ms of typing debounce)")  # fmt: skip


WIDE_JOBS = """\
version: 1
name: wide
frameworks:
  plain: {packages: []}
jobs:
  - name: a-job-whose-name-is-long-enough-to-matter
    framework: plain
    scripts: [scripts/a.py]
    matrix:
      MODEL: [a-model-deployment-with-a-long-name, another-model-deployment-name]
      PROMPT_VARIANT: [benign-with-a-long-description, harmful-with-a-long-description]
      TEMPERATURE: ["0.0", "0.7", "1.0"]
"""


def wide_behaviour(spec: RunSpec) -> Behaviour:
    """Results with many fields, values in the thousands; every fourth run fails."""
    if spec.repeat_index == 0 and dict(spec.matrix_env)["TEMPERATURE"] == "0.7":
        return failing("x" * 3000)
    return succeeded_with({f"a_rather_long_metric_name_{i}": 1234.5678 * i for i in range(30)})


def test_a_wide_batch_scrolls_inside_its_tables_and_means_read_as_numbers(
    browser: Chrome, project: Project, tmp_path: Path
) -> None:
    report = write_report(run_fake_batch(project, wide_behaviour, WIDE_JOBS)).html
    browser.set_window_size(1400, 1000)
    open_page(browser, report)
    page_width, view_width = browser.execute_script(
        "const d = document.documentElement; return [d.scrollWidth, d.clientWidth]"
    )
    table_width, box_width = browser.execute_script(
        "const t = document.getElementById('run-table');"
        "return [t.scrollWidth, t.parentElement.clientWidth]"
    )
    grid = browser.find_element(By.ID, "matrix").text
    screenshot(browser, "report-wide-batch", tmp_path)

    assert page_width <= view_width, (page_width, view_width)  # no sideways page scroll
    assert table_width > box_width  # the runs table is wider than the window: it scrolls
    assert "e+" not in grid and "1,230" in grid and "35,800" in grid, grid[:400]


def test_recorded_variables_are_columns_of_the_runs_table(
    browser: Chrome, project: Project
) -> None:
    text = MATRIX_JOBS.replace(
        "    env: {LOG_LEVEL: INFO}\n",
        "    env: {LOG_LEVEL: INFO, DEPLOYMENT: gpt-x-2024}\n    record_env: [DEPLOYMENT]\n",
    )
    report = write_report(run_fake_batch(project, default_behaviour, text)).html
    open_page(browser, report)
    until_rows(browser, 13)
    headers = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#run-table thead th")]
    column = headers.index("DEPLOYMENT")
    cells = browser.execute_script(
        f"return [...document.querySelectorAll('#run-body > tr')].map("
        f"r => r.children[{column}].textContent)"
    )
    assert sorted(set(cells)) == ["", "gpt-x-2024"]  # the grid job's 12 runs, not `single`
    assert cells.count("gpt-x-2024") == 12
    assert console_messages(browser) == []
