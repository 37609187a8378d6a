"""How soon the first container of an unchanged 1,000-run jobs file starts after the command:
the time from launching `safeagents-batch run` to the engine's first `start` event of that
batch (images cached; a warm-up batch builds them first). The batch is stopped right after.

    python benchmarks/first_container.py [--runs 1000] [--rounds 3]

Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from sweep import TOOL, write_sweep

EVENTS = ["docker", "events", "--format", "{{.TimeNano}}", "--filter", "event=start"]


def first_start(jobs: Path, out: Path) -> float:
    """Seconds from the launch to the first container start of the batch it makes."""
    events = subprocess.Popen(
        [*EVENTS, "--filter", "label=safeagents-batch.batch"],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)  # let `docker events` subscribe before the batch starts
    launched = time.time_ns()
    tool = subprocess.Popen(
        [*TOOL, "run", str(jobs), "-o", str(out), "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert events.stdout is not None
        started = int(events.stdout.readline())
    finally:
        tool.send_signal(signal.SIGINT)  # the batch winds down and removes its containers
        tool.wait(120)
        events.terminate()
        events.wait(10)
    return (started - launched) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sab-first-") as tmp:
        root = Path(tmp)
        jobs = write_sweep(root, args.runs, "first")
        subprocess.run([*TOOL, "build", str(jobs)], check=True, capture_output=True)
        seconds = [first_start(jobs, root / f"out{n}") for n in range(args.rounds)]
    print(
        json.dumps({"runs": args.runs, "first_container_seconds": [round(s, 3) for s in seconds]})
    )


if __name__ == "__main__":
    main()
