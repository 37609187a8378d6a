"""The jobs file the scale benchmarks run: one trivial script over a matrix (x repeats past
1,000 runs, the schema's cap on `repeat`), so that a file of any size is one job."""

from __future__ import annotations

import sys
from pathlib import Path

# The installed command, as a user runs it (from its compiled modules, never from a source
# tree that happens to be the current directory); `python -m` where there is none.
_SCRIPT = Path(sys.executable).with_name("safeagents-batch")
TOOL = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "safeagents_batch"]

JOBS = """version: 1
name: {name}
frameworks: {{plain: {{packages: []}}}}
jobs:
  - name: sweep
    framework: plain
    scripts: task.py
    matrix: {{TASK: [{tasks}]}}
    repeat: {repeat}
"""


def write_sweep(root: Path, runs: int, name: str) -> Path:
    """`runs` trivial runs in `root`: task.py and jobs.yaml; returns the jobs file."""
    (root / "task.py").write_text("print('ok')\n", encoding="utf-8")
    tasks, repeat = (runs, 1) if runs <= 1000 else (runs // 1000, 1000)
    jobs = root / "jobs.yaml"
    listed = ", ".join(map(str, range(tasks)))
    jobs.write_text(JOBS.format(name=name, tasks=listed, repeat=repeat), encoding="utf-8")
    return jobs
