"""The Slurm backend on a local two-node cluster, side by side with the same containers started
by `srun` in a loop at the same parallelism, and with the local Docker backend.

The cluster is the test suite's (tests/slurm_cluster.py): node A on the host engine, node B in
network and mount namespaces of its own with its own engine, 2 CPUs each, all on this
machine's cores with the driver. Each side runs N trivial runs, 4 at once:

* `slurm`: `safeagents-batch run --backend slurm -j 4` (one Slurm job per attempt, each asking
  for 1 CPU), a fresh CLI process per batch, as a user runs it;
* `srun`: 4 threads, each starting `srun -N1 -n1 -c1 docker run --rm` of the same image and
  script (bind-mounted read-only, no network) until N have run: the hand-rolled harness;
* `docker`: `safeagents-batch run --backend docker -j 4` on this machine alone.

One warm-up batch each first (the image built, then loaded on node B); then the sides
alternate. Reports each side's median wall time and the ratios.

    python benchmarks/slurm_vs_srun.py [--runs 40] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sweep import TOOL as CLI

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from slurm_cluster import local_slurm_cluster

WORKERS = 4
IMAGE_NAME = "sab-bench-slurm"  # its own images, removed at the end: none of the tests' shapes
JOBS = """version: 1
name: bench
image_name: sab-bench-slurm
frameworks: {{plain: {{packages: []}}}}
jobs:
  - {{name: bench, framework: plain, scripts: noop.py, repeat: {runs}, network: none,
      resources: {{cpus: 1}}}}
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
        [*CLI, "run", str(jobs), "-j", str(WORKERS), "--no-progress", "-o", str(output), *backend],
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"benchmark batch failed ({done.returncode}): {done.stderr}")
    shutil.rmtree(output)
    return seconds


def srun_seconds(runs: int, image: str, code: Path) -> float:
    """N containers through `srun`, WORKERS at a time."""
    argv = [
        "srun", "-N1", "-n1", "-c1", "--quiet", "docker", "run", "--rm", "--network", "none",
        "-v", f"{code}:/code:ro", image, "python", "/code/noop.py",
    ]  # fmt: skip
    left = list(range(runs))
    lock = threading.Lock()
    failures: list[str] = []

    def worker() -> None:
        while True:
            with lock:
                if not left:
                    return
                left.pop()
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
            if done.returncode != 0 or done.stdout.strip() != "ok":
                failures.append(done.stderr.strip() or done.stdout)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    if failures:
        raise SystemExit(f"srun side failed: {failures[0]}")
    return seconds


def remove_images() -> None:
    """The benchmark's images, from the host engine (node B's went with its engine)."""
    listed = subprocess.run(
        ["docker", "images", "-q", IMAGE_NAME], capture_output=True, text=True, check=True
    )
    ids = sorted(set(listed.stdout.split()))
    if ids:
        subprocess.run(["docker", "rmi", "-f", *ids], capture_output=True, check=True)


def built_image(output: Path) -> str:
    """The image tag the warm-up batch ran, from its manifest."""
    [manifest] = output.glob("*/manifest.json")
    tags = [image["tag"] for image in json.loads(manifest.read_text())["images"]]
    return str(tags[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sab-bench-") as tmp:
        root = Path(tmp)
        jobs = project(root / "p", args.runs)
        with local_slurm_cluster([Path("/work"), root]) as cluster:
            shared = cluster.shared
            code = shared / "code"
            code.mkdir()
            shutil.copy(jobs.parent / "noop.py", code / "noop.py")
            slurm = ["--backend", "slurm"]
            # Warm-up: the image built on the driver's engine, then loaded on node B.
            warm = shared / "warm"
            subprocess.run(
                [*CLI, "run", str(jobs), "-j", str(WORKERS), "-o", str(warm), *slurm],
                capture_output=True,
                check=True,
            )
            image = built_image(warm)
            batch_seconds(jobs, root / "local", [])
            sides: dict[str, Callable[[], float]] = {
                "slurm": lambda: batch_seconds(jobs, shared / "out", slurm),
                "srun": lambda: srun_seconds(args.runs, image, code),
                "docker": lambda: batch_seconds(jobs, root / "local", []),
            }
            times: dict[str, list[float]] = {name: [] for name in sides}
            for _ in range(args.repeat):  # interleaved: drift in the machine hits every side
                for name, side in sides.items():
                    times[name].append(side())
        remove_images()
    medians = {name: statistics.median(values) for name, values in times.items()}
    result = {
        "runs": args.runs,
        "workers": WORKERS,
        "seconds": {name: [round(v, 2) for v in values] for name, values in times.items()},
        "median_seconds": {name: round(v, 2) for name, v in medians.items()},
        "ratio_slurm_over_srun": round(medians["slurm"] / medians["srun"], 2),
        "ratio_slurm_over_docker": round(medians["slurm"] / medians["docker"], 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
