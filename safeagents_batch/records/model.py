"""The batch's typed records: statuses, attempts and their outcomes, runs, images. Pure data, no
I/O: msgspec Structs, declared once, built by keyword, encoded as they are and decoded
strictly (a wrong type anywhere is an error naming its place, never a KeyError later).

A run's latest state (status, error, times, log dir) is derived from its attempts and written
beside them for readers of manifest.json; it is computed whenever a record is made or decoded,
so what a file says there can never disagree with its attempts.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal, get_args

from msgspec import Struct, structs

from safeagents_batch.core.clock import seconds_between
from safeagents_batch.records.provenance import GitState

Status = Literal["pending", "running", "succeeded", "failed", "timed_out", "error", "cancelled"]
STATUSES: tuple[Status, ...] = get_args(Status)
FINISHED: frozenset[Status] = frozenset({"succeeded", "failed", "timed_out", "error", "cancelled"})
ImageStatus = Literal["pending", "built", "cached", "failed"]


def recorded_path(path: Path, batch_dir: Path) -> str:
    """How a record names `path`: relative to the batch dir, POSIX, so that a moved, copied
    or zipped batch dir keeps records that are true. Lexical on purpose: the tool builds the
    paths it records from this same `batch_dir`. A path outside it is a bug of the tool's
    (ValueError): the readers refuse such a record."""
    try:
        return path.absolute().relative_to(batch_dir.absolute()).as_posix()
    except ValueError:
        raise ValueError(f"{path} is outside the batch dir {batch_dir}: not recorded") from None


class ModelUsage(Struct, frozen=True, kw_only=True):
    """One attempt's calls to one model of `models:`, as the batch's gateway counted them:
    tokens as the upstream's answers state them (`usage`), errors are answers of status 400
    and over (after the gateway's retries of a 429) or calls the upstream never answered.
    `answered_by`: the model names the upstream said answered (a deployment may answer with a
    dated version)."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    errors: int = 0
    retries: int = 0  # answers of 429 the gateway waited out and asked again
    cost_usd: float = 0.0  # of the calls whose price is known (gateway/prices.py)
    unpriced: int = 0  # calls whose cost is not known: `cost_usd` leaves them out
    answered_by: tuple[str, ...] = ()

    @staticmethod
    def sum(usages: Iterable[ModelUsage]) -> ModelUsage:
        total = ModelUsage()
        for usage in usages:
            total = total.plus(usage)
        return total

    def plus(self, other: ModelUsage) -> ModelUsage:
        return ModelUsage(
            requests=self.requests + other.requests,
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            errors=self.errors + other.errors,
            retries=self.retries + other.retries,
            cost_usd=self.cost_usd + other.cost_usd,
            unpriced=self.unpriced + other.unpriced,
            answered_by=tuple(dict.fromkeys((*self.answered_by, *other.answered_by))),
        )


class AttemptOutcome(Struct, frozen=True, kw_only=True):
    """How one attempt ended, as its backend says. `engine_lost`: the engine stopped answering
    during the attempt (the pool pauses until it is back). `node`: where a remote backend ran
    it (Ray: node id, host name, engine); None on a local engine."""

    status: Status
    started_at: str
    ended_at: str
    exit_code: int | None = None
    error: str | None = None
    engine_lost: bool = False
    node: dict[str, str] | None = None
    # Model calls through the batch's gateway, per name under `models:`; None: no models.
    usage: dict[str, ModelUsage] | None = None
    # The OCI runtime the engine ran the container with, as it says (runc, runsc, ...); None
    # when no container was made, or in a record from before the tool wrote it.
    runtime: str | None = None
    # The `resources` limits the engine dropped (`resources.memory`, ...), with the job's
    # `enforce_limits: false`; with it true, such an attempt is refused before it starts.
    dropped_limits: tuple[str, ...] = ()
    duration_seconds: float | None = None  # derived from the two times

    def __post_init__(self) -> None:
        structs.force_setattr(
            self, "duration_seconds", seconds_between(self.started_at, self.ended_at)
        )


class Attempt(Struct, frozen=True, kw_only=True):
    """One container run of a run: the one record of it, from `running` (no outcome yet) to
    its end (the backend's outcome, embedded)."""

    number: int
    log_dir: str  # as `recorded_path` names it; safedir.inside finds it (old records: absolute)
    started_at: str  # when it was recorded running
    code_digest: str | None = None
    # The code's git state when the command that ran this attempt staged it (`run`, or a
    # `rerun` after edits): the commit, and whether the jobs file or a script dir differed.
    git: GitState | None = None
    outcome: AttemptOutcome | None = None
    # Artifacts the script left that were not kept (links, FIFOs, devices, over the cap).
    dropped_artifacts: tuple[str, ...] = ()

    @property
    def status(self) -> Status:
        return self.outcome.status if self.outcome is not None else "running"

    @property
    def error(self) -> str | None:
        return self.outcome.error if self.outcome is not None else None

    @property
    def ended_at(self) -> str | None:
        return self.outcome.ended_at if self.outcome is not None else None

    def finished(self, outcome: AttemptOutcome, dropped: tuple[str, ...] = ()) -> Attempt:
        return structs.replace(self, outcome=outcome, dropped_artifacts=dropped)

    def closed_as_error(self, reason: str, ended: str) -> Attempt:
        """This attempt, left `running` by an internal failure or a crash, closed as `error`."""
        closed = AttemptOutcome(
            status="error", started_at=self.started_at, ended_at=ended, error=reason
        )
        return self.finished(closed, self.dropped_artifacts)


class Unstarted(Struct, frozen=True, kw_only=True):
    """Why the latest turn of a run ended without starting an attempt (cancelled, no image)."""

    status: Status
    reason: str


class RunRecord(Struct, frozen=True, kw_only=True):
    """One run of the batch: what it runs, with its matrix values, and its attempts. Its
    status, error, times and exit code are those of the latest attempt's outcome, unless its
    latest turn started none (`unstarted`)."""

    run_id: str
    job: str
    framework: str
    script: str
    script_sha256: str
    image: str
    env: dict[str, str]  # names -> values as written down (secret ones redacted)
    timeout: int
    # The matrix values of this run (variable -> value, in the jobs file's order); None in a
    # record of a tool that did not write them (manifest version 1 or 2).
    matrix: dict[str, str] | None = None
    # The env names the job's `record_env` wrote down with their values (in `env`).
    recorded: tuple[str, ...] = ()
    attempts: tuple[Attempt, ...] = ()
    unstarted: Unstarted | None = None
    # Derived: the latest state, flat (see the module docstring).
    status: Status = "pending"
    error: str | None = None
    exit_code: int | None = None
    started_at: str | None = None
    ended_at: str | None = None
    duration_seconds: float | None = None
    log_dir: str | None = None

    def __post_init__(self) -> None:
        latest = self.attempts[-1] if self.attempts else None
        shown = None if self.unstarted is not None else latest
        outcome = shown.outcome if shown is not None else None
        error: str | None = None
        if self.unstarted is not None:
            error = self.unstarted.reason
        elif latest is not None:
            error = latest.error
        derived = {
            "status": self._status(latest),
            "error": error,
            "exit_code": outcome.exit_code if outcome else None,
            "started_at": outcome.started_at if outcome else shown.started_at if shown else None,
            "ended_at": outcome.ended_at if outcome else None,
            "duration_seconds": outcome.duration_seconds if outcome else None,
            "log_dir": latest.log_dir if latest is not None else None,
        }
        for name, value in derived.items():
            structs.force_setattr(self, name, value)

    def _status(self, latest: Attempt | None) -> Status:
        if self.unstarted is not None:
            return self.unstarted.status
        return latest.status if latest is not None else "pending"

    @property
    def latest(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None

    def with_attempt(self, attempt: Attempt) -> RunRecord:
        """This record with `attempt` added, or replacing the one of the same number."""
        others = tuple(a for a in self.attempts if a.number != attempt.number)
        return structs.replace(self, attempts=(*others, attempt), unstarted=None)

    def not_started(self, status: Status, reason: str) -> RunRecord:
        return structs.replace(self, unstarted=Unstarted(status=status, reason=reason))


class ImageRecord(Struct, frozen=True, kw_only=True):
    """One image of the batch: found or built where runs go (or failed), and what it holds."""

    tag: str
    framework: str
    status: ImageStatus
    build_seconds: float | None = None
    build_log: str | None = None  # as `recorded_path` names it, like an attempt's log_dir
    error: str | None = None
    # What the image holds (`pip freeze --all`): its Python's packages, the Azure CLI venv's.
    packages: tuple[str, ...] = ()
    azure_cli_packages: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    def recorded(self, batch_dir: Path) -> ImageRecord:
        """This record as the batch at `batch_dir` keeps it: its build log (in the batch dir)
        named relative to it (a backend names it by its absolute path)."""
        if self.build_log is None:
            return self
        return structs.replace(self, build_log=recorded_path(Path(self.build_log), batch_dir))
