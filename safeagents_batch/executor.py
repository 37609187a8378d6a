"""A worker pool over run tasks, with progress output and Ctrl-C / SIGTERM handling.

One code path for any number of workers; cancellation is cooperative through one Event that
tasks (and the backend watching each container) check.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import contextmanager
from types import FrameType
from typing import Protocol, TextIO

from tqdm import tqdm

from safeagents_batch.manifest import RunRecord

Task = Callable[[str, threading.Event], RunRecord]
WAKE_SECONDS = 0.25


class Progress(Protocol):
    def finished(self, record: RunRecord) -> None: ...

    def close(self) -> None: ...


class LineProgress:
    """One line per finished run: for logs, CI and pipes."""

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.total = total
        self.done = 0
        # Looked up now, not at import: sys.stdout may have been replaced since (redirects).
        self.stream = stream if stream is not None else sys.stdout

    def finished(self, record: RunRecord) -> None:
        self.done += 1
        width = len(str(self.total))
        seconds = f" {record.duration_seconds:.1f}s" if record.duration_seconds is not None else ""
        reason = f"  ({record.error})" if record.error and record.status != "succeeded" else ""
        print(
            f"[{self.done:>{width}}/{self.total}] {record.status:<9} {record.run_id}{seconds}"
            f"{reason}",
            file=self.stream,
            flush=True,
        )

    def close(self) -> None:
        pass


class BarProgress:
    """A tqdm bar with running counts, for an interactive terminal."""

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.bar = tqdm(
            total=total,
            unit="run",
            file=stream if stream is not None else sys.stderr,
            dynamic_ncols=True,
        )
        self.counts: Counter[str] = Counter()

    def finished(self, record: RunRecord) -> None:
        self.counts[record.status] += 1
        if record.status != "succeeded":
            self.bar.write(f"{record.status}: {record.run_id}  ({record.error})")
        # Counts and position change together: one refresh, by update(), shows both.
        self.bar.set_postfix(
            ok=self.counts["succeeded"],
            failed=sum(self.counts.values()) - self.counts["succeeded"],
            refresh=False,
        )
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def make_progress(total: int, *, bar: bool | None) -> Progress:
    """A bar on a TTY unless told otherwise; plain lines elsewhere."""
    use_bar = sys.stderr.isatty() and sys.stdout.isatty() if bar is None else bar
    return BarProgress(total) if use_bar else LineProgress(total)


def run_pool(
    run_ids: Sequence[str], task: Task, *, workers: int, progress: Progress, cancel: threading.Event
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


@contextmanager
def interrupt_handling(cancel: threading.Event, on_first: Callable[[], None]) -> Iterator[None]:
    """First SIGINT/SIGTERM sets `cancel` (the batch winds down and cleans up); a second one
    only says that cleanup is under way, so it cannot cut cleanup short and leak containers."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only live in the main thread; the caller owns signals then
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if cancel.is_set():
            print(
                "safeagents-batch: still cleaning up, please wait...", file=sys.stderr, flush=True
            )
            return
        cancel.set()
        on_first()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
