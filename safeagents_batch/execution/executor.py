"""A worker pool over run tasks with per-job and pool limits, Ctrl-C / SIGTERM handling, and
the gate that holds new work while the engine is lost.

One code path for any number of workers; cancellation is cooperative through one Event that
tasks (and the backend watching each container) check.
"""

from __future__ import annotations

import queue
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType

from safeagents_batch.execution.reporting import Progress, Reporter
from safeagents_batch.records.model import RunRecord

Task = Callable[[str, threading.Event], RunRecord]
WAKE_SECONDS = 0.25
PROBE_SECONDS = 1.0
DEFAULT_ENGINE_WAIT = 60.0


@dataclass(frozen=True)
class Limits:
    """Caps on runs at once beyond `-j`: each run holds some limit keys (its job's
    `max_parallel`, its pool) and a key's capacity is never exceeded."""

    capacity: Mapping[str, int] = field(default_factory=dict)
    keys_of: Callable[[str], tuple[str, ...]] = lambda run_id: ()


class Scheduler:
    """Which run starts next: the first in batch order whose limits have room. Runs are
    grouped by their limit keys (a handful of groups), so picking the next one looks at each
    group's head, never at every pending run; a run blocked by its job's limit does not hold
    up the runs of other jobs."""

    def __init__(self, run_ids: Sequence[str], limits: Limits) -> None:
        self.limits = limits
        self.groups: dict[tuple[str, ...], deque[tuple[int, str]]] = {}
        for index, run_id in enumerate(run_ids):
            self.groups.setdefault(limits.keys_of(run_id), deque()).append((index, run_id))
        self.pending = len(run_ids)
        self.running: Counter[str] = Counter()

    def take(self, *, ignore_limits: bool = False) -> str | None:
        """The next run to start (now counted as running), or None if none may start now."""
        best: tuple[int, tuple[str, ...]] | None = None
        for keys, waiting in self.groups.items():
            startable = waiting and (ignore_limits or self._has_room(keys))
            if startable and (best is None or waiting[0][0] < best[0]):
                best = (waiting[0][0], keys)
        if best is None:
            return None
        _, run_id = self.groups[best[1]].popleft()
        self.pending -= 1
        self.running.update(best[1])
        return run_id

    def release(self, run_id: str) -> None:
        self.running.subtract(self.limits.keys_of(run_id))

    def _has_room(self, keys: tuple[str, ...]) -> bool:
        return all(self.running[key] < self.limits.capacity[key] for key in keys)


def run_pool(
    run_ids: Sequence[str],
    task: Task,
    *,
    workers: int,
    progress: Progress,
    cancel: threading.Event,
    limits: Limits = Limits(),
) -> list[RunRecord]:
    """Runs `task` for every id on `workers` threads, each run within its limits; records come
    back in completion order. Once `cancel` is set the runs left are handed to `task` at once,
    whatever the limits (it records them as not started)."""
    pool = _Pool(Scheduler(run_ids, limits), task, cancel)
    threads = [
        threading.Thread(target=pool.work, name=f"run-{n}", daemon=True)
        for n in range(max(1, min(workers, len(run_ids))))
    ]
    for thread in threads:
        thread.start()
    records: list[RunRecord] = []
    try:
        while len(records) < len(run_ids):
            # Never block without a timeout: a Python signal handler only runs when the main
            # thread runs bytecode, and a signal the kernel hands to another thread does not
            # wake a main thread blocked on a lock; Ctrl-C would wait for the next run to end.
            try:
                outcome = pool.results.get(timeout=WAKE_SECONDS)
            except queue.Empty:
                continue
            if isinstance(outcome, BaseException):
                raise outcome
            records.append(outcome)
            progress.finished(outcome)
    except BaseException:
        cancel.set()  # let the other workers wind down before we join them
        raise
    finally:
        pool.stop()
        for thread in threads:
            thread.join()
        progress.close()
    return records


class _Pool:
    """The workers' shared state: the scheduler under one condition, and the results."""

    def __init__(self, scheduler: Scheduler, task: Task, cancel: threading.Event) -> None:
        self.scheduler = scheduler
        self.task = task
        self.cancel = cancel
        self.changed = threading.Condition()
        self.results: queue.SimpleQueue[RunRecord | BaseException] = queue.SimpleQueue()
        self._stopping = False

    def work(self) -> None:
        while (run_id := self._next()) is not None:
            try:
                self.results.put(self.task(run_id, self.cancel))
            except BaseException as exc:  # handed to the main thread, which re-raises it
                self.results.put(exc)
            finally:
                with self.changed:
                    self.scheduler.release(run_id)
                    self.changed.notify_all()

    def stop(self) -> None:
        with self.changed:
            self._stopping = True
            self.changed.notify_all()

    def _next(self) -> str | None:
        with self.changed:
            while not self._stopping and self.scheduler.pending:
                run_id = self.scheduler.take(ignore_limits=self.cancel.is_set())
                if run_id is not None:
                    return run_id
                self.changed.wait(WAKE_SECONDS)  # a limit is full: until a run ends
            return None


class EngineGate:
    """Open while the engine answers. An attempt that lost the engine closes it: workers then
    start nothing and wait, while one prober asks the engine every second for up to
    `wait_seconds`. If it answers, the gate opens again; if not, the engine is `gone` and the
    waiting workers give up, leaving their runs as they were."""

    def __init__(
        self,
        available: Callable[[], bool],
        reporter: Reporter,
        cancel: threading.Event,
        wait_seconds: float = DEFAULT_ENGINE_WAIT,
        probe_seconds: float = PROBE_SECONDS,
    ) -> None:
        self._available = available
        self._reporter = reporter
        self._cancel = cancel
        self.wait_seconds = wait_seconds
        self.probe_seconds = probe_seconds
        self.gone = False
        self._open = threading.Event()
        self._open.set()
        self._lock = threading.Lock()

    def lost(self) -> None:
        """Called by each worker whose attempt lost the engine; the first one starts probing."""
        with self._lock:
            if not self._open.is_set() or self.gone:
                return
            self._open.clear()
        self._reporter.warning(
            f"the engine stopped answering; no new run starts while waiting up to "
            f"{self.wait_seconds:g} s for it"
        )
        threading.Thread(target=self._probe, name="engine-probe", daemon=True).start()

    def wait_open(self) -> bool:
        """Blocks while the gate is closed; False when there is nothing to start any more (the
        engine is gone, or the batch is cancelled)."""
        while not self._open.wait(WAKE_SECONDS):
            if self._cancel.is_set():
                return False
        return not self.gone and not self._cancel.is_set()

    def _probe(self) -> None:
        deadline = time.monotonic() + self.wait_seconds
        while not self._cancel.is_set():
            if self._available():
                self._reporter.notice("the engine answers again; going on")
                break
            if time.monotonic() >= deadline:
                self.gone = True
                self._reporter.warning(
                    f"the engine did not come back within {self.wait_seconds:g} s; "
                    "runs not started stay pending"
                )
                break
            self._cancel.wait(self.probe_seconds)
        self._open.set()


@contextmanager
def interrupt_handling(cancel: threading.Event, reporter: Reporter) -> Iterator[None]:
    """First SIGINT/SIGTERM sets `cancel` (the batch winds down and cleans up); a second one
    only says that cleanup is under way, so it cannot cut cleanup short and leak containers."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only live in the main thread; the caller owns signals then
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if cancel.is_set():
            reporter.warning("still cleaning up, please wait...")
            return
        cancel.set()
        reporter.warning("stopping: killing running containers...")

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
