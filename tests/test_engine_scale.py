"""The journal and the limits on a real engine: a 1,000-run batch killed outright at several
points and rerun each time loses no finished run and runs none twice; `max_parallel` and
`pools` hold whatever `-j` says, as the recorded run intervals show."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import docker
import pytest
from engine_cli import (
    Orchestrators,
    SessionImage,
    batch_dir_in,
    finish,
    kill_hard,
    session_image,
    wait_for,
)

from safeagents_batch.core.errors import EXIT_OK
from safeagents_batch.records.manifest import load_manifest
from safeagents_batch.records.model import RunRecord

pytestmark = [pytest.mark.docker, pytest.mark.scale]

RUNS = 1000
FINAL_TIMEOUT = 900  # a bound for a hang (the last rerun runs ~650 runs), not a timing check


@pytest.fixture(scope="module")
def image(
    docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SessionImage]:
    yield from session_image(docker_client, tmp_path_factory.mktemp("image"))


def succeeded(batch_dir: Path) -> int:
    """Succeeded runs, read as every reader reads a batch: the snapshot plus the journal."""
    return sum(r.status == "succeeded" for r in load_manifest(batch_dir).runs.values())


def kill_when(proc: subprocess.Popen[str], batch_dir: Path, at_least: int) -> None:
    wait_for(lambda: succeeded(batch_dir) >= at_least, f"{at_least} runs succeeded", proc)
    kill_hard(proc)


def test_sigkill_at_several_points_then_rerun_loses_nothing_and_repeats_nothing(
    image: SessionImage, orchestrators: Orchestrators, tmp_path: Path
) -> None:
    jobs = image.project(
        tmp_path / "proj",
        "scale",
        f"  - {{name: t, framework: plain, scripts: t.py, repeat: {RUNS}, network: none}}\n",
        {"t.py": "print('t')\n"},
        workers=4,
    )
    out_dir = tmp_path / "out"
    proc = orchestrators.start(["run", str(jobs), "-o", str(out_dir), "--no-progress"])
    wait_for(lambda: batch_dir_in(out_dir) is not None, "the batch dir", proc)
    batch_dir = batch_dir_in(out_dir)
    assert batch_dir is not None
    for point in (50, 200, 350):  # ~25 s apart here: inside wait_for's bound
        kill_when(proc, batch_dir, point)
        proc = orchestrators.start(["rerun", str(batch_dir), "--no-progress"])
    out, err = proc.communicate(timeout=FINAL_TIMEOUT)
    code = proc.returncode

    assert code == EXIT_OK, (out[-2000:], err[-2000:])
    runs = load_manifest(batch_dir).runs.values()
    assert len(runs) == RUNS
    wrong = [r.run_id for r in runs if not _one_success_last(r)]
    assert wrong == [], [load_manifest(batch_dir).runs[w].attempts for w in wrong[:3]]
    # The kills did land in the middle of attempts: those were closed as interrupted.
    interrupted = sum(1 for r in runs for a in r.attempts if a.error and "interrupted" in a.error)
    assert interrupted >= 1


def _one_success_last(record: RunRecord) -> bool:
    statuses = [a.status for a in record.attempts]
    return statuses.count("succeeded") == 1 and statuses[-1] == "succeeded"


def test_max_parallel_and_pools_hold_whatever_j_says(
    image: SessionImage, orchestrators: Orchestrators, tmp_path: Path
) -> None:
    jobs_yaml = (
        "  - {name: a, framework: plain, scripts: nap.py, repeat: 6, max_parallel: 2}\n"
        "  - {name: b, framework: plain, scripts: nap.py, repeat: 3, pool: api}\n"
        "  - {name: c, framework: plain, scripts: nap.py, repeat: 3, pool: api}\n"
        "  - {name: free, framework: plain, scripts: nap.py, repeat: 4}\n"
    )
    jobs = image.project(
        tmp_path / "proj",
        "limits",
        jobs_yaml,
        {"nap.py": "import time\ntime.sleep(1)\n"},
        workers=8,
    )
    text = jobs.read_text().replace("jobs:\n", "pools: {api: 1}\njobs:\n", 1)
    jobs.write_text(text)
    out_dir = tmp_path / "out"

    code, out, err = finish(
        orchestrators.start(["run", str(jobs), "-o", str(out_dir), "-j", "8", "--no-progress"])
    )

    assert code == EXIT_OK, (out, err)
    batch_dir = batch_dir_in(out_dir)
    assert batch_dir is not None
    runs = list(load_manifest(batch_dir).runs.values())
    by_job = {name: [r for r in runs if r.job == name] for name in ("a", "b", "c", "free")}
    assert max_overlap(by_job["a"]) == 2  # reaches its limit, never more
    assert max_overlap(by_job["b"] + by_job["c"]) == 1
    assert 2 < max_overlap(runs) <= 8  # -j 8 was used beyond the limited jobs


def max_overlap(records: list[RunRecord]) -> int:
    """The most attempts running at one instant, from their recorded start and end."""
    moments: list[tuple[float, int]] = []
    for record in records:
        for attempt in record.attempts:
            assert attempt.started_at and attempt.ended_at
            moments.append((_seconds(attempt.started_at), 1))
            moments.append((_seconds(attempt.ended_at), -1))
    running = peak = 0
    for _, change in sorted(moments, key=lambda m: (m[0], m[1])):  # ends before starts on ties
        running += change
        peak = max(peak, running)
    return peak


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()
