"""Records built by keyword for the unit tests: a finished attempt, a run with attempts."""

from __future__ import annotations

from typing import Any

from safeagents_batch.records.model import Attempt, AttemptOutcome, RunRecord, Status

T0, T1 = "2026-01-01T00:00:00+00:00", "2026-01-01T00:00:01.500+00:00"


def attempt(
    number: int = 1,
    status: Status = "succeeded",
    log_dir: str = "logs",
    *,
    exit_code: int | None = None,
    error: str | None = None,
    started: str = T0,
    ended: str = T1,
    node: dict[str, str] | None = None,
) -> Attempt:
    """An attempt that ended in `status` (one that still runs when `status` is `running`)."""
    outcome = None
    if status != "running":
        outcome = AttemptOutcome(
            status=status,
            started_at=started,
            ended_at=ended,
            exit_code=exit_code,
            error=error,
            node=node,
        )
    return Attempt(number=number, log_dir=log_dir, started_at=started, outcome=outcome)


def run(
    run_id: str,
    *attempts: Attempt,
    job: str = "job",
    env: dict[str, str] | None = None,
    matrix: dict[str, str] | None = None,
) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        job=job,
        framework="plain",
        script="s.py",
        script_sha256="0" * 64,
        image="img:tag",
        env=env or {},
        timeout=60,
        matrix=matrix,
        attempts=attempts,
    )


def outcome_of(attempt: dict[str, Any]) -> dict[str, Any]:
    """An attempt of manifest.json, its outcome's fields; those of one still running: status
    `running`, the rest null."""
    outcome = attempt["outcome"]
    if outcome is None:
        running = ("exit_code", "error", "node", "ended_at", "duration_seconds")
        return {"status": "running", "started_at": attempt["started_at"]} | dict.fromkeys(running)
    assert isinstance(outcome, dict)
    return outcome
