"""`run --report SECONDS` (and `rerun`): the batch's page rewritten while it runs, so a browser
tab can watch a long batch (the page reloads itself while the batch's state is `running`)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from safeagents_batch.core.errors import one_line
from safeagents_batch.execution.reporting import Progress
from safeagents_batch.records.model import RunRecord


class LiveReport:
    """Wraps a batch's progress display: when the batch starts, and then when a run ends at
    least `every` seconds after the last write began, the report is written again in a thread
    of its own (runs never wait for it; a write still going skips the next chance). `close`
    waits for a write in flight: the report the batch ends with is written after it, never
    overwritten by it."""

    def __init__(
        self,
        progress: Progress,
        batch_dir: Path,
        every: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.progress = progress
        self.batch_dir = batch_dir
        self.every = every
        self.clock = clock
        self._lock = threading.Lock()
        self._last: float | None = None
        self._thread: threading.Thread | None = None
        self._warned = False
        self._maybe_write()

    def finished(self, record: RunRecord) -> None:
        self.progress.finished(record)
        self._maybe_write()

    def close(self) -> None:
        self.progress.close()
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join()

    def _maybe_write(self) -> None:
        with self._lock:
            now = self.clock()
            writing = self._thread is not None and self._thread.is_alive()
            if writing or (self._last is not None and now - self._last < self.every):
                return
            self._last = now
            self._thread = threading.Thread(target=self._write, name="live-report", daemon=True)
            self._thread.start()

    def _write(self) -> None:
        try:
            from safeagents_batch.report.page import write_report

            # The page only: samples.csv is the end's to write (its pass costs seconds for a
            # big batch, and would be redone at each write).
            write_report(self.batch_dir, refresh=refresh_seconds(self.every), samples=False)
        except Exception as exc:  # the batch goes on: its report at the end says the rest
            if not self._warned:
                self._warned = True
                print(
                    f"safeagents-batch: warning: the live report was not written: {one_line(exc)}",
                    file=sys.stderr,
                    flush=True,
                )


def refresh_seconds(every: float) -> int:
    """How often the page of a running batch reloads: as often as it is rewritten, at most
    once a second."""
    return max(1, round(every))
