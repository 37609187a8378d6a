"""Batch dirs for the report's tests: real batches run on the in-memory backend (tests/fakes.py),
and a big manifest made directly, for the scale test."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import records as made
from conftest import Project
from fakes import Behaviour, FakeBackend, tar_of

from safeagents_batch.execution.batch import run_batch
from safeagents_batch.execution.reporting import CollectingReporter
from safeagents_batch.jobs.load import load_and_expand
from safeagents_batch.jobs.plan import RunSpec
from safeagents_batch.records.layout import MANIFEST as MANIFEST_NAME
from safeagents_batch.records.manifest import JobsFileRecord, Manifest, encode
from safeagents_batch.records.model import ImageRecord, RunRecord, recorded_path
from safeagents_batch.records.safedir import SafeDir

HOSTILE_LINE = "<img src=x onerror=alert(1)>"
SCRIPT_LINE = "<script>alert('stderr')</script>"

# Two jobs: a 3 x 2 matrix with repeats, and one without a matrix.
MATRIX_JOBS = """\
version: 1
name: rep
frameworks:
  plain: {packages: []}
  other: {packages: []}
jobs:
  - name: grid
    framework: plain
    scripts: [scripts/a.py]
    env: {LOG_LEVEL: INFO}
    matrix: {VARIANT: [benign, harmful, jailbreak], MODEL: [small, large]}
    repeat: 2
  - name: single
    framework: other
    scripts: [scripts/b.py]
"""


def succeeded_with(result: dict[str, object] | bytes) -> Behaviour:
    raw = result if isinstance(result, bytes) else json.dumps(result).encode()
    return Behaviour(stdout=b"done\n", artifacts=tar_of({"result.json": raw, "notes/x.txt": b"x"}))


def failing(stderr: str = f"Traceback\n{HOSTILE_LINE}\n{SCRIPT_LINE}\n") -> Behaviour:
    return Behaviour(
        "failed", 1, stderr=stderr.encode(), error=f"script exited with code 1 {SCRIPT_LINE}"
    )


def run_fake_batch(
    project: Project,
    choose: Callable[[RunSpec], Behaviour],
    text: str = MATRIX_JOBS,
    name: str = "jobs.yaml",
    *,
    build_logs: bool = False,
) -> Path:
    """Runs the jobs file `text` on the fake backend, each run behaving as `choose` says;
    with `build_logs`, each image leaves a build log in the batch dir."""
    path = project.write(name, text)
    jobs_file, specs = load_and_expand(path)
    backend = FakeBackend({s.run_id: [choose(s)] for s in specs}, write_build_logs=build_logs)
    return run_batch(jobs_file, specs, backend, CollectingReporter()).batch_dir


def default_behaviour(spec: RunSpec) -> Behaviour:
    """harmful runs on the large model fail; every other run writes a result."""
    matrix = dict(spec.matrix_env)
    if matrix.get("VARIANT") == "harmful" and matrix.get("MODEL") == "large":
        return failing()
    return succeeded_with(
        {"refused": matrix.get("VARIANT") != "benign", "score": spec.repeat_index, "meta": {"n": 1}}
    )


def big_manifest(batch_dir: Path, runs: int, failing_every: int = 20) -> Manifest:
    """A finished batch of `runs` runs written straight through the manifest API: every
    `failing_every`-th failed with a 20-line stderr.log, the others left a result.json."""
    records: dict[str, RunRecord] = {}
    for i in range(runs):
        run_id = f"job{i % 4}-task-v{i % 10}-r{i}"
        log_dir = batch_dir / "runs" / run_id / "attempt-1"
        failed = i % failing_every == 0
        if failed:  # files for some runs only: making 20,000 of them is most of the test
            log_dir.mkdir(parents=True)
            lines = "".join(f"error line {n} of run {i}\n" for n in range(40))
            (log_dir / "stderr.log").write_text(lines, encoding="utf-8")
        elif i % 10 == 1:
            log_dir.mkdir(parents=True)
            (log_dir / "result.json").write_text(json.dumps({"score": i % 7}), encoding="utf-8")
        attempt = made.attempt(
            1,
            "failed" if failed else "succeeded",
            recorded_path(log_dir, batch_dir),  # as the tool records it
            exit_code=1 if failed else 0,
            error="script exited with code 1" if failed else None,
        )
        records[run_id] = made.run(
            run_id, attempt, job=f"job{i % 4}", env={"V": str(i % 10)}, matrix={"V": str(i % 10)}
        )
    manifest = Manifest(
        batch_id="big-1",
        batch_dir=str(batch_dir),
        jobs_file=JobsFileRecord(path="/x/jobs.yaml", sha256="0" * 64),
        created_at="2026-01-01T00:00:00+00:00",
        runs=records,
        images={"img:1": ImageRecord(tag="img:1", framework="plain", status="cached")},
        updated_at="2026-01-01T00:10:00+00:00",
        finished_at="2026-01-01T00:10:00+00:00",
        state="finished",
    )
    with SafeDir(batch_dir) as safe:
        safe.write(MANIFEST_NAME, encode(manifest, indent=False))
    return manifest
