"""The Ray backend on a local cluster against the local Docker backend, on this one machine.

The cluster is the test suite's (tests/ray_cluster.py): a head with no slots, a node on the
host engine and an isolated node with its own engine, 2 slots each, all sharing this machine's
cores with the driver. Both sides run the same batch of N trivial runs at -j 4 through the
CLI, each as a child process (a fresh driver per batch, as a user runs it), after one warm-up
batch each (image built; shipped to the isolated node). Reports each side's median wall time
and the ratio ray / docker.

    python benchmarks/ray_vs_docker.py [--runs 40] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sweep import TOOL as CLI

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from ray_cluster import local_ray_cluster

JOBS = """version: 1
name: bench
frameworks: {{plain: {{packages: []}}}}
jobs:
  - {{name: bench, framework: plain, scripts: noop.py, repeat: {runs}, network: none}}
"""


def project(root: Path, runs: int) -> Path:
    root.mkdir(parents=True)
    (root / "noop.py").write_text("print('ok')\n", encoding="utf-8")
    jobs = root / "jobs.yaml"
    jobs.write_text(JOBS.format(runs=runs), encoding="utf-8")
    return jobs


def batch_seconds(jobs: Path, output: Path, backend: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [*CLI, "run", str(jobs), "-j", "4", "--no-progress", "-o", str(output), *backend],
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"benchmark batch failed ({done.returncode}): {done.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sab-bench-") as tmp:
        root = Path(tmp)
        jobs = project(root / "p", args.runs)
        with local_ray_cluster([Path("/work"), root]) as cluster:
            ray = ["--backend", "ray", "--ray-address", cluster.address]
            sides = {"docker": [], "ray": ray}
            for backend in sides.values():  # warm-up: image built, then shipped
                batch_seconds(jobs, root / "out", backend)
            times: dict[str, list[float]] = {name: [] for name in sides}
            for _ in range(args.repeat):  # interleaved: drift in the machine hits both
                for name, backend in sides.items():
                    times[name].append(batch_seconds(jobs, root / "out", backend))
    medians = {name: statistics.median(values) for name, values in times.items()}
    result = {
        "runs": args.runs,
        "workers": 4,
        "seconds": {name: [round(v, 2) for v in values] for name, values in times.items()},
        "median_seconds": {name: round(v, 2) for name, v in medians.items()},
        "ratio_ray_over_docker": round(medians["ray"] / medians["docker"], 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
