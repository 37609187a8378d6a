"""executor: the worker pool and its signal handling (no engine needed)."""

from __future__ import annotations

import io
import signal
import threading
import time

import records

from safeagents_batch.cli.output import LineProgress
from safeagents_batch.execution.executor import interrupt_handling, run_pool
from safeagents_batch.execution.reporting import CollectingReporter
from safeagents_batch.records.model import RunRecord, Status

PATIENCE_SECONDS = 30  # how long a task waits for the cancel: a bound, not a timing assertion


def record(run_id: str, status: Status) -> RunRecord:
    return records.run(run_id, records.attempt(1, status))


def test_a_signal_delivered_to_a_worker_thread_still_cancels_the_pool() -> None:
    """The kernel may hand a process-directed SIGINT/SIGTERM to any thread. The Python handler
    then runs only when the main thread next runs bytecode: the pool's wait must wake up by
    itself, or Ctrl-C would wait for a run to end (hours, for a long agent run)."""
    cancel = threading.Event()
    reporter = CollectingReporter()

    def task(run_id: str, cancel: threading.Event) -> RunRecord:
        time.sleep(0.5)  # let the main thread settle into its wait (else the test proves less)
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)  # lands on this worker
        cancelled = cancel.wait(PATIENCE_SECONDS)
        return record(run_id, "cancelled" if cancelled else "succeeded")

    with interrupt_handling(cancel, reporter):
        records = run_pool(
            ["a"], task, workers=1, progress=LineProgress(1, io.StringIO()), cancel=cancel
        )

    assert [r.status for r in records] == ["cancelled"]
    assert reporter.warnings == ["stopping: killing running containers..."]


def test_a_second_signal_only_says_cleanup_is_under_way() -> None:
    cancel = threading.Event()
    reporter = CollectingReporter()
    with interrupt_handling(cancel, reporter):
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGTERM)
    assert cancel.is_set()
    assert reporter.warnings == [
        "stopping: killing running containers...",
        "still cleaning up, please wait...",
    ]
