"""What model calls may still cost. A batch's `cost_limit`: what its runs' calls have cost so
far (every attempt on record, earlier turns' too), and whether a new attempt may start. One that
is running when the limit is reached finishes; nothing new starts, and the runs not started stay
pending for a `rerun` (with a higher limit, through `rerun --jobs`). A run's `cost_limit`: what
its earlier attempts left the next. A pool's pace, for the gateway."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping

from safeagents_batch.backends.base import Pace
from safeagents_batch.jobs.model import PoolRate
from safeagents_batch.records.model import ModelUsage, RunRecord


class Budget:
    """Thread-safe; `limit` None: no limit, never exhausted."""

    def __init__(self, limit: float | None, runs: Iterable[RunRecord] = ()) -> None:
        self.limit = limit
        self.spent = 0.0
        self.unknown = 0  # calls whose price is not known: not in `spent`
        self._lock = threading.Lock()
        for run in runs:
            for attempt in run.attempts:
                if attempt.outcome is not None:
                    self.add(attempt.outcome.usage)

    def add(self, usage: Mapping[str, ModelUsage] | None) -> None:
        usages = list((usage or {}).values())
        with self._lock:
            self.spent += sum(u.cost_usd for u in usages)
            self.unknown += sum(u.unpriced for u in usages)

    @property
    def exhausted(self) -> bool:
        with self._lock:
            return self.limit is not None and self.spent >= self.limit

    def reason(self) -> str:
        unknown = f" (and {self.unknown} calls of unknown cost)" if self.unknown else ""
        return f"batch cost limit reached: ${self.spent:.4f} spent of ${self.limit:g}{unknown}"


def cost_left(limit: float | None, run: RunRecord) -> float | None:
    """What a run's `cost_limit` leaves its next attempt: the limit is the run's, so the
    attempts before this one (retries, earlier turns) have spent some of it."""
    if limit is None:
        return None
    return max(0.0, limit - Budget(None, [run]).spent)


def pool_pace(pool: str | None, rates: Mapping[str, PoolRate]) -> Pace | None:
    """The pace of a job's pool, when the pool sets one."""
    rate = rates.get(pool) if pool is not None else None
    return Pace(pool, rate) if pool is not None and rate is not None else None
