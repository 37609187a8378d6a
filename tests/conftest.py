"""Shared helpers for the unit tests: a throwaway project directory with a jobs file."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from standin_llm import StandIn

# Engine fixtures (docker_client, engine, orchestrators) for every test module that asks.
pytest_plugins = ["engine_fixtures", "engine_cli", "private_engine", "ray_cluster", "slurm_cluster"]


# Set in the child process tests/test_bounds.py starts for the tests marked `bounded`.
BOUNDED_CHILD = "SAB_BOUNDED_CHILD"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `bounded` run once, in the child that measures them (tests/test_bounds.py),
    not again in the session: they are deselected here, never skipped."""
    if os.environ.get(BOUNDED_CHILD):
        return
    bounded = [item for item in items if item.get_closest_marker("bounded")]
    if bounded:
        config.hook.pytest_deselected(items=bounded)
        items[:] = [item for item in items if not item.get_closest_marker("bounded")]


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


@pytest.fixture(scope="session", autouse=True)
def private_config_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The tool's per-user key (records/trust.py) in a config dir of the session's, not the
    user's own ~/.config; the CLI processes the tests start inherit it."""
    config = tmp_path_factory.mktemp("config")
    before = os.environ.get("XDG_CONFIG_HOME")
    os.environ["XDG_CONFIG_HOME"] = str(config)
    yield config
    if before is None:
        os.environ.pop("XDG_CONFIG_HOME", None)
    else:
        os.environ["XDG_CONFIG_HOME"] = before


@pytest.fixture
def standin() -> Iterator[StandIn]:
    """The stand-in model upstream (standin_llm.py) on loopback, for the gateway's tests."""
    server = StandIn()
    yield server
    server.close()
