"""An attempt's pass at the gateway: the models its token may call, where its calls are
recorded, its pool's pace, its run's cost limit, and what its calls used."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from safeagents_batch.gateway.pace import PoolPacer
from safeagents_batch.jobs.model import ModelUpstream
from safeagents_batch.records.model import ModelUsage

Recorder = Callable[[bytes], None]
CALLS_AT_ONCE = 16  # of one attempt


@dataclass(frozen=True)
class AttemptCalls:
    """An attempt's model calls, once its token is closed: usage per model, and why further
    calls were refused when its run's cost limit stopped them."""

    usage: dict[str, ModelUsage]
    stopped: str | None = None


@dataclass
class AttemptPass:
    """One attempt's token: the models it may call, where its calls are recorded, its pool's
    pace, its run's cost limit, its usage."""

    models: Mapping[str, ModelUpstream]
    recorder: Recorder
    pacer: PoolPacer | None = None
    cost_limit: float | None = None
    usage: dict[str, ModelUsage] = field(default_factory=dict)
    stopped: str | None = None  # set once the cost limit refuses a call
    lock: threading.Lock = field(default_factory=threading.Lock)
    in_flight: int = 0
    settled: threading.Condition = field(init=False)
    # Calls at once: more wait their turn, so one agent cannot take the gateway's memory and
    # descriptors from every other attempt.
    turns: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(CALLS_AT_ONCE))

    def __post_init__(self) -> None:
        self.settled = threading.Condition(self.lock)

    def call_started(self) -> None:
        with self.lock:
            self.in_flight += 1

    def call_ended(self) -> None:
        with self.lock:
            self.in_flight -= 1
            self.settled.notify_all()

    def wait_settled(self, seconds: float) -> None:
        """Until no call of the attempt is in flight (its container has ended: the last ones
        are finishing), at most `seconds`."""
        with self.lock:
            self.settled.wait_for(lambda: self.in_flight == 0, timeout=seconds)

    def count(self, model: str, usage: ModelUsage) -> None:
        with self.lock:
            self.usage[model] = self.usage.get(model, ModelUsage()).plus(usage)

    def totals(self) -> AttemptCalls:
        """Its usage, and why the cost limit stopped it: a refused call, or the last calls
        (several at once, each let through under the limit) that took it past."""
        with self.lock:
            return AttemptCalls(dict(self.usage), self.stopped or self._over_limit())

    def refusal(self) -> str | None:
        """Why the next call may not go out: the run's cost limit is spent, or cannot be
        kept because a call's price is not known."""
        with self.lock:
            self.stopped = self.stopped or self._over_limit()
            return self.stopped

    def _over_limit(self) -> str | None:
        if self.cost_limit is None:
            return None
        unpriced = [name for name, u in self.usage.items() if u.unpriced]
        if unpriced:
            return (
                f"cost limit: no price is known for model {', '.join(unpriced)}, so the limit "
                f"of ${self.cost_limit:g} cannot be kept (set models.<name>.prices)"
            )
        spent = sum(u.cost_usd for u in self.usage.values())
        if spent >= self.cost_limit:
            return f"cost limit: ${spent:.4f} spent of ${self.cost_limit:g}"
        return None
