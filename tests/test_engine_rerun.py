"""Engine tests of interruption, crash recovery and `rerun`, with the faults injected for real.

The orchestrator is the real CLI in a child process of its own session: SIGINT, SIGTERM and
SIGKILL reach it alone, containers run on the real engine, and the test removes a container
behind its back or lets the kernel OOM-kill a script. Only containers labelled with the test's
own batches are looked at: other sessions may use the same engine meanwhile.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from engine_cli import (
    HELD_SCRIPT,
    Orchestrators,
    SessionImage,
    batch_dir_in,
    cli,
    containers_of,
    finish,
    kill_hard,
    read_manifest,
    read_stderr_until,
    release,
    runs_by_id,
    session_image,
    statuses,
    valid_manifest,
    wait_for,
    wait_for_batch,
)
from records import outcome_of

from safeagents_batch.core.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_OK, EXIT_RUNS_FAILED
from safeagents_batch.execution.rerun import INTERRUPTED_REASON

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def image(
    docker_client: docker.DockerClient,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[SessionImage]:
    yield from session_image(docker_client, tmp_path_factory.mktemp("image"))


def held_batch(image: SessionImage, root: Path, runs: int, workers: int) -> Path:
    """`runs` runs of one held script: they stay `running` until the test releases them."""
    jobs = f"  - {{name: held, framework: plain, scripts: held.py, repeat: {runs}}}\n"
    return image.project(root, "held", jobs, {"held.py": HELD_SCRIPT}, workers=workers, held=True)


def attempt_dirs(batch_dir: Path, run_id: str) -> list[str]:
    return sorted(p.name for p in (batch_dir / "runs" / run_id).iterdir())


# -- 1. Ctrl-C, SIGTERM, and a second Ctrl-C during cleanup --------------------------------------


@pytest.mark.docker
def test_sigint_cancels_cleans_up_and_rerun_completes_the_batch(
    engine: docker.DockerClient,
    image: SessionImage,
    orchestrators: Orchestrators,
    tmp_path: Path,
) -> None:
    jobs = held_batch(image, tmp_path / "proj", runs=10, workers=4)
    out = tmp_path / "out"
    proc = orchestrators.start(["run", str(jobs), "-o", str(out), "--no-progress"])
    batch_dir = wait_for_batch(out, proc, running=2)

    proc.send_signal(signal.SIGINT)
    code, _, stderr = finish(proc)

    assert code == EXIT_INTERRUPTED, stderr
    assert containers_of(engine, batch_dir) == []
    manifest = valid_manifest(batch_dir)
    assert manifest["state"] == "interrupted"
    assert set(statuses(manifest)) == {"cancelled"}  # held runs cannot have succeeded
    killed = [r["run_id"] for r in manifest["runs"] if r["attempts"]]
    assert len(killed) >= 2  # the ones that were running: their attempt is cancelled
    assert f"resume with: safeagents-batch rerun {batch_dir}" in stderr

    release(jobs.parent)
    rerun = cli(["rerun", str(batch_dir), "-j", "5", "--no-progress"])

    assert rerun.returncode == EXIT_OK, rerun.stdout + rerun.stderr
    manifest = valid_manifest(batch_dir)
    assert manifest["state"] == "finished"
    assert manifest["summary"]["total"] == 10
    assert set(statuses(manifest)) == {"succeeded"}
    assert containers_of(engine, batch_dir) == []
    for run in runs_by_id(manifest).values():
        expected = ["cancelled", "succeeded"] if run["run_id"] in killed else ["succeeded"]
        assert [outcome_of(a)["status"] for a in run["attempts"]] == expected
        assert attempt_dirs(batch_dir, run["run_id"]) == [
            f"attempt-{k}" for k in range(1, len(expected) + 1)
        ]


@pytest.mark.docker
@pytest.mark.parametrize(
    "signals", [(signal.SIGTERM,), (signal.SIGINT, signal.SIGINT)], ids=["sigterm", "double-sigint"]
)
def test_sigterm_and_a_second_sigint_during_cleanup_leave_no_container(
    engine: docker.DockerClient,
    image: SessionImage,
    orchestrators: Orchestrators,
    tmp_path: Path,
    signals: tuple[signal.Signals, ...],
) -> None:
    jobs = held_batch(image, tmp_path / "proj", runs=4, workers=4)
    out = tmp_path / "out"
    proc = orchestrators.start(["run", str(jobs), "-o", str(out), "--no-progress"])
    batch_dir = wait_for_batch(out, proc, running=4)

    proc.send_signal(signals[0])
    early = ""
    if len(signals) == 2:  # the second once the first is being handled: cleanup is under way
        early = read_stderr_until(proc, "stopping")
        proc.send_signal(signals[1])
    code, _, rest = finish(proc)
    stderr = early + rest

    assert code == EXIT_INTERRUPTED, stderr
    assert containers_of(engine, batch_dir) == []
    manifest = valid_manifest(batch_dir)
    assert manifest["state"] == "interrupted"
    assert set(statuses(manifest)) == {"cancelled"}
    assert "resume with: safeagents-batch rerun" in stderr
    if len(signals) == 2:
        assert "still cleaning up" in stderr
        assert "Traceback" not in stderr


# -- 2. the orchestrator SIGKILLed mid-batch ----------------------------------------------------


@pytest.mark.docker
def test_sigkilled_orchestrator_leaves_a_valid_manifest_and_rerun_recovers(
    engine: docker.DockerClient,
    image: SessionImage,
    orchestrators: Orchestrators,
    tmp_path: Path,
) -> None:
    jobs = held_batch(image, tmp_path / "proj", runs=6, workers=3)
    out = tmp_path / "out"
    proc = orchestrators.start(["run", str(jobs), "-o", str(out), "--no-progress"])
    batch_dir = wait_for_batch(out, proc, running=2)
    wait_for(
        lambda: sum(c["State"] == "running" for c in containers_of(engine, batch_dir)) >= 2,
        "two running containers",
        proc,
    )

    kill_hard(proc)

    manifest = valid_manifest(batch_dir)  # written atomically: parses whatever the moment
    assert manifest["state"] == "running"
    killed = {r["run_id"] for r in manifest["runs"] if r["status"] == "running"}
    assert len(killed) >= 2
    stale = containers_of(engine, batch_dir)
    assert stale, "the orchestrator's containers should outlive it"
    assert {c["Labels"]["safeagents-batch.run"] for c in stale} <= killed

    release(jobs.parent)
    rerun = cli(["rerun", str(batch_dir), "-j", "6", "--no-progress"])

    assert rerun.returncode == EXIT_OK, rerun.stdout + rerun.stderr
    # Containers can still appear after the kill: the engine finishes a create it was asked for.
    removed = re.search(r"removed (\d+) stale container\(s\)", rerun.stderr)
    assert removed is not None and int(removed.group(1)) >= len(stale), rerun.stderr
    assert containers_of(engine, batch_dir) == []
    manifest = valid_manifest(batch_dir)
    runs = runs_by_id(manifest)  # also: no run id twice
    assert len(runs) == 6
    assert manifest["state"] == "finished"
    assert set(statuses(manifest)) == {"succeeded"}
    for run_id in killed:
        first, second = runs[run_id]["attempts"]
        assert (outcome_of(first)["status"], outcome_of(first)["error"]) == (
            "error",
            INTERRUPTED_REASON,
        )
        assert outcome_of(first)["ended_at"] is not None
        assert outcome_of(second)["status"] == "succeeded"
        assert attempt_dirs(batch_dir, run_id) == ["attempt-1", "attempt-2"]


# -- 3. attempts: a rerun after a fix, and retries inside one batch -----------------------------

FAIL_UNLESS_FIXED = (
    "import os, sys\nprint('FAIL is', os.environ['FAIL'])\n"
    "sys.exit(3 if os.environ['FAIL'] == '1' else 0)\n"
)


@pytest.mark.docker
def test_a_run_that_fails_then_succeeds_on_rerun_has_two_attempts(
    engine: docker.DockerClient, image: SessionImage, tmp_path: Path
) -> None:
    jobs = image.project(
        tmp_path / "proj",
        "flaky",
        "  - {name: flaky, framework: plain, scripts: f.py, env_file: .env}\n",
        {"f.py": FAIL_UNLESS_FIXED, ".env": "FAIL=1\n"},
    )
    out = tmp_path / "out"

    first = cli(["run", str(jobs), "-o", str(out), "--no-progress"])

    assert first.returncode == EXIT_RUNS_FAILED, first.stdout + first.stderr
    batch_dir = batch_dir_in(out)
    assert batch_dir is not None
    assert runs_by_id(valid_manifest(batch_dir))["flaky-f"]["status"] == "failed"

    (jobs.parent / ".env").write_text("FAIL=0\n", encoding="utf-8")  # the fix
    again = cli(["rerun", str(batch_dir), "--no-progress"])

    assert again.returncode == EXIT_OK, again.stdout + again.stderr
    run = runs_by_id(valid_manifest(batch_dir))["flaky-f"]
    assert [
        (a["number"], outcome_of(a)["status"], outcome_of(a)["exit_code"]) for a in run["attempts"]
    ] == [
        (1, "failed", 3),
        (2, "succeeded", 0),
    ]
    assert (run["status"], run["exit_code"]) == ("succeeded", 0)
    assert attempt_dirs(batch_dir, "flaky-f") == ["attempt-1", "attempt-2"]
    for number, value in ((1, "1"), (2, "0")):
        log = batch_dir / "runs" / "flaky-f" / f"attempt-{number}" / "stdout.log"
        assert log.read_text() == f"FAIL is {value}\n"


@pytest.mark.docker
def test_retries_on_failed_record_three_attempts_in_one_batch(
    engine: docker.DockerClient, image: SessionImage, tmp_path: Path
) -> None:
    jobs = image.project(
        tmp_path / "proj",
        "retry",
        "  - {name: doomed, framework: plain, scripts: d.py, retries: 2, retry_on: [failed]}\n",
        {"d.py": "print('trying')\nraise SystemExit(5)\n"},
    )
    out = tmp_path / "out"

    result = cli(["run", str(jobs), "-o", str(out), "--no-progress"])

    assert result.returncode == EXIT_RUNS_FAILED, result.stdout + result.stderr
    batch_dir = batch_dir_in(out)
    assert batch_dir is not None
    run = runs_by_id(valid_manifest(batch_dir))["doomed-d"]
    assert [
        (a["number"], outcome_of(a)["status"], outcome_of(a)["exit_code"]) for a in run["attempts"]
    ] == [
        (1, "failed", 5),
        (2, "failed", 5),
        (3, "failed", 5),
    ]
    assert run["status"] == "failed"
    assert attempt_dirs(batch_dir, "doomed-d") == ["attempt-1", "attempt-2", "attempt-3"]
    assert result.stdout.count("doomed-d") == 1  # one line per run, not per attempt


# -- 4. rerun with an edited jobs file ----------------------------------------------------------


@pytest.mark.docker
def test_rerun_with_an_edited_jobs_file_adds_new_ids_and_keeps_vanished_ones(
    engine: docker.DockerClient, image: SessionImage, tmp_path: Path
) -> None:
    scripts = {
        "keep.py": "print('keep')\n",
        "gone.py": "print('gone')\n",
        "new.py": "print('new')\n",
    }
    jobs = image.project(
        tmp_path / "proj",
        "edit",
        "  - {name: keep, framework: plain, scripts: keep.py}\n"
        "  - {name: gone, framework: plain, scripts: gone.py}\n",
        scripts,
    )
    out = tmp_path / "out"
    first = cli(["run", str(jobs), "-o", str(out), "--no-progress"])
    assert first.returncode == EXIT_OK, first.stdout + first.stderr
    batch_dir = batch_dir_in(out)
    assert batch_dir is not None
    edited = jobs.parent / "edited.yaml"
    edited.write_text(
        image.header("edit") + "jobs:\n"
        "  - {name: keep, framework: plain, scripts: keep.py}\n"
        "  - {name: new, framework: plain, scripts: new.py}\n",
        encoding="utf-8",
    )

    rerun = cli(["rerun", str(batch_dir), "--jobs", str(edited), "--no-progress"])

    assert rerun.returncode == EXIT_OK, rerun.stdout + rerun.stderr
    assert "new run added: new-new" in rerun.stderr
    [vanished] = [line for line in rerun.stderr.splitlines() if "gone-gone" in line]
    assert "not in the jobs file" in vanished
    runs = runs_by_id(valid_manifest(batch_dir))
    assert sorted(runs) == ["gone-gone", "keep-keep", "new-new"]
    assert [outcome_of(a)["status"] for a in runs["new-new"]["attempts"]] == ["succeeded"]
    assert [outcome_of(a)["status"] for a in runs["gone-gone"]["attempts"]] == ["succeeded"]
    assert len(runs["keep-keep"]["attempts"]) == 1  # succeeded before: not rerun

    # The edited file is the batch's file from now on: a later rerun knows `new`.
    later = cli(["rerun", str(batch_dir), "--all", "--no-progress"])

    assert later.returncode == EXIT_OK, later.stdout + later.stderr
    assert "new-new" not in "".join(
        line for line in later.stderr.splitlines() if "not in the jobs file" in line
    )
    runs = runs_by_id(valid_manifest(batch_dir))
    assert len(runs["new-new"]["attempts"]) == 2
    assert len(runs["gone-gone"]["attempts"]) == 1


# -- 5. the batch lock --------------------------------------------------------------------------


@pytest.mark.docker
def test_a_second_rerun_of_a_busy_batch_exits_2_and_a_killed_holder_is_taken_over(
    engine: docker.DockerClient,
    image: SessionImage,
    orchestrators: Orchestrators,
    tmp_path: Path,
) -> None:
    jobs = held_batch(image, tmp_path / "proj", runs=1, workers=1)
    out = tmp_path / "out"
    holder = orchestrators.start(["run", str(jobs), "-o", str(out), "--no-progress"])
    batch_dir = wait_for_batch(out, holder, running=1)

    second = cli(["rerun", str(batch_dir), "--no-progress"])

    assert second.returncode == EXIT_BAD_INPUT, second.stdout + second.stderr
    assert second.stderr.splitlines() == [
        f"safeagents-batch: error: {batch_dir} is in use by pid {holder.pid}; "
        "wait for it to finish or stop it first"
    ]
    assert outcome_of(read_manifest(batch_dir)["runs"][0]["attempts"][0])["status"] == "running"

    kill_hard(holder)
    release(jobs.parent)
    takeover = cli(["rerun", str(batch_dir), "--no-progress"])

    assert takeover.returncode == EXIT_OK, takeover.stdout + takeover.stderr
    run = valid_manifest(batch_dir)["runs"][0]
    assert [outcome_of(a)["status"] for a in run["attempts"]] == ["error", "succeeded"]
    assert containers_of(engine, batch_dir) == []


# -- 6. engine faults: a container removed behind our back, an OOM kill -------------------------


@pytest.mark.docker
def test_container_removed_behind_our_back_is_an_error_and_oom_is_a_failure(
    engine: docker.DockerClient,
    image: SessionImage,
    orchestrators: Orchestrators,
    tmp_path: Path,
) -> None:
    scripts = {
        "held.py": HELD_SCRIPT,
        "ok.py": "print('ok')\n",
        "hog.py": "print('allocating', flush=True)\n"
        "data = b'x' * (500 * 1024 * 1024)\nprint(len(data))\n",
    }
    # One worker: the runs go in file order, so `ok` and `hog` start after the removal.
    jobs = image.project(
        tmp_path / "proj",
        "faults",
        "  - {name: victim, framework: plain, scripts: held.py}\n"
        "  - {name: ok, framework: plain, scripts: ok.py}\n"
        "  - {name: hog, framework: plain, scripts: hog.py,"
        " resources: {memory: 64m}}\n",
        scripts,
        workers=1,
        held=True,
    )
    out = tmp_path / "out"
    proc = orchestrators.start(["run", str(jobs), "-o", str(out), "--no-progress"])
    batch_dir = wait_for_batch(out, proc, running=1)
    victim_log = batch_dir / "runs" / "victim-held" / "attempt-1" / "stdout.log"
    wait_for(
        lambda: victim_log.is_file() and "holding" in victim_log.read_text(),
        "the victim's script to run",
        proc,
    )  # mid-run: not between create and start
    [victim] = containers_of(engine, batch_dir)
    assert victim["Labels"]["safeagents-batch.run"] == "victim-held"

    engine.api.remove_container(victim["Id"], force=True)  # docker rm -f
    code, stdout, stderr = finish(proc)

    assert code == EXIT_RUNS_FAILED, stdout + stderr
    runs = runs_by_id(valid_manifest(batch_dir))
    assert runs["victim-held"]["status"] == "error"
    assert "removed" in runs["victim-held"]["error"]
    assert runs["ok-ok"]["status"] == "succeeded"  # the batch went on
    assert (runs["hog-hog"]["status"], runs["hog-hog"]["error"]) == ("failed", "oom_killed")
    assert containers_of(engine, batch_dir) == []
