"""The batch's typed records: statuses, attempts, runs, images. Pure data, no I/O."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal, get_args

from safeagents_batch.clock import seconds_between

Status = Literal["pending", "running", "succeeded", "failed", "timed_out", "error", "cancelled"]
STATUSES: tuple[Status, ...] = get_args(Status)
FINISHED: frozenset[Status] = frozenset({"succeeded", "failed", "timed_out", "error", "cancelled"})
ImageStatus = Literal["pending", "built", "cached", "failed"]


def recorded_path(path: Path, batch_dir: Path) -> str:
    """How a record names `path`: relative to the batch dir, POSIX, when it lies inside it,
    so that a moved, copied or zipped batch dir keeps records that are true; else absolute.
    Lexical on purpose: the tool builds the paths it records from this same `batch_dir`."""
    absolute = path.absolute()
    try:
        return absolute.relative_to(batch_dir.absolute()).as_posix()
    except ValueError:
        return str(absolute)  # outside the batch dir: it does not move with it


def located(recorded: str, batch_dir: Path, recorded_batch_dir: str) -> Path:
    """Where a recorded path is now that the batch dir is at `batch_dir`. A relative one is
    under it. An absolute one under `recorded_batch_dir` (where the batch was created: what
    manifest version 1 recorded) is mapped to the same place under `batch_dir`, so a batch
    dir written before paths were relative still works after a move; others are as recorded."""
    path = Path(recorded)
    if not path.is_absolute():
        return batch_dir / path
    try:
        return batch_dir / path.relative_to(recorded_batch_dir)
    except ValueError:
        return path


@dataclass(frozen=True)
class Attempt:
    """One container run of a run: the one record of it, from `running` to its end."""

    number: int
    status: Status
    log_dir: str  # as `recorded_path` names it; `located` finds it (old records: absolute)
    started_at: str | None = None
    ended_at: str | None = None
    duration_seconds: float | None = None
    exit_code: int | None = None
    error: str | None = None
    code_digest: str | None = None
    # Artifacts the script left that were not kept (links, FIFOs, devices, over the cap).
    dropped_artifacts: tuple[str, ...] = ()
    # The cluster node it ran on (Ray: node_id, host, engine); None on a local engine.
    node: dict[str, str] | None = None

    def closed_as_error(self, reason: str, ended: str) -> Attempt:
        """This attempt, left `running` by an internal failure or a crash, closed as `error`."""
        duration = seconds_between(self.started_at, ended)
        return replace(
            self, status="error", ended_at=ended, duration_seconds=duration, error=reason
        )


@dataclass(frozen=True)
class Unstarted:
    """Why the latest turn of a run ended without starting an attempt (cancelled, no image)."""

    status: Status
    reason: str


@dataclass(frozen=True)
class RunRecord:
    """One run of the batch: what it runs, and its attempts. Its status, times and exit code
    are those of the latest attempt, unless its latest turn started none (`unstarted`)."""

    run_id: str
    job: str
    framework: str
    script: str
    script_sha256: str
    image: str
    env: dict[str, str]
    timeout: int
    attempts: tuple[Attempt, ...] = ()
    unstarted: Unstarted | None = None

    @property
    def latest(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None

    @property
    def status(self) -> Status:
        if self.unstarted is not None:
            return self.unstarted.status
        return self.latest.status if self.latest is not None else "pending"

    @property
    def error(self) -> str | None:
        if self.unstarted is not None:
            return self.unstarted.reason
        return self.latest.error if self.latest is not None else None

    @property
    def exit_code(self) -> int | None:
        shown = self._of_latest()
        return shown.exit_code if shown is not None else None

    @property
    def started_at(self) -> str | None:
        shown = self._of_latest()
        return shown.started_at if shown is not None else None

    @property
    def ended_at(self) -> str | None:
        shown = self._of_latest()
        return shown.ended_at if shown is not None else None

    @property
    def duration_seconds(self) -> float | None:
        shown = self._of_latest()
        return shown.duration_seconds if shown is not None else None

    @property
    def log_dir(self) -> str | None:
        return self.latest.log_dir if self.latest is not None else None

    def _of_latest(self) -> Attempt | None:
        """The latest attempt when it is what the run's status says (not after `unstarted`)."""
        return None if self.unstarted is not None else self.latest

    def with_attempt(self, attempt: Attempt) -> RunRecord:
        """This record with `attempt` added, or replacing the one of the same number."""
        others = tuple(a for a in self.attempts if a.number != attempt.number)
        return replace(self, attempts=(*others, attempt), unstarted=None)

    def not_started(self, status: Status, reason: str) -> RunRecord:
        return replace(self, unstarted=Unstarted(status, reason))


@dataclass(frozen=True)
class ImageRecord:
    tag: str
    framework: str
    status: ImageStatus
    build_seconds: float | None = None
    build_log: str | None = None  # as `recorded_path` names it, like an attempt's log_dir
    error: str | None = None
    # What the image holds (`pip freeze --all`): its Python's packages, the Azure CLI venv's.
    packages: tuple[str, ...] = ()
    azure_cli_packages: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Read back from JSON as lists: held as tuples, so that a record equals its reread.
        object.__setattr__(self, "packages", tuple(self.packages))
        object.__setattr__(self, "azure_cli_packages", tuple(self.azure_cli_packages))

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "packages": list(self.packages),
            "azure_cli_packages": list(self.azure_cli_packages),
        }
