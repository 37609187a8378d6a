"""The report of a running batch: `report` works while a batch runs (its state says so, the
page reloads itself), `run --report SECONDS` rewrites the page as the batch goes (at most that
often, never after the batch's own last report), and a finished batch's page stays still."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest
from conftest import Project
from fakes import FakeBackend
from report_batches import MATRIX_JOBS, default_behaviour, run_fake_batch

import safeagents_batch.report.page as page_module
from safeagents_batch.cli.live import LiveReport, refresh_seconds
from safeagents_batch.cli.output import ConsoleReporter
from safeagents_batch.execution.batch import run_batch
from safeagents_batch.execution.reporting import CollectingReporter, Progress, SilentProgress
from safeagents_batch.jobs.load import load_and_expand
from safeagents_batch.records.model import RunRecord
from safeagents_batch.report.batch import open_batch
from safeagents_batch.report.page import write_report

REFRESH = re.compile(r'<meta http-equiv="refresh" content="(\d+)">')


class ReportMidway(CollectingReporter):
    """Writes the batch's report when its first run ends, as `report` would from a shell."""

    def __init__(self, refresh: int = 7) -> None:
        super().__init__()
        self.midway: str | None = None
        self.refresh = refresh

    def progress(self, total: int) -> Progress:
        reporter = self

        class _Midway(SilentProgress):
            def finished(self, record: RunRecord) -> None:
                if reporter.midway is None and reporter.batch_dir is not None:
                    html = write_report(reporter.batch_dir, refresh=reporter.refresh).html
                    reporter.midway = html.read_text("utf-8")

        return _Midway()


def test_the_report_of_a_running_batch_says_so_and_reloads_until_it_ends(
    project: Project,
) -> None:
    jobs_file, specs = load_and_expand(project.write("jobs.yaml", MATRIX_JOBS))
    backend = FakeBackend({s.run_id: [default_behaviour(s)] for s in specs})
    reporter = ReportMidway()
    outcome = run_batch(jobs_file, specs, backend, reporter)

    assert reporter.midway is not None
    assert "state <b>running</b>" in reporter.midway
    assert REFRESH.findall(reporter.midway) == ["7"]
    finished = write_report(outcome.batch_dir).html.read_text("utf-8")
    assert "state <b>finished</b>" in finished and REFRESH.findall(finished) == []


def test_run_report_writes_the_page_as_the_batch_goes(
    project: Project, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[tuple[Path, int]] = []
    real = page_module.write_report

    def counting(
        batch_dir: Path, *args: object, refresh: int = 30, samples: bool = True
    ) -> page_module.ReportFiles:
        calls.append((batch_dir, refresh))
        assert not samples  # a live write leaves samples.csv to the end's
        return real(batch_dir, refresh=refresh, samples=samples)

    monkeypatch.setattr(page_module, "write_report", counting)
    jobs_file, specs = load_and_expand(project.write("jobs.yaml", MATRIX_JOBS))
    backend = FakeBackend({s.run_id: [default_behaviour(s)] for s in specs})
    outcome = run_batch(jobs_file, specs, backend, ConsoleReporter(bar=False, report_every=3600))

    # An hour apart: the one write is the one as the batch starts, and it says running.
    assert calls == [(outcome.batch_dir, 3600)]
    page = (outcome.batch_dir / "report.html").read_text("utf-8")
    assert "state <b>running</b>" in page and REFRESH.findall(page) == ["3600"]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_writes_are_paced_and_never_two_at_once(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = run_fake_batch(project, default_behaviour)
    release = threading.Event()
    writes: list[int] = []

    def slow(batch_dir: Path, *args: object, refresh: int = 30, samples: bool = True) -> None:
        writes.append(refresh)
        release.wait(60)  # an upper bound: the test releases it

    monkeypatch.setattr(page_module, "write_report", slow)
    clock = Clock()
    view = open_batch(batch)
    record = next(iter(view.manifest.runs.values()))
    view.close()
    live = LiveReport(SilentProgress(), batch, every=10, clock=clock)  # the first write
    clock.now = 20
    live.finished(record)  # due, but the first is still writing: skipped
    release.set()
    live.close()  # waits for the write in flight
    assert writes == [10]
    live.finished(record)  # 20 s after the first began: due, and nothing in flight
    clock.now = 25
    live.finished(record)  # 5 s after: not due
    live.close()
    assert writes == [10, 10]


def test_the_page_reloads_at_most_once_a_second() -> None:
    assert [refresh_seconds(s) for s in (0, 0.4, 2.6, 60)] == [1, 1, 3, 60]
