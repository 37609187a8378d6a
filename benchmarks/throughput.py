"""Throughput benchmark: N trivial runs of a `plain` image at several worker counts.

Measures what the tool adds per run (container create/attach/start/wait/remove, log files,
manifest writes). Speed is measured here, never asserted in tests.

    python benchmarks/throughput.py [--runs 24] [--workers 1 2 4]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from safeagents_batch.cli import main as cli

JOBS = """version: 1
frameworks: {{plain: {{packages: []}}}}
jobs:
  - {{name: bench, framework: plain, scripts: noop.py, repeat: {runs}}}
"""


def measure(runs: int, workers: int, root: Path) -> dict[str, float]:
    project = root / f"runs{runs}-j{workers}"
    project.mkdir()
    (project / "noop.py").write_text("print('ok')\n", encoding="utf-8")
    jobs = project / "jobs.yaml"
    jobs.write_text(JOBS.format(runs=runs), encoding="utf-8")
    started = time.perf_counter()
    code = cli.main(
        ["run", str(jobs), "-j", str(workers), "--no-progress", "-o", str(project / "out")]
    )
    seconds = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"benchmark batch failed with exit code {code}")
    return {
        "workers": workers,
        "runs": runs,
        "seconds": round(seconds, 2),
        "runs_per_second": round(runs / seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=24)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sab-bench-") as tmp:
        measure(2, 1, Path(tmp))  # warm-up: builds the plain image once
        results = [measure(args.runs, w, Path(tmp)) for w in args.workers]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
