"""Backends run one prepared request and report a RunResult; they know nothing of batches."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from safeagents_batch.model import Hardening, Resources


@dataclass(frozen=True)
class RunRequest:
    """Everything a backend needs for one attempt. `env` holds real values (secrets too): it
    lives only in memory and goes to the engine through its API, never onto a command line."""

    run_id: str
    batch_id: str
    attempt: int
    image: str
    script: Path
    log_dir: Path
    env: dict[str, str] = field(repr=False, default_factory=dict)
    timeout: int | None = None
    azure_dir: Path | None = None
    azure_mode: str = "ro"
    resources: Resources = Resources()
    network: str = "bridge"
    read_only_rootfs: bool = False
    hardening: Hardening = Hardening()


@dataclass(frozen=True)
class RunResult:
    """What a backend reports for one attempt; `error` says why when it was not a success."""

    status: str
    exit_code: int | None
    started_at: str
    ended_at: str
    error: str | None = None
