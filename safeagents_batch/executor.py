"""A worker pool over run tasks, Ctrl-C / SIGTERM handling, and the gate that holds new work
while the engine is lost.

One code path for any number of workers; cancellation is cooperative through one Event that
tasks (and the backend watching each container) check.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import contextmanager
from types import FrameType

from safeagents_batch.records import RunRecord
from safeagents_batch.reporting import Progress, Reporter

Task = Callable[[str, threading.Event], RunRecord]
WAKE_SECONDS = 0.25
PROBE_SECONDS = 1.0
DEFAULT_ENGINE_WAIT = 60.0


def run_pool(
    run_ids: Sequence[str],
    task: Task,
    *,
    workers: int,
    progress: Progress,
    cancel: threading.Event,
) -> list[RunRecord]:
    """Runs `task` for every id on `workers` threads; records come back in completion order."""
    records: list[RunRecord] = []
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="run") as pool:
        pending = {pool.submit(task, run_id, cancel) for run_id in run_ids}
        try:
            while pending:
                # Never block without a timeout: a Python signal handler only runs when the main
                # thread runs bytecode, and a signal the kernel hands to another thread does not
                # wake a main thread blocked on a lock; Ctrl-C would wait for the next run to end.
                done, pending = wait(pending, timeout=WAKE_SECONDS, return_when=FIRST_COMPLETED)
                for future in done:
                    record = future.result()
                    records.append(record)
                    progress.finished(record)
        except BaseException:
            cancel.set()  # let the other workers wind down before the pool joins them
            raise
        finally:
            progress.close()
    return records


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
