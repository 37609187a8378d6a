"""safeagents-batch: run SafeAgents evaluation scripts in isolated Docker containers."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

MIN_PYTHON = (3, 11)  # pyproject.toml's requires-python; CI tests 3.11.2 (Debian 12's) and up

if sys.version_info < MIN_PYTHON:  # one line, not a SyntaxError or ImportError further in
    raise SystemExit(
        f"safeagents-batch needs Python >= {'.'.join(map(str, MIN_PYTHON))}; "
        f"{sys.executable} is {'.'.join(map(str, sys.version_info[:3]))}"
    )

from safeagents_batch.core.version import VERSION as __version__  # noqa: E402

__all__ = ["DockerRunner", "__version__"]

if TYPE_CHECKING:
    from safeagents_batch.runner import DockerRunner


def __getattr__(name: str) -> Any:
    # Imported on first use: the pure commands (validate, plan) need not load the Docker SDK.
    if name == "DockerRunner":
        from safeagents_batch.runner import DockerRunner

        return DockerRunner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
