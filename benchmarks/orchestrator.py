"""The orchestrator alone, on an in-memory backend: N runs through load, expand, stage, the
pool, the sink and the journal, with containers that "run" in no time. Prints wall time, the
tool's CPU per run and the peak RSS.

    python benchmarks/orchestrator.py [--runs 10000 100000] [--workers 4]

Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from sweep import write_sweep

from safeagents_batch.backends.base import (
    QUIET_BUILD,
    AttemptRequest,
    BuildProgress,
    CleanRequest,
    Sink,
)
from safeagents_batch.core.clock import now_iso
from safeagents_batch.execution.batch import BatchOptions, run_batch
from safeagents_batch.execution.reporting import CollectingReporter
from safeagents_batch.jobs.load import load_and_expand
from safeagents_batch.records.model import AttemptOutcome, ImageRecord
from safeagents_batch.staging.images import ImageSpec


class InstantBackend:
    """Containers that print one line and succeed at once."""

    name = "memory"

    def ensure_images(
        self,
        specs: Sequence[ImageSpec],
        build_logs: Path,
        *,
        rebuild: bool = False,
        progress: BuildProgress = QUIET_BUILD,
    ) -> dict[str, ImageRecord]:
        return {
            s.tag: ImageRecord(
                tag=s.tag,
                framework=s.config.framework,
                status="cached",
                build_seconds=None,
                build_log=None,
            )
            for s in specs
        }

    def run(self, request: AttemptRequest, sink: Sink, cancel: threading.Event) -> AttemptOutcome:
        started = now_iso()
        sink.stdout(b"ok\n")
        return AttemptOutcome(
            status="succeeded", exit_code=0, started_at=started, ended_at=now_iso()
        )

    def reattach(
        self,
        batch_dir: Path,
        run_id: str,
        attempt: int,
        open_sink: Callable[[], Sink],
        cancel: threading.Event,
    ) -> AttemptOutcome | None:
        return None

    def sweep(self, batch_id: str) -> int:
        return 0

    def clean(self, request: CleanRequest) -> list[str]:
        return []

    def available(self) -> bool:
        return True

    def where(self) -> dict[str, str]:
        return {"backend": self.name}


def measure(runs: int, workers: int) -> dict[str, float]:
    """One batch in this process (it is the only one: RSS is its peak)."""
    with tempfile.TemporaryDirectory(prefix="sab-scale-") as tmp:
        root = Path(tmp)
        jobs = write_sweep(root, runs, "scale")
        cpu, wall = time.process_time(), time.perf_counter()
        jobs_file, specs = load_and_expand(jobs)
        options = BatchOptions(workers=workers, output_dir=root / "out")
        outcome = run_batch(jobs_file, specs, InstantBackend(), CollectingReporter(), options)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        status_seconds = _status_seconds(outcome.batch_dir)
    assert outcome.summary["succeeded"] == runs, outcome.summary
    return {
        "runs": runs,
        "workers": workers,
        "wall_seconds": round(wall, 2),
        "runs_per_second": round(runs / wall),
        "cpu_ms_per_run": round(1000 * cpu / runs, 3),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "status_seconds": status_seconds,
    }


def _status_seconds(batch_dir: Path) -> float:
    """`safeagents-batch status` of the finished batch, as a user runs it (a new process)."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "safeagents_batch", "status", str(batch_dir)],
        capture_output=True,
        check=False,
    )
    return round(time.perf_counter() - started, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child's single measure
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.workers)))
        return
    results = []
    for runs in args.runs:  # each in its own process, so that peak RSS is that batch's
        child = [sys.executable, __file__, "--one", str(runs), "--workers", str(args.workers)]
        done = subprocess.run(child, capture_output=True, text=True, check=True)
        results.append(json.loads(done.stdout))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
