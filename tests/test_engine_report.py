"""The example batch for real (jobs/example.yaml and its scripts, copied into a temp project),
on the Docker engine: `run` leaves report.html and the results files, the scripts' result.json
files are in them, and the page opens in Chromium with no console error and no request."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import docker
import pytest
from browser import browser, console_messages, open_page, screenshot
from selenium.webdriver import Chrome
from selenium.webdriver.common.by import By

from safeagents_batch.cli.main import main
from safeagents_batch.core.errors import EXIT_OK

pytestmark = [pytest.mark.docker, pytest.mark.browser]
__all__ = ["browser"]
JOBS = Path(__file__).resolve().parents[1] / "jobs"


def test_the_example_batch_leaves_a_report_with_its_results(
    engine: docker.DockerClient,
    browser: Chrome,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    project = tmp_path / "jobs"
    shutil.copytree(JOBS / "scripts", project / "scripts")
    shutil.copyfile(JOBS / "example.yaml", project / "example.yaml")
    assert main(["run", str(project / "example.yaml"), "--no-progress"]) == EXIT_OK
    out = capsys.readouterr().out.splitlines()
    [batch] = [p for p in (project / "logs").iterdir() if p.is_dir()]
    assert f"report: {batch / 'report.html'}" in out
    rows = [json.loads(line) for line in (batch / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 9 and {r["status"] for r in rows} == {"succeeded"}
    assert all(r["result_note"] is None and r["passed"] is True for r in rows)
    refused = {(r["job"], r["TASK_VARIANT"]): r["refused"] for r in rows}
    assert refused[("langgraph-safety", "harmful")] is True
    assert refused[("agents-safety", "benign")] is False
    requested = open_page(browser, batch / "report.html")
    assert requested == [(batch / "report.html").as_uri()]
    assert console_messages(browser) == []
    assert len(browser.find_elements(By.CSS_SELECTOR, "#run-body > tr")) == 9
    matrix = browser.find_element(By.ID, "matrix").text
    assert "langgraph-safety" in matrix and "2/2" in matrix and "refused 1" in matrix
    images = browser.find_elements(By.CSS_SELECTOR, "#images tbody tr")
    assert len(images) == 2
    screenshot(browser, "report-example", tmp_path)
