"""Shared helpers for the unit tests: a throwaway project directory with a jobs file."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

# Engine fixtures (docker_client, engine, orchestrators) for every test module that asks.
pytest_plugins = ["engine_fixtures", "engine_cli", "private_engine", "ray_cluster"]


@dataclass(frozen=True)
class Project:
    """A directory holding a jobs file and the files it names (scripts, env files, ...)."""

    root: Path

    def write(self, relative: str, text: str = "print('hi')\n") -> Path:
        """Write a file under the project (parents created); returns its path."""
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    def jobs(self, yaml_text: str, name: str = "jobs.yaml") -> Path:
        """Write a jobs file; the text is dedented so tests can indent it naturally."""
        return self.write(name, textwrap.dedent(yaml_text).lstrip("\n"))


@pytest.fixture
def project(tmp_path: Path) -> Project:
    """An empty project dir with two scripts, scripts/a.py and scripts/b.py."""
    proj = Project(tmp_path / "proj")
    proj.write("scripts/a.py")
    proj.write("scripts/b.py")
    return proj
