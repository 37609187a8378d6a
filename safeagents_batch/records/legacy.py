"""Records as earlier versions of the tool wrote them, read into today's: manifest versions 1
and 2 (each attempt's outcome flat in the attempt; version 1 with absolute paths) and journal
version 1 lines. Decoded as strictly as today's; converted by keyword, field by field named.
"""

from __future__ import annotations

from msgspec import Struct

from safeagents_batch.records.events import AttemptEvent, Event
from safeagents_batch.records.model import Attempt, AttemptOutcome, RunRecord, Status


class AttemptV1(Struct, frozen=True, kw_only=True):
    number: int
    status: Status
    log_dir: str
    started_at: str | None = None
    ended_at: str | None = None
    duration_seconds: float | None = None
    exit_code: int | None = None
    error: str | None = None
    code_digest: str | None = None
    dropped_artifacts: tuple[str, ...] = ()
    node: dict[str, str] | None = None

    def today(self) -> Attempt:
        started = self.started_at or self.ended_at or ""
        outcome = None
        if self.status != "running":
            outcome = AttemptOutcome(
                status=self.status,
                started_at=started,
                ended_at=self.ended_at or started,
                exit_code=self.exit_code,
                error=self.error,
                node=self.node,
            )
        return Attempt(
            number=self.number,
            log_dir=self.log_dir,
            started_at=started,
            code_digest=self.code_digest,
            outcome=outcome,
            dropped_artifacts=self.dropped_artifacts,
        )


class RunV1(Struct, frozen=True, kw_only=True):
    """A run of manifest versions 1 and 2: no matrix values, no `unstarted` of its own (a
    status or error other than its latest attempt's said that its last turn started none)."""

    run_id: str
    job: str
    framework: str
    script: str
    script_sha256: str
    image: str
    env: dict[str, str]
    timeout: int
    status: Status
    error: str | None
    attempts: tuple[AttemptV1, ...]

    def today(self) -> RunRecord:
        record = RunRecord(
            run_id=self.run_id,
            job=self.job,
            framework=self.framework,
            script=self.script,
            script_sha256=self.script_sha256,
            image=self.image,
            env=self.env,
            timeout=self.timeout,
            attempts=tuple(a.today() for a in self.attempts),
        )
        if record.status != self.status or record.error != self.error:
            record = record.not_started(self.status, self.error or "")
        return record


class AttemptEventV1(Event, tag="attempt"):
    run_id: str
    attempt: AttemptV1

    def today(self) -> AttemptEvent:
        return AttemptEvent(
            seq=self.seq, at=self.at, run_id=self.run_id, attempt=self.attempt.today()
        )
