"""Writing the report of a 10,000-run batch with 500,000 samples, beside the same batch
without its samples: the time `report` (and the end of `run`) takes, and its peak memory.

Each round runs in a fresh process (peak RSS is per process), the two batches alternating.
Run from the repository root: PYTHONPATH=. .venv/bin/python benchmarks/report_write.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from report_open import write_batch

# One write, in a child: prints seconds and peak RSS (MiB) as JSON.
CHILD = """
import json, resource, sys, time
from pathlib import Path
from safeagents_batch.report.page import write_report
started = time.perf_counter()
write_report(Path(sys.argv[1]))
seconds = time.perf_counter() - started
print(json.dumps([seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024]))
"""


def write_once(batch: Path) -> tuple[float, float]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(batch)], check=True, capture_output=True, text=True
    )
    seconds, peak = json.loads(done.stdout.splitlines()[-1])
    return float(seconds), float(peak)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=50, help="per run")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="report-write-") as temp:
        with_samples, without = Path(temp) / "samples", Path(temp) / "runs-only"
        write_batch(with_samples, args.runs, args.samples)
        write_batch(without, args.runs, 0)
        figures: dict[str, list[tuple[float, float]]] = {"samples": [], "runs only": []}
        for _ in range(args.rounds):
            figures["samples"].append(write_once(with_samples))
            figures["runs only"].append(write_once(without))
    for name, rounds in figures.items():
        seconds = statistics.median(s for s, _ in rounds)
        peak = max(p for _, p in rounds)
        print(f"{name:>9}: median {seconds:.2f} s, peak RSS {peak:.0f} MiB ({len(rounds)} rounds)")


if __name__ == "__main__":
    main()
