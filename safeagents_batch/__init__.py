"""safeagents-batch: run SafeAgents evaluation scripts in isolated Docker containers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["DockerRunner", "__version__"]

if TYPE_CHECKING:
    from safeagents_batch.runner import DockerRunner


def __getattr__(name: str) -> Any:
    # Imported on first use: the pure commands (validate, plan) need not load the Docker SDK.
    if name == "DockerRunner":
        from safeagents_batch.runner import DockerRunner

        return DockerRunner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
