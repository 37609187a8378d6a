"""The tool against the engine's own rate: N trivial runs through `safeagents-batch run -j 4`,
side by side with `xargs -P 4 docker run --rm` of the same script on the same image, in the
same session, alternating, best of R rounds each. Prints both times and their ratio.

    python benchmarks/vs_xargs.py [--runs 40] [--rounds 3] [--workers 4]

Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

from sweep import TOOL

JOBS = """version: 1
name: bench
frameworks: {{plain: {{packages: []}}}}
jobs:
  - {{name: bench, framework: plain, scripts: noop.py, repeat: {runs}}}
"""
SCRIPT = "print('ok')\n"


def tool(project: Path, runs: int, workers: int) -> float:
    jobs = project / "jobs.yaml"
    jobs.write_text(JOBS.format(runs=runs), encoding="utf-8")
    out = project / "out"
    started = time.perf_counter()
    done = subprocess.run(
        [*TOOL, "run", str(jobs), "-j", str(workers), "--no-progress", "-o", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"the batch failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds


def image_tag(project: Path) -> str:
    jobs = project / "jobs.yaml"
    jobs.write_text(JOBS.format(runs=1), encoding="utf-8")
    done = subprocess.run(
        [*TOOL, "plan", str(jobs), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    tag: str = json.loads(done.stdout)["runs"][0]["image"]
    return tag


def xargs(code_dir: Path, tag: str, runs: int, workers: int) -> float:
    """The reference: the engine's own rate for the same container, mounted the same way."""
    command = (
        f"seq {runs} | xargs -P {workers} -I{{}} docker run --rm "
        f"-v {code_dir}:/safeagents/code:ro {tag} python /safeagents/code/noop.py >/dev/null"
    )
    started = time.perf_counter()
    subprocess.run(["bash", "-c", command], check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sab-vs-xargs-") as tmp:
        project = Path(tmp)
        (project / "noop.py").write_text(SCRIPT, encoding="utf-8")
        # The reference mounts the dir itself: open it to the image's non-root user.
        project.chmod(0o755)
        (project / "noop.py").chmod(0o644)
        tool(project, 2, 1)  # warm-up: builds the image once
        tag = image_tag(project)
        ours, theirs = [], []
        for _ in range(args.rounds):
            theirs.append(xargs(project, tag, args.runs, args.workers))
            ours.append(tool(project, args.runs, args.workers))
    result = {
        "runs": args.runs,
        "workers": args.workers,
        "rounds": args.rounds,
        "xargs_seconds": [round(s, 2) for s in theirs],
        "tool_seconds": [round(s, 2) for s in ours],
        "ratio_best": round(min(ours) / min(theirs), 3),
        "ratio_median": round(sorted(ours)[len(ours) // 2] / sorted(theirs)[len(theirs) // 2], 3),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
