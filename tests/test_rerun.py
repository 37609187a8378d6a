"""rerun: rerun_batch against the in-memory backend (tests/fakes.py), no engine.

Which runs run again, the code they run, recovery after a crash, merging an edited jobs file,
and the refusal to rerun from a snapshot whose secrets were redacted.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import Project
from fakes import Behaviour, FakeBackend, failed
from old_batches import write_as_version_1
from records import outcome_of

import safeagents_batch.execution.batch as batch_module
from safeagents_batch.core.errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_RUNS_FAILED, UsageError
from safeagents_batch.execution.batch import BatchOptions, BatchOutcome, run_batch
from safeagents_batch.execution.reporting import CollectingReporter
from safeagents_batch.execution.rerun import INTERRUPTED_REASON, RerunChoice, rerun_batch
from safeagents_batch.jobs.load import load_and_expand
from safeagents_batch.jobs.schema import validate_against
from safeagents_batch.jobs.secrets import REDACTED
from safeagents_batch.report.batch import open_batch

HEADER = """\
version: 1
name: t
frameworks:
  plain: {packages: []}
"""
TWO_SCRIPTS = "jobs:\n  - {name: j, framework: plain, scripts: [scripts/a.py, scripts/b.py]}"


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch_module, "MAX_BACKOFF_SECONDS", 0.01)


def jobs(project: Project, body: str, name: str = "jobs.yaml") -> Path:
    return project.write(name, HEADER + body.strip("\n") + "\n")


def run(path: Path, backend: FakeBackend) -> BatchOutcome:
    jobs_file, specs = load_and_expand(path)
    return run_batch(jobs_file, specs, backend, CollectingReporter(), BatchOptions())


def manifest_json(batch_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((batch_dir / "manifest.json").read_text("utf-8"))
    assert validate_against("manifest", data) == []
    return data


def runs_of(batch_dir: Path) -> dict[str, dict[str, Any]]:
    return {r["run_id"]: r for r in manifest_json(batch_dir)["runs"]}


def statuses(run: dict[str, Any]) -> list[str]:
    return [outcome_of(a)["status"] for a in run["attempts"]]


def requested(backend: FakeBackend) -> list[str]:
    return sorted(r.run_id for r in backend.requests)


# -- which runs ------------------------------------------------------------------------


def test_a_rerun_runs_only_the_runs_that_did_not_succeed(project: Project) -> None:
    path = jobs(project, TWO_SCRIPTS)
    batch = run(path, FakeBackend(behaviours={"j-b": [failed()]})).batch_dir
    backend = FakeBackend()
    reporter = CollectingReporter()

    outcome = rerun_batch(batch, backend, reporter)

    assert requested(backend) == ["j-b"]
    runs = runs_of(batch)
    assert statuses(runs["j-a"]) == ["succeeded"]
    assert statuses(runs["j-b"]) == ["failed", "succeeded"]
    assert [a["number"] for a in runs["j-b"]["attempts"]] == [1, 2]
    assert backend.requests[0].attempt == 2
    assert runs["j-b"]["log_dir"] == "runs/j-b/attempt-2"  # relative to the batch dir
    assert (batch / "runs" / "j-b" / "attempt-1" / "console.log").is_file()  # kept
    assert manifest_json(batch)["state"] == "finished"
    assert outcome.exit_code == EXIT_OK
    assert reporter.notices == [f"rerunning 1 of 2 runs in {batch}"]


def test_a_rerun_of_everything_runs_every_run_again(project: Project) -> None:
    path = jobs(project, TWO_SCRIPTS)
    batch = run(path, FakeBackend(behaviours={"j-b": [failed()]})).batch_dir
    backend = FakeBackend(behaviours={"j-b": [failed()]})

    outcome = rerun_batch(batch, backend, CollectingReporter(), RerunChoice(everything=True))

    assert requested(backend) == ["j-a", "j-b"]
    runs = runs_of(batch)
    assert statuses(runs["j-a"]) == ["succeeded", "succeeded"]
    assert statuses(runs["j-b"]) == ["failed", "failed"]
    assert outcome.exit_code == EXIT_RUNS_FAILED


def test_a_rerun_runs_the_code_as_it_is_now_from_a_new_snapshot(project: Project) -> None:
    path = jobs(project, TWO_SCRIPTS)
    batch = run(path, FakeBackend()).batch_dir
    project.write("scripts/b.py", "print('fixed')\n")
    backend = FakeBackend()

    rerun_batch(batch, backend, CollectingReporter(), RerunChoice(everything=True))

    digests = [a["code_digest"] for a in runs_of(batch)["j-b"]["attempts"]]
    assert len(digests) == 2 and digests[0] != digests[1]
    assert sorted(p.name for p in (batch / "code").iterdir()) == sorted(digests)
    assert (batch / "code" / digests[0] / "b.py").read_text() == "print('hi')\n"
    assert (batch / "code" / digests[1] / "b.py").read_text() == "print('fixed')\n"
    assert {r.code.digest for r in backend.requests} == {digests[1]}


# -- crash recovery --------------------------------------------------------------------


def crash(batch: Path, run_id: str) -> None:
    """The manifest as an orchestrator leaves it when it dies while `run_id`'s attempt runs."""
    path = batch / "manifest.json"
    data = json.loads(path.read_text("utf-8"))
    run = next(r for r in data["runs"] if r["run_id"] == run_id)
    last = run["attempts"][-1]
    if "outcome" in last:  # it never ended
        last["outcome"] = None
    else:  # as versions 1 and 2 wrote it
        last.update(status="running", ended_at=None, duration_seconds=None, exit_code=None)
    run.update(status="running", ended_at=None, duration_seconds=None, exit_code=None)
    data["summary"]["succeeded"] -= 1
    data["summary"]["running"] += 1
    data.update(state="running", finished_at=None)
    assert validate_against("manifest", data) == []
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


@pytest.mark.parametrize("leftovers", [0, 2])
def test_a_rerun_after_a_crash_closes_the_running_attempt_and_sweeps(
    project: Project, leftovers: int
) -> None:
    path = jobs(project, TWO_SCRIPTS)
    batch = run(path, FakeBackend()).batch_dir
    crash(batch, "j-b")
    batch_id = manifest_json(batch)["batch_id"]
    backend = FakeBackend(leftovers={batch_id: leftovers} if leftovers else {})
    reporter = CollectingReporter()

    outcome = rerun_batch(batch, backend, reporter)

    runs = runs_of(batch)
    closed, again = runs["j-b"]["attempts"]
    closed_as = outcome_of(closed)
    assert (closed["number"], closed_as["status"], closed_as["error"]) == (
        1,
        "error",
        INTERRUPTED_REASON,
    )
    assert closed_as["ended_at"] is not None
    assert (again["number"], outcome_of(again)["status"]) == (2, "succeeded")
    assert statuses(runs["j-a"]) == ["succeeded"]
    assert requested(backend) == ["j-b"]
    assert backend.swept == [batch_id, batch_id]  # before anything runs, and at the end
    removed = [f"removed {leftovers} stale container(s) of this batch"] if leftovers else []
    assert reporter.notices == [*removed, f"rerunning 1 of 2 runs in {batch}"]
    data = manifest_json(batch)
    assert data["state"] == "finished"
    assert data["summary"]["running"] == 0
    assert outcome.exit_code == EXIT_OK


# -- a moved batch dir -----------------------------------------------------------------


def move(batch: Path, to: Path) -> Path:
    to.parent.mkdir(parents=True)
    shutil.move(batch, to)
    return to


def test_a_moved_batch_dir_reruns_where_it_is_and_records_its_attempts_relative(
    project: Project, tmp_path: Path
) -> None:
    path = jobs(project, TWO_SCRIPTS)
    first = FakeBackend(behaviours={"j-b": [failed()]}, write_build_logs=True)
    batch = run(path, first).batch_dir
    moved = move(batch, tmp_path / "archive" / "renamed")

    outcome = rerun_batch(moved, FakeBackend(write_build_logs=True), CollectingReporter())

    assert (outcome.batch_dir, outcome.exit_code) == (moved, EXIT_OK)
    assert not batch.exists()  # nothing written where it was
    data = manifest_json(moved)
    assert data["manifest_version"] == 3
    assert data["batch_dir"] == str(batch)  # informational: where it was created
    runs = {r["run_id"]: r for r in data["runs"]}
    assert [a["log_dir"] for a in runs["j-b"]["attempts"]] == [
        "runs/j-b/attempt-1",
        "runs/j-b/attempt-2",
    ]
    assert runs["j-b"]["log_dir"] == "runs/j-b/attempt-2"
    assert (moved / "runs" / "j-b" / "attempt-2" / "console.log").is_file()
    [image] = data["images"]
    assert image["build_log"].startswith("images/") and (moved / image["build_log"]).is_file()


def test_a_version_1_batch_dir_moved_after_a_crash_recovers_and_reruns(
    project: Project, tmp_path: Path
) -> None:
    """A batch dir of the release that recorded absolute paths, its orchestrator killed, then
    moved: the attempt left running is closed (its record kept as it was written), the new
    one is recorded relative, and both are found where the batch dir is now."""
    path = jobs(project, TWO_SCRIPTS)
    batch = run(path, FakeBackend()).batch_dir
    write_as_version_1(batch)
    crash(batch, "j-b")
    moved = move(batch, tmp_path / "archive" / "renamed")

    outcome = rerun_batch(moved, FakeBackend(), CollectingReporter())

    assert outcome.exit_code == EXIT_OK
    data = manifest_json(moved)
    assert data["manifest_version"] == 3  # written by this tool now; it reads the old kinds
    runs = {r["run_id"]: r for r in data["runs"]}
    closed, again = runs["j-b"]["attempts"]
    assert (outcome_of(closed)["status"], outcome_of(closed)["error"]) == (
        "error",
        INTERRUPTED_REASON,
    )
    assert closed["log_dir"] == str(batch / "runs" / "j-b" / "attempt-1")
    assert again["log_dir"] == "runs/j-b/attempt-2"
    assert runs["j-a"]["log_dir"] == str(batch / "runs" / "j-a" / "attempt-1")
    view = open_batch(moved)
    found = [view.local(a.log_dir) for a in view.manifest.runs["j-b"].attempts]
    view.close()
    assert found == [f"runs/j-b/attempt-{k}" for k in (1, 2)]
    assert all(p is not None and (moved / p / "console.log").is_file() for p in found)


# -- an edited jobs file ---------------------------------------------------------------


def test_a_rerun_with_an_edited_jobs_file_merges_its_runs(project: Project) -> None:
    project.write("scripts/c.py")
    path = jobs(project, TWO_SCRIPTS)
    batch = run(path, FakeBackend(behaviours={"j-b": [failed()]})).batch_dir
    edited = jobs(
        project,
        "jobs:\n  - {name: j, framework: plain, scripts: [scripts/a.py, scripts/c.py]}",
        name="edited.yaml",
    )
    backend = FakeBackend()
    reporter = CollectingReporter()

    outcome = rerun_batch(batch, backend, reporter, RerunChoice(jobs_file=edited))

    assert requested(backend) == ["j-c"]  # new; j-a succeeded; j-b is not in the file
    runs = runs_of(batch)
    assert sorted(runs) == ["j-a", "j-b", "j-c"]
    assert statuses(runs["j-c"]) == ["succeeded"]
    assert statuses(runs["j-b"]) == ["failed"]  # kept as it was
    assert reporter.notices == [
        "new run added: j-c",
        "not in the jobs file any more (kept in the manifest, not rerun): j-b",
        f"rerunning 1 of 3 runs in {batch}",
    ]
    data = manifest_json(batch)
    assert data["jobs_file"]["path"] == str(edited)
    assert "scripts/c.py" in (batch / "jobs.yaml").read_text()
    assert outcome.exit_code == EXIT_RUNS_FAILED  # j-b still failed

    # The edited file is the batch's jobs file now: a plain rerun does not bring j-b back.
    later = FakeBackend()
    rerun_batch(batch, later, CollectingReporter())
    assert later.requests == []


# -- secrets ---------------------------------------------------------------------------


def test_a_plain_rerun_refuses_a_snapshot_with_a_redacted_secret(project: Project) -> None:
    path = jobs(
        project,
        """
jobs:
  - {name: j, framework: plain, scripts: [scripts/a.py], env: {API_KEY: sk-literal-123}}
""",
    )
    first = FakeBackend(behaviours={"j-a": [failed()]})
    batch = run(path, first).batch_dir
    assert first.requests[0].env == {"API_KEY": "sk-literal-123"}
    assert "sk-literal-123" not in (batch / "jobs.yaml").read_text()
    assert "sk-literal-123" not in (batch / "manifest.json").read_text()
    assert runs_of(batch)["j-a"]["env"] == {"API_KEY": REDACTED}
    backend = FakeBackend()

    with pytest.raises(UsageError) as raised:
        rerun_batch(batch, backend, CollectingReporter())

    assert raised.value.exit_code == EXIT_BAD_INPUT
    assert "jobs[0].env.API_KEY" in str(raised.value)
    assert backend.requests == []
    assert statuses(runs_of(batch)["j-a"]) == ["failed"]
    assert manifest_json(batch)["state"] == "finished"

    # With the original file the secret is there again, and the rerun runs.
    rerun_batch(batch, backend, CollectingReporter(), RerunChoice(jobs_file=path))
    assert [r.env for r in backend.requests] == [{"API_KEY": "sk-literal-123"}]
    assert "sk-literal-123" not in (batch / "jobs.yaml").read_text()


def test_a_rerun_after_the_engine_was_gone_runs_the_pending_runs(project: Project) -> None:
    path = jobs(
        project,
        "workers: 1\njobs:\n  - {name: j, framework: plain, scripts: [scripts/a.py, scripts/b.py]}",
    )
    gone = FakeBackend(behaviours={"j-a": [Behaviour(engine_lost=True)]})
    jobs_file, specs = load_and_expand(path)
    first = run_batch(jobs_file, specs, gone, CollectingReporter(), BatchOptions(engine_wait=0.2))
    assert first.engine_gone and runs_of(first.batch_dir)["j-b"]["status"] == "pending"
    backend = FakeBackend()

    outcome = rerun_batch(first.batch_dir, backend, CollectingReporter())

    assert requested(backend) == ["j-a", "j-b"]
    runs = runs_of(first.batch_dir)
    assert statuses(runs["j-a"]) == ["error", "succeeded"]
    assert statuses(runs["j-b"]) == ["succeeded"]
    assert backend.swept == [manifest_json(first.batch_dir)["batch_id"]] * 2
    assert outcome.exit_code == EXIT_OK


def files_holding(directory: Path, text: str) -> list[str]:
    return sorted(
        p.relative_to(directory).as_posix()
        for p in directory.rglob("*")
        if p.is_file() and text.encode() in p.read_bytes()
    )


def test_the_jobs_file_the_batch_started_from_never_ships_after_another_was_adopted(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("API_KEY", "sk-literal-123")
    project.write("main.py")
    path = jobs(
        project,
        "jobs:\n  - {name: j, framework: plain, scripts: [main.py], "
        "env: {API_KEY: sk-literal-123}}",
    )
    edited = jobs(
        project,
        "jobs:\n  - {name: j, framework: plain, scripts: [main.py], env_passthrough: [API_KEY]}",
        name="edited.yaml",
    )
    backend = FakeBackend(behaviours={"j-main": [failed()]})
    batch = run(path, backend).batch_dir
    rerun_batch(batch, backend, CollectingReporter(), RerunChoice(jobs_file=edited))
    assert files_holding(batch, "sk-literal-123") == []  # both jobs files left out so far

    rerun_batch(batch, backend, CollectingReporter())

    assert [r.env for r in backend.requests] == [{"API_KEY": "sk-literal-123"}] * 3
    assert files_holding(batch, "sk-literal-123") == []
