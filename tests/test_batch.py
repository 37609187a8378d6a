"""batch: run_batch and BatchRunner against the in-memory backend (tests/fakes.py), no engine.

Statuses, retries, cancellation, engine loss, image failures, the pool's limit, staged code,
dropped artifacts and the manifest's round trip, each checked on the files a batch leaves.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import Project
from fakes import Behaviour, FakeBackend, failed, tar_of, tar_with_special_members
from records import outcome_of

import safeagents_batch.execution.batch as batch_module
from safeagents_batch.backends.base import QUIET_BUILD, AttemptRequest, BuildProgress, Sink
from safeagents_batch.core.errors import (
    EXIT_BAD_INPUT,
    EXIT_ENGINE_UNAVAILABLE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RUNS_FAILED,
    JobsFileError,
    UsageError,
)
from safeagents_batch.execution.batch import BatchOptions, BatchOutcome, run_batch
from safeagents_batch.execution.reporting import CollectingReporter
from safeagents_batch.jobs.load import load_and_expand
from safeagents_batch.jobs.schema import validate_against
from safeagents_batch.records.manifest import Manifest, encode, load_manifest
from safeagents_batch.records.model import AttemptOutcome, ImageRecord
from safeagents_batch.records.store import ManifestStore
from safeagents_batch.staging.code import code_digest
from safeagents_batch.staging.images import ImageSpec
from safeagents_batch.staging.select import select_files as code_files

PATIENCE_SECONDS = 20.0  # a bound on every wait for another thread, never a timing assertion
HEADER = """\
version: 1
name: t
frameworks:
  plain: {packages: []}
  other: {packages: []}
"""
ENGINE_LOST_WARNING = (
    "the engine stopped answering; no new run starts while waiting up to {:g} s for it"
)


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch_module, "MAX_BACKOFF_SECONDS", 0.01)


@pytest.fixture
def stores(monkeypatch: pytest.MonkeyPatch) -> list[ManifestStore]:
    """Every ManifestStore run_batch makes, so a test can compare the disk with memory."""
    made: list[ManifestStore] = []

    def make(manifest: Manifest, path: Path) -> ManifestStore:
        store = ManifestStore(manifest, path)
        made.append(store)
        return store

    monkeypatch.setattr(batch_module, "ManifestStore", make)
    return made


# -- helpers ----------------------------------------------------------------------------


def jobs(project: Project, body: str, name: str = "jobs.yaml") -> Path:
    """A jobs file: the shared header (frameworks `plain` and `other`) and `body`."""
    return project.write(name, HEADER + body.strip("\n") + "\n")


def run(
    path: Path,
    backend: FakeBackend,
    reporter: CollectingReporter | None = None,
    options: BatchOptions = BatchOptions(),
) -> BatchOutcome:
    jobs_file, specs = load_and_expand(path)
    return run_batch(jobs_file, specs, backend, reporter or CollectingReporter(), options)


def manifest_json(batch_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((batch_dir / "manifest.json").read_text("utf-8"))
    return data


def runs_of(batch_dir: Path) -> dict[str, dict[str, Any]]:
    return {r["run_id"]: r for r in manifest_json(batch_dir)["runs"]}


def history(run: dict[str, Any]) -> list[tuple[int, str, int | None, str | None]]:
    return [
        (a["number"], outcome_of(a)["status"], outcome_of(a)["exit_code"], outcome_of(a)["error"])
        for a in run["attempts"]
    ]


def eventually(condition: Callable[[], bool], seconds: float = PATIENCE_SECONDS) -> bool:
    """Polls `condition` until it holds (True) or `seconds` pass (False)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def in_background(target: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def interrupt_main_thread_when(condition: Callable[[], bool]) -> threading.Thread:
    """SIGINT to the main thread (where run_batch installed its handler) once `condition`
    holds, from another thread: what Ctrl-C does while the batch runs."""
    main = threading.main_thread().ident
    assert main is not None

    def interrupt() -> None:
        if eventually(condition):
            signal.pthread_kill(main, signal.SIGINT)

    return in_background(interrupt)


def no_attempt_running(batch_dir: Path) -> bool:
    return all(
        outcome_of(a)["status"] != "running"
        for r in runs_of(batch_dir).values()
        for a in r["attempts"]
    )


# -- statuses, exit codes, logs ------------------------------------------------------


def test_a_mixed_batch_records_each_status_and_exit_code_and_writes_logs(
    project: Project,
) -> None:
    for name in "cd":
        project.write(f"scripts/{name}.py")
    path = jobs(
        project,
        """
jobs:
  - name: mixed
    framework: plain
    scripts: [scripts/a.py, scripts/b.py, scripts/c.py, scripts/d.py]
""",
    )
    backend = FakeBackend(
        behaviours={
            "mixed-a": [Behaviour(stdout=b"out a\n", stderr=b"err a\n")],
            "mixed-b": [
                Behaviour("failed", 3, stdout=b"trying\n", error="script exited with code 3")
            ],
            "mixed-c": [Behaviour("timed_out", None, error="timed out after 5 s")],
            "mixed-d": [Behaviour("error", None, error="container did not start: fake")],
        }
    )

    outcome = run(path, backend)

    data = manifest_json(outcome.batch_dir)
    assert validate_against("manifest", data) == []
    assert data["state"] == "finished"
    assert data["finished_at"] is not None
    assert data["backend"] == {"backend": "fake", "host": "memory"} == backend.where()
    runs = {r["run_id"]: r for r in data["runs"]}
    assert {k: (r["status"], r["exit_code"], r["error"]) for k, r in runs.items()} == {
        "mixed-a": ("succeeded", 0, None),
        "mixed-b": ("failed", 3, "script exited with code 3"),
        "mixed-c": ("timed_out", None, "timed out after 5 s"),
        "mixed-d": ("error", None, "container did not start: fake"),
    }
    expected_summary = {
        "total": 4,
        "pending": 0,
        "running": 0,
        "succeeded": 1,
        "failed": 1,
        "timed_out": 1,
        "error": 1,
        "cancelled": 0,
    }
    assert data["summary"] == expected_summary == outcome.summary
    assert (outcome.interrupted, outcome.engine_gone) == (False, False)
    assert outcome.exit_code == EXIT_RUNS_FAILED
    assert [(i["framework"], i["status"]) for i in data["images"]] == [("plain", "built")]

    def logs(run_id: str) -> dict[str, str]:
        attempt_dir = outcome.batch_dir / "runs" / run_id / "attempt-1"
        assert runs[run_id]["log_dir"] == f"runs/{run_id}/attempt-1"  # relative, POSIX
        names = ("stdout.log", "stderr.log", "console.log")
        return {n: (attempt_dir / n).read_text("utf-8") for n in names}

    assert logs("mixed-a") == {
        "stdout.log": "out a\n",
        "stderr.log": "err a\n",
        "console.log": "out a\nerr a\n",
    }
    assert logs("mixed-b") == {
        "stdout.log": "trying\n",
        "stderr.log": "",
        "console.log": "trying\n",
    }
    assert logs("mixed-d") == {"stdout.log": "", "stderr.log": "", "console.log": ""}
    assert backend.swept == [data["batch_id"]]


def test_a_batch_whose_runs_all_succeed_exits_0(project: Project) -> None:
    path = jobs(project, "jobs:\n  - {name: ok, framework: plain, scripts: [scripts/*.py]}")

    outcome = run(path, FakeBackend())

    assert outcome.summary["succeeded"] == outcome.summary["total"] == 2
    assert outcome.exit_code == EXIT_OK
    assert manifest_json(outcome.batch_dir)["state"] == "finished"


def test_an_output_dir_the_tool_makes_is_ignored_by_git_and_a_users_own_is_left_as_it_is(
    project: Project, tmp_path: Path
) -> None:
    """The default `./logs` inside a git project stays out of `git status`; a dir that was
    there before the batch gets no file of the tool's beside the batch dirs."""
    subprocess.run(["git", "init", "-q", str(project.root)], check=True)
    path = jobs(project, "jobs:\n  - {name: ok, framework: plain, scripts: [scripts/a.py]}")
    subprocess.run(["git", "-C", str(project.root), "add", "-A"], check=True)
    users = tmp_path / "mine"
    users.mkdir()

    made = run(path, FakeBackend())
    into_users = run(path, FakeBackend(), options=BatchOptions(output_dir=users))

    status = subprocess.run(
        ["git", "-C", str(project.root), "status", "--porcelain", "--untracked-files=all"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert made.batch_dir.parent == project.root / "logs"
    assert (project.root / "logs" / ".gitignore").read_text().splitlines()[-1] == "*"
    untracked = [line for line in status.stdout.splitlines() if line.startswith("??")]
    assert untracked == []  # the batch dir, its logs and its report: none of them
    assert sorted(p.name for p in users.iterdir()) == [into_users.batch_dir.name]


# -- retries ------------------------------------------------------------------------


def test_retries_run_a_failing_run_again_until_it_succeeds(project: Project) -> None:
    path = jobs(
        project,
        """
jobs:
  - {name: flaky, framework: plain, scripts: [scripts/a.py], retries: 2, retry_on: [failed]}
""",
    )
    backend = FakeBackend(behaviours={"flaky-a": [failed(), failed(), Behaviour()]})

    outcome = run(path, backend)

    flaky = runs_of(outcome.batch_dir)["flaky-a"]
    assert history(flaky) == [
        (1, "failed", 1, "script exited with code 1"),
        (2, "failed", 1, "script exited with code 1"),
        (3, "succeeded", 0, None),
    ]
    assert (flaky["status"], flaky["exit_code"]) == ("succeeded", 0)
    assert [r.attempt for r in backend.attempts_of("flaky-a")] == [1, 2, 3]
    attempt_dirs = sorted(p.name for p in (outcome.batch_dir / "runs" / "flaky-a").iterdir())
    assert attempt_dirs == ["attempt-1", "attempt-2", "attempt-3"]
    assert outcome.exit_code == EXIT_OK


@pytest.mark.parametrize(
    ("behaviour", "retry_on", "attempts"),
    [
        pytest.param(failed(), "", 1, id="failed-not-retried-by-default"),
        pytest.param(failed(), "retry_on: [failed]", 3, id="failed-retried-when-listed"),
        pytest.param(Behaviour("error", None, error="fake"), "", 3, id="error-retried-by-default"),
        pytest.param(
            Behaviour("timed_out", None, error="timed out"),
            "",
            1,
            id="timed_out-not-retried-by-default",
        ),
        pytest.param(
            Behaviour("timed_out", None, error="timed out"),
            "retry_on: [timed_out]",
            3,
            id="timed_out-retried-when-listed",
        ),
    ],
)
def test_retry_on_decides_which_statuses_are_retried(
    project: Project, behaviour: Behaviour, retry_on: str, attempts: int
) -> None:
    extra = f", {retry_on}" if retry_on else ""
    path = jobs(
        project,
        f"jobs:\n  - {{name: j, framework: plain, scripts: [scripts/a.py], retries: 2{extra}}}",
    )
    backend = FakeBackend(behaviours={"j-a": [behaviour]})

    outcome = run(path, backend)

    record = runs_of(outcome.batch_dir)["j-a"]
    assert [outcome_of(a)["status"] for a in record["attempts"]] == [behaviour.status] * attempts
    assert len(backend.attempts_of("j-a")) == attempts
    assert record["status"] == behaviour.status


# -- cancellation -------------------------------------------------------------------


def test_sigint_cancels_the_running_attempt_and_the_runs_not_started(
    project: Project, stores: list[ManifestStore]
) -> None:
    project.write("scripts/c.py")
    path = jobs(
        project,
        """
workers: 1
jobs:
  - {name: slow, framework: plain, scripts: [scripts/a.py, scripts/b.py, scripts/c.py],
     retries: 2}
""",
    )
    never = threading.Event()
    backend = FakeBackend(behaviours={"slow-a": [Behaviour(hold=never)]})
    reporter = CollectingReporter()
    handler_before = signal.getsignal(signal.SIGINT)
    interrupter = interrupt_main_thread_when(lambda: len(backend.requests) == 1)
    # A bound, should the signal not land: the held attempt then succeeds and the test fails.
    safety = threading.Timer(PATIENCE_SECONDS, never.set)
    safety.start()
    try:
        outcome = run(path, backend, reporter)
    finally:
        safety.cancel()
    interrupter.join(PATIENCE_SECONDS)

    runs = runs_of(outcome.batch_dir)
    assert history(runs["slow-a"]) == [(1, "cancelled", None, "cancelled by the user")]
    for run_id in ("slow-b", "slow-c"):
        assert runs[run_id]["attempts"] == []
        assert (runs[run_id]["status"], runs[run_id]["error"]) == (
            "cancelled",
            "cancelled before it started",
        )
    assert [r.run_id for r in backend.requests] == ["slow-a"]  # not retried, nothing else
    assert no_attempt_running(outcome.batch_dir)
    data = manifest_json(outcome.batch_dir)
    assert data["state"] == "interrupted"
    assert data["summary"]["cancelled"] == 3
    assert (outcome.interrupted, outcome.engine_gone) == (True, False)
    assert outcome.exit_code == EXIT_INTERRUPTED
    assert reporter.warnings == ["stopping: killing running containers..."]
    assert backend.swept == [data["batch_id"]]
    assert signal.getsignal(signal.SIGINT) is handler_before
    # The unstarted runs' status survives a load from disk.
    assert load_manifest(outcome.batch_dir) == stores[0].manifest


def test_sigint_during_the_backoff_stops_the_retries(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batch_module, "MAX_BACKOFF_SECONDS", 60.0)  # first backoff: 2 s
    path = jobs(
        project,
        """
workers: 1
jobs:
  - {name: j, framework: plain, scripts: [scripts/a.py, scripts/b.py], retries: 3,
     retry_on: [failed]}
""",
    )
    backend = FakeBackend(behaviours={"j-a": [failed()]})
    output = project.root / "logs"

    def first_attempt_failed() -> bool:
        manifests = list(output.glob("*/manifest.json"))
        attempts = runs_of(manifests[0].parent)["j-a"]["attempts"] if manifests else []
        return [outcome_of(a)["status"] for a in attempts] == ["failed"]

    interrupter = interrupt_main_thread_when(first_attempt_failed)
    outcome = run(path, backend)
    interrupter.join(PATIENCE_SECONDS)

    runs = runs_of(outcome.batch_dir)
    assert history(runs["j-a"]) == [(1, "failed", 1, "script exited with code 1")]
    assert (runs["j-b"]["status"], runs["j-b"]["error"]) == (
        "cancelled",
        "cancelled before it started",
    )
    assert [r.run_id for r in backend.requests] == ["j-a"]
    assert manifest_json(outcome.batch_dir)["state"] == "interrupted"
    assert outcome.exit_code == EXIT_INTERRUPTED


# -- engine loss --------------------------------------------------------------------


def test_an_engine_loss_pauses_new_attempts_and_the_lost_run_is_retried(
    project: Project,
) -> None:
    for name in "cd":
        project.write(f"scripts/{name}.py")
    path = jobs(
        project,
        """
workers: 2
jobs:
  - {name: lost, framework: plain, scripts: [scripts/a.py], retries: 1}
  - {name: rest, framework: plain, scripts: [scripts/b.py, scripts/c.py, scripts/d.py]}
""",
    )
    a_hold, b_hold = threading.Event(), threading.Event()
    reporter = CollectingReporter()
    seen: dict[str, int] = {}

    def restore_later(backend: FakeBackend) -> None:
        """Once the pool knows of the loss: let rest-b end while the engine is down (its
        worker must then start nothing), then bring the engine back."""

        def restore() -> None:
            expected = ENGINE_LOST_WARNING.format(10)
            if not eventually(lambda: expected in reporter.warnings):
                seen["gate never closed"] = 1
            seen["before"] = len(backend.requests)
            b_hold.set()
            time.sleep(0.5)  # the window in which a wrongly started attempt would show
            seen["while down"] = len(backend.requests)
            backend.up = True

        in_background(restore)

    backend = FakeBackend(
        behaviours={
            "lost-a": [Behaviour(engine_lost=True, hold=a_hold), Behaviour()],
            "rest-b": [Behaviour(hold=b_hold)],
        },
        on_lost=restore_later,
    )
    # lost-a loses the engine only once rest-b is in flight: both started before the loss.
    starter = in_background(
        lambda: a_hold.set() if eventually(lambda: len(backend.requests) == 2) else None
    )

    outcome = run(path, backend, reporter, BatchOptions(engine_wait=10))
    starter.join(PATIENCE_SECONDS)

    assert "gate never closed" not in seen
    assert seen["before"] == seen["while down"] == 2
    started_later = sorted(r.run_id for r in backend.requests[seen["before"] :])
    assert started_later == ["lost-a", "rest-c", "rest-d"]
    runs = runs_of(outcome.batch_dir)
    assert history(runs["lost-a"]) == [
        (1, "error", None, "engine lost: fake"),
        (2, "succeeded", 0, None),
    ]
    assert "engine lost" in outcome_of(runs["lost-a"]["attempts"][0])["error"]
    assert {k: r["status"] for k, r in runs.items()} == dict.fromkeys(runs, "succeeded")
    assert manifest_json(outcome.batch_dir)["state"] == "finished"
    assert (outcome.engine_gone, outcome.interrupted) == (False, False)
    assert outcome.exit_code == EXIT_OK
    assert reporter.warnings == [ENGINE_LOST_WARNING.format(10)]
    assert "the engine answers again; going on" in reporter.notices


def test_an_engine_that_never_comes_back_leaves_unstarted_runs_pending(
    project: Project,
) -> None:
    path = jobs(
        project,
        """
workers: 1
jobs:
  - {name: lost, framework: plain, scripts: [scripts/a.py], retries: 1}
  - {name: rest, framework: plain, scripts: [scripts/a.py, scripts/b.py]}
""",
    )
    backend = FakeBackend(behaviours={"lost-a": [Behaviour(engine_lost=True), Behaviour()]})
    reporter = CollectingReporter()

    outcome = run(path, backend, reporter, BatchOptions(engine_wait=0.5))

    data = manifest_json(outcome.batch_dir)
    assert validate_against("manifest", data) == []
    runs = {r["run_id"]: r for r in data["runs"]}
    assert history(runs["lost-a"]) == [(1, "error", None, "engine lost: fake")]
    assert runs["lost-a"]["status"] == "error"
    for run_id in ("rest-a", "rest-b"):
        assert (runs[run_id]["status"], runs[run_id]["attempts"], runs[run_id]["error"]) == (
            "pending",
            [],
            None,
        )
    assert [r.run_id for r in backend.requests] == ["lost-a"]
    assert data["state"] == "interrupted"
    assert data["summary"]["pending"] == 2 and data["summary"]["running"] == 0
    assert (outcome.engine_gone, outcome.interrupted) == (True, False)
    assert outcome.exit_code == EXIT_ENGINE_UNAVAILABLE
    # The sweep at the end raised (the engine is down): a warning, not a crash.
    assert backend.swept == []
    assert reporter.warnings == [
        ENGINE_LOST_WARNING.format(0.5),
        "the engine did not come back within 0.5 s; runs not started stay pending",
        "could not remove this batch's containers now (fake engine is down); "
        "`safeagents-batch rerun` or `clean` removes them once the engine answers",
    ]


# -- images -------------------------------------------------------------------------


class SlowImages(FakeBackend):
    """Ensures take a while, so that concurrent runs of one image really ask at once."""

    def ensure_images(
        self,
        specs: Sequence[ImageSpec],
        build_logs: Path,
        *,
        rebuild: bool = False,
        progress: BuildProgress = QUIET_BUILD,
    ) -> dict[str, ImageRecord]:
        time.sleep(0.2)
        return super().ensure_images(specs, build_logs, rebuild=rebuild, progress=progress)


def test_a_failed_image_fails_its_runs_without_attempts_and_is_ensured_once(
    project: Project,
) -> None:
    path = jobs(
        project,
        """
workers: 4
jobs:
  - {name: p, framework: plain, scripts: [scripts/a.py], repeat: 4}
  - {name: o, framework: other, scripts: [scripts/b.py], repeat: 4}
""",
    )
    backend = SlowImages(failing_images={"plain"})

    outcome = run(path, backend)

    data = manifest_json(outcome.batch_dir)
    runs = {r["run_id"]: r for r in data["runs"]}
    assert len(runs) == 8
    for k in range(1, 5):
        plain, other = runs[f"p-a-r{k}"], runs[f"o-b-r{k}"]
        assert (plain["status"], plain["error"], plain["attempts"]) == (
            "error",
            "image build failed: fake",
            [],
        )
        assert [outcome_of(a)["status"] for a in other["attempts"]] == ["succeeded"]
    images = {i["framework"]: i for i in data["images"]}
    assert sorted(backend.ensured) == sorted(i["tag"] for i in images.values())
    assert len(backend.ensured) == 2
    assert (images["plain"]["status"], images["plain"]["error"]) == (
        "failed",
        "image build failed: fake",
    )
    assert images["other"]["status"] == "built"
    assert sorted(r.run_id for r in backend.requests) == [f"o-b-r{k}" for k in range(1, 5)]
    assert outcome.exit_code == EXIT_RUNS_FAILED


# -- the pool's limit ---------------------------------------------------------------


def test_no_more_attempts_run_at_once_than_workers(project: Project) -> None:
    path = jobs(
        project,
        "jobs:\n  - {name: j, framework: plain, scripts: [scripts/a.py], repeat: 6}",
    )
    holds = {f"j-a-r{k}": threading.Event() for k in range(1, 7)}
    backend = FakeBackend(behaviours={k: [Behaviour(hold=e)] for k, e in holds.items()})
    in_flight: list[int] = []

    def started(count: int) -> Callable[[], bool]:
        return lambda: len(backend.requests) >= count

    def release_one_by_one() -> None:
        """Each time two have started, waits a little for a wrong third, then ends one."""
        for released in range(6):
            eventually(started(min(6, released + 2)))
            time.sleep(0.1)
            in_flight.append(len(backend.requests) - released)
            holds[backend.requests[released].run_id].set()

    releaser = in_background(release_one_by_one)
    outcome = run(path, backend, options=BatchOptions(workers=2))
    releaser.join(PATIENCE_SECONDS)

    assert in_flight == [2, 2, 2, 2, 2, 1]
    assert backend.peak == 2
    assert outcome.summary["succeeded"] == 6


# -- staged code --------------------------------------------------------------------


def snapshot_files(directory: Path) -> set[str]:
    return {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()}


def test_each_attempt_runs_the_snapshot_named_by_its_code_digest(project: Project) -> None:
    project.write("other/c.py", "print('c')\n")
    path = jobs(
        project,
        """
jobs:
  - {name: one, framework: plain, scripts: [scripts/a.py]}
  - {name: two, framework: plain, scripts: [scripts/b.py]}
  - {name: three, framework: plain, scripts: [other/c.py]}
""",
    )
    backend = FakeBackend()

    outcome = run(path, backend)

    code_dir = outcome.batch_dir / "code"
    runs = runs_of(outcome.batch_dir)
    digests = {k: r["attempts"][0]["code_digest"] for k, r in runs.items()}
    assert digests["one-a"] == digests["two-b"] != digests["three-c"]
    assert sorted(p.name for p in code_dir.iterdir()) == sorted(set(digests.values()))
    for request in backend.requests:
        snapshot = code_dir / digests[request.run_id]
        assert request.code.digest == digests[request.run_id]
        assert request.code.path == snapshot
        assert code_digest(code_files(snapshot)) == snapshot.name
        assert (snapshot / request.script).read_text() == (
            project.root / runs[request.run_id]["script"]
        ).read_text()
    assert snapshot_files(code_dir / digests["one-a"]) == {"a.py", "b.py"}
    assert snapshot_files(code_dir / digests["three-c"]) == {"c.py"}


def test_the_snapshot_leaves_out_batch_output_git_and_ignored_files(project: Project) -> None:
    root = project.root
    project.write("helper.py")
    project.write(".gitignore", "secret.txt\n")
    project.write("secret.txt", "do not ship\n")
    project.write(".git/config", "[core]\n")
    project.write("vars.env", "MODE=fast\n")
    project.write("main.py")
    path = jobs(
        project,
        "jobs:\n  - {name: j, framework: plain, scripts: [main.py], env_file: vars.env}",
    )
    backend = FakeBackend()

    first = run(path, backend)  # into ./logs, beside the scripts
    second = run(path, backend, options=BatchOptions(output_dir=root / "out"))

    assert first.batch_dir.parent == root / "logs"
    assert second.batch_dir.parent == root / "out"
    # Not shipped either: the jobs file and its env file (the tool's inputs, secrets in them).
    shipped = {".gitignore", "helper.py", "main.py", "scripts/a.py", "scripts/b.py"}
    for request in backend.requests:
        assert snapshot_files(request.code.path) == shipped
        assert request.env == {"MODE": "fast"}
    # Both batches shipped the same tree: the second one did not take in the first's dir.
    assert backend.requests[0].code.digest == backend.requests[1].code.digest


def test_a_script_dir_over_max_code_size_is_refused_before_anything_runs(
    project: Project,
) -> None:
    project.write("scripts/big.bin", "x" * 3000)
    path = jobs(
        project,
        "jobs:\n  - {name: j, framework: plain, scripts: [scripts/a.py], max_code_size: 2k}",
    )
    backend = FakeBackend()

    with pytest.raises(UsageError) as raised:
        run(path, backend)

    message = str(raised.value)
    assert raised.value.exit_code == EXIT_BAD_INPUT
    assert "\n" not in message
    assert "over the limit of 2.0 KiB (max_code_size)" in message
    assert "largest: big.bin 2.9 KiB" in message
    output = project.root / "logs"
    assert not output.exists() or list(output.iterdir()) == []
    assert backend.requests == [] and backend.ensured == [] and backend.swept == []


def test_an_ignored_script_still_ships_but_other_ignored_files_do_not(
    project: Project,
) -> None:
    project.write("scripts/.gitignore", "*.py\n")
    path = jobs(project, "jobs:\n  - {name: j, framework: plain, scripts: [scripts/a.py]}")
    backend = FakeBackend()

    run(path, backend)

    assert snapshot_files(backend.requests[0].code.path) == {".gitignore", "a.py"}


def test_a_secret_looking_matrix_variable_is_refused_at_load_with_its_location(
    project: Project,
) -> None:
    """Matrix values become run ids and directory names, so they can never be redacted: a
    secret-looking name is a located error before anything is written."""
    path = jobs(
        project,
        "jobs:\n"
        "  - {name: j, framework: plain, scripts: [scripts/a.py], "
        "matrix: {API_KEY: [sk-literal-123]}}",
    )
    with pytest.raises(JobsFileError) as raised:
        load_and_expand(path)

    [problem] = raised.value.problems
    assert problem.key_path == "jobs[0].matrix.API_KEY"
    assert "cannot be a matrix variable" in problem.message
    assert "sk-literal-123" not in str(raised.value)


# -- artifacts ----------------------------------------------------------------------


def only_regular_files_and_dirs(directory: Path) -> bool:
    for parent, dirs, files in os.walk(directory):
        for name in dirs + files:
            mode = os.lstat(os.path.join(parent, name)).st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                return False
    return True


def test_links_fifos_and_devices_left_by_a_script_are_dropped_and_named(
    project: Project,
) -> None:
    path = jobs(project, "jobs:\n  - {name: j, framework: plain, scripts: [scripts/a.py]}")
    backend = FakeBackend(behaviours={"j-a": [Behaviour(artifacts=tar_with_special_members())]})

    outcome = run(path, backend)

    attempt = runs_of(outcome.batch_dir)["j-a"]["attempts"][0]
    assert outcome_of(attempt)["status"] == "succeeded"
    assert attempt["dropped_artifacts"] == [
        "result.json: a FIFO",
        "shadow: a symbolic link",
        "root: a symbolic link",
        "disk: a character device",
    ]
    attempt_dir = outcome.batch_dir / attempt["log_dir"]
    assert only_regular_files_and_dirs(attempt_dir)
    assert sorted(p.name for p in attempt_dir.iterdir()) == [
        "console.log",
        "score.json",
        "stderr.log",
        "stdout.log",
    ]
    assert (attempt_dir / "score.json").read_text() == '{"ok": true}'


def test_an_artifact_over_max_artifacts_size_is_dropped_and_named(project: Project) -> None:
    path = jobs(
        project,
        "jobs:\n  - {name: j, framework: plain, scripts: [scripts/a.py], max_artifacts_size: 4k}",
    )
    # As the archive holds them (a 512-byte header, data in 512-byte blocks): 1 KiB, 4.5 KiB
    # and 1 KiB; the big one is skipped, the two others fit.
    artifacts = tar_of({"small.txt": b"ok", "big.bin": b"x" * 4096, "after.txt": b"late"})
    backend = FakeBackend(behaviours={"j-a": [Behaviour(artifacts=artifacts)]})

    outcome = run(path, backend)

    attempt = runs_of(outcome.batch_dir)["j-a"]["attempts"][0]
    assert backend.requests[0].artifact_limit == 4096
    assert attempt["dropped_artifacts"] == [
        "big.bin: 4.0 KiB, over the artifact limit of 4.0 KiB (archive bytes, headers included)",
    ]
    attempt_dir = outcome.batch_dir / attempt["log_dir"]
    assert (attempt_dir / "small.txt").read_bytes() == b"ok"
    assert not (attempt_dir / "big.bin").exists()
    assert (attempt_dir / "after.txt").read_bytes() == b"late"


# -- internal errors ----------------------------------------------------------------


class Exploding(FakeBackend):
    """A backend that raises (a bug of its own) for one run id."""

    def run(self, request: AttemptRequest, sink: Sink, cancel: threading.Event) -> AttemptOutcome:
        if request.run_id == "j-a":
            raise RuntimeError("boom")
        return super().run(request, sink, cancel)


def test_a_backend_that_raises_makes_that_run_an_error_not_a_crash(project: Project) -> None:
    path = jobs(project, "jobs:\n  - {name: j, framework: plain, scripts: [scripts/*.py]}")

    outcome = run(path, Exploding())

    runs = runs_of(outcome.batch_dir)
    assert history(runs["j-a"]) == [(1, "error", None, "internal error: RuntimeError: boom")]
    assert outcome_of(runs["j-a"]["attempts"][0])["ended_at"] is not None
    assert runs["j-b"]["status"] == "succeeded"
    assert no_attempt_running(outcome.batch_dir)
    assert manifest_json(outcome.batch_dir)["state"] == "finished"
    assert outcome.exit_code == EXIT_RUNS_FAILED


# -- the manifest's round trip -----------------------------------------------------


def test_the_manifest_loads_back_into_the_records_the_store_held(
    project: Project, stores: list[ManifestStore]
) -> None:
    path = jobs(
        project,
        """
jobs:
  - {name: ok, framework: other, scripts: [scripts/a.py]}
  - {name: bad, framework: other, scripts: [scripts/b.py], retries: 1, retry_on: [failed]}
  - {name: noimage, framework: plain, scripts: [scripts/a.py]}
""",
    )
    backend = FakeBackend(
        behaviours={
            "bad-b": [failed(2)],
            "ok-a": [Behaviour(artifacts=tar_with_special_members())],
        },
        failing_images={"plain"},
    )
    reporter = CollectingReporter()

    outcome = run(path, backend, reporter)

    (store,) = stores
    loaded = load_manifest(outcome.batch_dir)
    assert loaded.runs == store.manifest.runs
    assert loaded == store.manifest
    assert json.loads(encode(loaded, indent=False)) == manifest_json(outcome.batch_dir)
    unstarted = loaded.runs["noimage-a"]
    assert (unstarted.status, unstarted.error, unstarted.attempts) == (
        "error",
        "image build failed: fake",
        (),
    )
    assert unstarted.unstarted == store.manifest.runs["noimage-a"].unstarted is not None
    assert [a.status for a in loaded.runs["bad-b"].attempts] == ["failed", "failed"]
    assert {r.run_id: r for r in reporter.finished} == loaded.runs
