"""A batch's `cost_limit`: what its runs' model calls have cost so far (every attempt on
record, earlier turns' too), and whether a new attempt may start. One that is running when the
limit is reached finishes; nothing new starts, and the runs not started stay pending for a
`rerun` (with a higher limit, through `rerun --jobs`)."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping

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
