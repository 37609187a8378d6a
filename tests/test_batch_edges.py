"""Edges a review of the batch path found, each pinned by a test on the in-memory backend:
secrets that could reach the code snapshot, a journal write that fails half way, an exception
in the pool, a refused rerun, a journal event that does not fit, a cancelled rerun's output."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from conftest import Project
from fakes import FakeBackend, failed

from safeagents_batch.cli.output import LineProgress
from safeagents_batch.core.errors import UsageError
from safeagents_batch.execution.batch import BatchOptions, BatchOutcome, run_batch
from safeagents_batch.execution.reporting import CollectingReporter, Progress
from safeagents_batch.execution.rerun import RerunChoice, rerun_batch
from safeagents_batch.jobs.load import load_and_expand
from safeagents_batch.records.events import UnstartedEvent
from safeagents_batch.records.journal import JournalWriter, read_events
from safeagents_batch.records.layout import JOURNAL as JOURNAL_NAME
from safeagents_batch.records.manifest import load_manifest
from safeagents_batch.records.model import RunRecord

SECRET = "sk-never-on-disk-0451"
HEADER = "version: 1\nname: t\nframeworks:\n  plain: {packages: []}\njobs:\n"


def run(path: Path, backend: FakeBackend, **options: object) -> BatchOutcome:
    jobs_file, specs = load_and_expand(path)
    chosen = BatchOptions(**options)  # type: ignore[arg-type]
    return run_batch(jobs_file, specs, backend, CollectingReporter(), chosen)


def holding(directory: Path, text: str) -> list[str]:
    return [
        p.relative_to(directory).as_posix()
        for p in directory.rglob("*")
        if p.is_file() and not p.is_symlink() and text.encode() in p.read_bytes()
    ]


def test_no_jobs_env_file_ships_even_beside_another_jobs_script(project: Project) -> None:
    """`--only a`: job b's env file sits beside a's script; and a link to an env file."""
    project.write("scripts/b.env", f"B_API_KEY={SECRET}\n")
    project.write("top.env", f"TOP_KEY={SECRET}\n")
    os.symlink(project.root / "top.env", project.root / "scripts" / "settings.env")
    path = project.jobs(
        HEADER + "  - {name: a, framework: plain, scripts: [scripts/a.py], env_file: top.env}\n"
        "  - {name: b, framework: plain, scripts: [scripts/b.py], env_file: scripts/b.env}\n"
    )

    outcome = run(path, FakeBackend(), only="a")

    assert outcome.exit_code == 0
    assert holding(outcome.batch_dir, SECRET) == []


def test_a_journal_write_that_fails_half_way_is_cut_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = JournalWriter(tmp_path / JOURNAL_NAME)
    writer.append(event(1))
    real_write = os.write

    def half_then_full_disk(fd: int, data: bytes | memoryview) -> int:
        monkeypatch.setattr(os, "write", failing_write)
        return real_write(fd, bytes(data)[:10])

    def failing_write(fd: int, data: bytes | memoryview) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full_disk)
    with pytest.raises(OSError, match="No space"):
        writer.append(event(2))
    monkeypatch.setattr(os, "write", real_write)
    writer.append(event(3))
    writer.close()

    events = list(read_events(tmp_path / JOURNAL_NAME))
    assert [(e.seq, e.run_id) for e in events if isinstance(e, UnstartedEvent)] == [
        (1, "r1"),
        (2, "r3"),
    ]


class ExplodingProgress:
    def finished(self, record: RunRecord) -> None:
        raise RuntimeError("the display broke")

    def close(self) -> None:
        pass


class ExplodingReporter(CollectingReporter):
    def progress(self, total: int) -> Progress:
        return ExplodingProgress()


def test_an_exception_in_the_pool_never_leaves_the_batch_running(project: Project) -> None:
    path = project.jobs(HEADER + "  - {name: a, framework: plain, scripts: [scripts/a.py]}\n")
    jobs_file, specs = load_and_expand(path)

    with pytest.raises(RuntimeError, match="the display broke"):
        run_batch(jobs_file, specs, FakeBackend(), ExplodingReporter())

    [batch_dir] = [p for p in (project.root / "logs").iterdir() if p.is_dir()]
    assert load_manifest(batch_dir).state == "interrupted"
    assert json.loads((batch_dir / "manifest.json").read_text())["state"] == "interrupted"


def test_a_refused_rerun_with_an_edited_jobs_file_changes_nothing(project: Project) -> None:
    base = HEADER + "  - {name: a, framework: plain, scripts: [scripts/a.py]}\n"
    path = project.jobs(base)
    outcome = run(path, FakeBackend(behaviours={"a-a": [failed()]}))
    edited = project.jobs(
        base + "  - {name: b, framework: plain, scripts: [scripts/b.py],"
        " env_passthrough: [SAB_NOT_SET_ANYWHERE]}\n",
        name="edited.yaml",
    )

    with pytest.raises(UsageError, match="SAB_NOT_SET_ANYWHERE"):
        rerun_batch(
            outcome.batch_dir, FakeBackend(), CollectingReporter(), RerunChoice(jobs_file=edited)
        )

    manifest = load_manifest(outcome.batch_dir)
    assert list(manifest.runs) == ["a-a"]
    assert manifest.jobs_file.path == str(path)


def test_a_journal_event_that_does_not_fit_is_one_clear_error(project: Project) -> None:
    path = project.jobs(HEADER + "  - {name: a, framework: plain, scripts: [scripts/a.py]}\n")
    batch_dir = run(path, FakeBackend()).batch_dir
    last = load_manifest(batch_dir).journal.seq
    gone = {"v": 2, "seq": last + 1, "event": "unstarted", "run_id": "gone", "at": "x"}
    with (batch_dir / JOURNAL_NAME).open("a") as journal:
        journal.write(json.dumps({**gone, "status": "error", "reason": "r"}) + "\n")

    with pytest.raises(UsageError, match=f"journal event {last + 1} does not fit"):
        load_manifest(batch_dir)


def test_a_cancelled_rerun_sums_up_the_runs_it_did_not_start(project: Project) -> None:
    """Runs with attempts from the first turn, stopped before this turn's: one summary line."""
    path = project.jobs(
        HEADER + "  - {name: a, framework: plain, scripts: [scripts/a.py], repeat: 5}\n"
    )
    outcome = run(path, FakeBackend(behaviours={f"a-a-r{k}": [failed()] for k in range(1, 6)}))
    records = list(load_manifest(outcome.batch_dir).runs.values())
    stream = io.StringIO()
    progress = LineProgress(5, stream)
    for record in records[:1]:
        progress.finished(record)  # an attempt of this turn that failed: its own line
    for record in records[1:]:
        progress.finished(record.not_started("cancelled", "cancelled before it started"))
    progress.close()

    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and "a-a-r1" in lines[0]
    assert lines[1] == "runs not started: 4 cancelled before they started"


def event(n: int) -> UnstartedEvent:
    return UnstartedEvent(run_id=f"r{n}", status="cancelled", reason=str(n))
