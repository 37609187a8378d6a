"""The batch's typed records: statuses, attempts, runs, images. Pure data, no I/O."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, get_args

from safeagents_batch.clock import seconds_between

Status = Literal["pending", "running", "succeeded", "failed", "timed_out", "error", "cancelled"]
STATUSES: tuple[Status, ...] = get_args(Status)
FINISHED: frozenset[Status] = frozenset({"succeeded", "failed", "timed_out", "error", "cancelled"})
ImageStatus = Literal["pending", "built", "cached", "failed"]


@dataclass(frozen=True)
class Attempt:
    """One container run of a run: the one record of it, from `running` to its end."""

    number: int
    status: Status
    log_dir: str
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
    build_log: str | None = None
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
