"""The Python floor: pyproject's requires-python, the package's one-line refusal below it, and
the node's (ray_boot ships alone, so it keeps its own copy of the floor)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import safeagents_batch

ROOT = Path(__file__).resolve().parent.parent


def test_requires_python_is_the_packages_floor() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    floor = ".".join(map(str, safeagents_batch.MIN_PYTHON))
    assert project["project"]["requires-python"] == f">={floor}"
    assert project["tool"]["mypy"]["python_version"] == floor
    assert project["tool"]["ruff"]["target-version"] == "py" + floor.replace(".", "")


def test_an_older_python_is_refused_in_one_line() -> None:
    probe = "import sys; sys.version_info = (3, 10, 12, 'final', 0); import safeagents_batch"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == f"safeagents-batch needs Python >= 3.11; {sys.executable} is 3.10.12\n"
