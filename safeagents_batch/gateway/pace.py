"""Pacing model calls to a provider's quota: a pool's requests and tokens per minute, shared by
every attempt of every job in the pool. A call is held until the pool has room for it, counted
at what it may cost (its request's size and its output cap), then corrected by the tokens its
answer states. Token buckets, refilled continuously; FIFO, so no call starves."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any

import msgspec

from safeagents_batch.jobs.model import PoolRate

BYTES_PER_TOKEN = 4  # a request's text weighs about this much per token: an over-estimate
OUTPUT_CAPS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


class Bucket:
    """`per_minute` units a minute, at most that many held; starts full. Its level may go below
    zero when a call cost more than it was counted at: later calls then wait for it."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.level = self.capacity
        self._clock = clock
        self._at = clock()

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` (at most the capacity) is there; 0 when it is now."""
        self._refill()
        missing = min(amount, self.capacity) - self.level
        return max(0.0, missing / self.rate)

    def take(self, amount: float) -> None:
        self._refill()
        self.level -= amount

    def give_back(self, amount: float) -> None:
        self._refill()
        self.level = min(self.capacity, self.level + amount)

    def _refill(self) -> None:
        now = self._clock()
        self.level = min(self.capacity, self.level + (now - self._at) * self.rate)
        self._at = now


class PoolPacer:
    """One pool's pace. `admit` and `settle` run on the gateway's event loop only."""

    def __init__(self, rate: PoolRate) -> None:
        self.requests = Bucket(rate.requests_per_minute) if rate.requests_per_minute else None
        self.tokens = Bucket(rate.tokens_per_minute) if rate.tokens_per_minute else None
        self._turn = asyncio.Lock()  # FIFO: the call at the head waits, the others behind it

    def counted(self, estimate: int) -> int:
        """What a call is counted at: its estimate, at most a minute of the pool (an agent's
        `max_tokens` of 10**15 must not hold the pool for ever)."""
        return min(estimate, int(self.tokens.capacity)) if self.tokens is not None else estimate

    async def admit(self, estimate: int) -> None:
        """Returns once the pool has room for one call of `estimate` tokens (as `counted`),
        and takes it."""
        async with self._turn:
            while (wait := self._wait(estimate)) > 0:
                await asyncio.sleep(wait)
            if self.requests is not None:
                self.requests.take(1)
            if self.tokens is not None:
                self.tokens.take(estimate)

    def settle(self, estimate: int, actual: int) -> None:
        """The call's real cost in tokens, now known: the difference is taken or given back."""
        if self.tokens is None:
            return
        if actual > estimate:
            self.tokens.take(actual - estimate)
        else:
            self.tokens.give_back(estimate - actual)

    def _wait(self, estimate: int) -> float:
        waits = [0.0]
        if self.requests is not None:
            waits.append(self.requests.wait_for(1))
        if self.tokens is not None:
            waits.append(self.tokens.wait_for(estimate))
        return max(waits)


def estimate_tokens(body: bytes) -> int:
    """What a request may cost: its size in tokens (over-estimated from its bytes) plus the
    output it allows (its `max_tokens`-like cap, when it sets one)."""
    cap = 0
    try:
        data: Any = msgspec.json.decode(body)
    except msgspec.DecodeError:
        data = None
    if isinstance(data, dict):
        caps = [data.get(key) for key in OUTPUT_CAPS]
        cap = max((c for c in caps if isinstance(c, int) and not isinstance(c, bool)), default=0)
    return math.ceil(len(body) / BYTES_PER_TOKEN) + max(0, cap)


def retry_after_seconds(headers: Any, default: float) -> float:
    """The wait a 429 asks for: `retry-after-ms`, else `Retry-After` in seconds (an HTTP date
    is not worth parsing here: the default stands in)."""
    for name, scale in (("retry-after-ms", 0.001), ("Retry-After", 1.0)):
        value = headers.get(name)
        try:
            seconds = float(value) * scale if value is not None else None
        except ValueError:
            seconds = None
        if seconds is not None and math.isfinite(seconds) and seconds >= 0:
            return seconds
    return default
