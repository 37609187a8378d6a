"""max_parallel and pools end to end: a jobs file run on the in-memory backend, the limits read
back from the attempt intervals the manifest records; and their located errors."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import Project
from fakes import FakeBackend
from records import outcome_of

from safeagents_batch.backends.base import AttemptRequest, Sink
from safeagents_batch.core.clock import now_iso
from safeagents_batch.core.errors import JobsFileError
from safeagents_batch.execution.batch import BatchOptions, run_batch
from safeagents_batch.execution.prepare import run_limits
from safeagents_batch.execution.reporting import CollectingReporter
from safeagents_batch.jobs.load import load_and_expand
from safeagents_batch.records.model import AttemptOutcome

PATIENCE_SECONDS = 10.0  # a bound on the wait for a full house, never asserted on
HEADER = """\
version: 1
name: t
frameworks:
  plain: {packages: []}
"""
LIMITED = """
pools: {api: 2}
jobs:
  - {name: one, framework: plain, scripts: [scripts/a.py], repeat: 4, max_parallel: 1}
  - {name: two, framework: plain, scripts: [scripts/a.py], repeat: 5, max_parallel: 2}
  - {name: x, framework: plain, scripts: [scripts/a.py, scripts/b.py], repeat: 2, pool: api}
  - {name: y, framework: plain, scripts: [scripts/a.py, scripts/b.py], repeat: 2, pool: api}
  - {name: free, framework: plain, scripts: [scripts/a.py], repeat: 4}
"""
WORKERS = 6  # one + two + api = 5 at most, and one of `free`: six at once


@dataclass
class CrowdingBackend(FakeBackend):
    """Each attempt waits until `full` attempts are in flight (bounded by the patience), then
    lasts a little: the first attempts overlap, so every limit is filled before a run ends."""

    full: int = WORKERS
    crowded: threading.Event = field(default_factory=threading.Event)

    def run(self, request: AttemptRequest, sink: Sink, cancel: threading.Event) -> AttemptOutcome:
        started = now_iso()
        self._next(request)  # recorded like any request
        with self._running_one():
            with self._lock:
                if self._running >= self.full:
                    self.crowded.set()
            self.crowded.wait(PATIENCE_SECONDS)
            time.sleep(0.02)  # a span of its own in the manifest, whatever the clock's grain
            return AttemptOutcome(
                status="succeeded", exit_code=0, started_at=started, ended_at=now_iso(), error=None
            )


def jobs(project: Project, body: str) -> Path:
    return project.write("jobs.yaml", HEADER + body.strip("\n") + "\n")


def most_at_once(spans: Iterable[tuple[datetime, datetime]]) -> int:
    """The most spans open at one instant; a span is [start, end): one that ends as another
    starts does not overlap it."""
    edges = sorted((t, step) for start, end in spans for t, step in ((start, 1), (end, -1)))
    at_once = peak = 0
    for _, step in edges:  # at one instant the ends (-1) sort before the starts (+1)
        at_once += step
        peak = max(peak, at_once)
    return peak


def spans(runs: Iterable[dict[str, Any]]) -> list[tuple[datetime, datetime]]:
    return [
        (
            datetime.fromisoformat(outcome_of(a)["started_at"]),
            datetime.fromisoformat(outcome_of(a)["ended_at"]),
        )
        for run in runs
        for a in run["attempts"]
    ]


def test_most_at_once_counts_touching_spans_apart() -> None:
    t = [datetime.fromisoformat(f"2026-01-01T00:00:0{s}+00:00") for s in range(5)]
    assert most_at_once([(t[0], t[2]), (t[1], t[3]), (t[2], t[4])]) == 2
    assert most_at_once([(t[0], t[1]), (t[1], t[2])]) == 1
    assert most_at_once([(t[0], t[4]), (t[1], t[2]), (t[1], t[3])]) == 3
    assert most_at_once([]) == 0


def test_the_manifest_intervals_never_overlap_more_than_each_limit(project: Project) -> None:
    path = jobs(project, LIMITED)
    backend = CrowdingBackend()
    jobs_file, specs = load_and_expand(path)

    outcome = run_batch(
        jobs_file, specs, backend, CollectingReporter(), BatchOptions(workers=WORKERS)
    )

    assert outcome.summary["succeeded"] == outcome.summary["total"] == len(specs) == 21
    manifest = json.loads((outcome.batch_dir / "manifest.json").read_text("utf-8"))
    runs = manifest["runs"]
    assert all(len(r["attempts"]) == 1 for r in runs)
    by_job = {job: [r for r in runs if r["job"] == job] for job in ("one", "two", "free")}
    assert most_at_once(spans(by_job["one"])) == 1
    assert most_at_once(spans(by_job["two"])) == 2
    assert most_at_once(spans(r for r in runs if r["job"] in ("x", "y"))) == 2
    assert most_at_once(spans(runs)) == WORKERS
    assert backend.crowded.is_set() and backend.peak == WORKERS


def test_limits_hold_whatever_the_workers(project: Project) -> None:
    """-j far above the limits: only the unlimited job takes the extra workers."""
    path = jobs(project, LIMITED)
    backend = CrowdingBackend(full=5 + 4)  # one, two, api, and all four of `free`
    jobs_file, specs = load_and_expand(path)

    outcome = run_batch(jobs_file, specs, backend, CollectingReporter(), BatchOptions(workers=32))

    runs = json.loads((outcome.batch_dir / "manifest.json").read_text("utf-8"))["runs"]
    assert outcome.summary["succeeded"] == 21
    assert most_at_once(spans(r for r in runs if r["job"] == "one")) == 1
    assert most_at_once(spans(r for r in runs if r["job"] == "two")) == 2
    assert most_at_once(spans(r for r in runs if r["job"] in ("x", "y"))) == 2
    assert backend.peak == 9


def test_run_limits_gives_each_run_its_job_and_pool_keys(project: Project) -> None:
    path = jobs(
        project,
        """
pools: {api: 3, unused: 1}
defaults: {max_parallel: 4}
jobs:
  - {name: both, framework: plain, scripts: [scripts/a.py], pool: api}
  - {name: own, framework: plain, scripts: [scripts/b.py], max_parallel: 1}
""",
    )
    _, specs = load_and_expand(path)

    limits = run_limits(specs, {"api": 3, "unused": 1})

    assert {s.run_id: limits.keys_of(s.run_id) for s in specs} == {
        "both-a": ("job:both", "pool:api"),
        "own-b": ("job:own",),
    }
    assert dict(limits.capacity) == {
        "pool:api": 3,
        "pool:unused": 1,
        "job:both": 4,
        "job:own": 1,
    }


def test_a_pool_of_model_call_rates_only_limits_no_runs(project: Project) -> None:
    path = jobs(
        project,
        """
pools: {quota: {tokens_per_minute: 60000}, both: {runs: 2, requests_per_minute: 10}}
jobs:
  - {name: paced, framework: plain, scripts: [scripts/a.py], pool: quota}
  - {name: capped, framework: plain, scripts: [scripts/b.py], pool: both}
""",
    )
    jobs_file, specs = load_and_expand(path)

    limits = run_limits(specs, jobs_file.pools)

    assert {s.run_id: limits.keys_of(s.run_id) for s in specs} == {
        "paced-a": (),  # a key with no capacity would hold its runs forever
        "capped-b": ("pool:both",),
    }
    assert dict(limits.capacity) == {"pool:both": 2}


# -- located errors ---------------------------------------------------------------------


def test_an_unknown_pool_is_a_located_error(project: Project) -> None:
    path = jobs(
        project,
        """
pools: {openai: 2}
jobs:
  - {name: a, framework: plain, scripts: [scripts/a.py], pool: openai}
  - {name: b, framework: plain, scripts: [scripts/a.py], pool: opena}
""",
    )
    with pytest.raises(JobsFileError) as info:
        load_and_expand(path)

    (problem,) = info.value.problems
    assert problem.key_path == "jobs[1].pool"
    assert (problem.location.file, problem.location.line) == (str(path), 8)
    assert problem.location.column == 64  # at the value
    assert problem.message == "unknown pool 'opena' (did you mean 'openai'?); pools: openai"


def test_max_parallel_zero_is_a_schema_error_with_its_location(project: Project) -> None:
    path = jobs(
        project,
        """
jobs:
  - name: a
    framework: plain
    scripts: [scripts/a.py]
    max_parallel: 0
""",
    )
    with pytest.raises(JobsFileError) as info:
        load_and_expand(path)

    assert [str(p) for p in info.value.problems] == [
        f"{path}:9:19: jobs[0].max_parallel: 0 is less than the minimum of 1"
    ]
