"""How the CLI shows what the library reports: notices and warnings on stderr, progress as a
tqdm bar on a terminal or one line per finished run elsewhere."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from safeagents_batch.backends.base import BuildProgress
from safeagents_batch.cli.builds import BuildDisplay
from safeagents_batch.cli.live import LiveReport
from safeagents_batch.core.text import printable
from safeagents_batch.execution.reporting import Progress
from safeagents_batch.records.model import RunRecord

PREFIX = "safeagents-batch: "
ERROR_LIMIT = 500  # characters of a run's error on its line (manifest, --json: whole)


class ConsoleReporter:
    """`on_first_finish` is called once, when the first run of a batch ends: the moment
    the batch is under way, for work that must not delay the first container."""

    def __init__(
        self,
        *,
        bar: bool | None = None,
        on_first_finish: Callable[[], object] | None = None,
        report_every: float | None = None,
    ) -> None:
        self.bar = bar
        self.on_first_finish = on_first_finish
        self.report_every = report_every  # `--report SECONDS`: the page rewritten as it runs
        self._bar: BarProgress | None = None  # the one showing, for the builds' live line
        self._batch_dir: Path | None = None
        self._builds: BuildDisplay | None = None

    def notice(self, text: str) -> None:
        print(printable(text), file=sys.stderr, flush=True)

    def warning(self, text: str) -> None:
        print(f"{PREFIX}warning: {printable(text)}", file=sys.stderr, flush=True)

    def progress(self, total: int) -> Progress:
        """A bar on a TTY unless told otherwise; plain lines elsewhere."""
        shown: Progress = LineProgress(total)
        if self._uses_bar():
            shown = self._bar = BarProgress(total)
        if self.report_every is not None and self._batch_dir is not None:
            shown = LiveReport(shown, self._batch_dir, self.report_every)
        return shown if self.on_first_finish is None else _FirstFinish(shown, self.on_first_finish)

    def started(self, batch_dir: Path) -> None:
        self._batch_dir = batch_dir

    def build_progress(self) -> BuildProgress:
        """Builds as lines beside the runs' lines, or as a live line on the bar's terminal;
        one display for the batch, so that builds at once share its lock and its line."""
        if self._builds is None:
            self._builds = BuildDisplay(live=self._uses_bar(), bar=self._showing_bar)
        return self._builds

    def _uses_bar(self) -> bool:
        return sys.stderr.isatty() and sys.stdout.isatty() if self.bar is None else self.bar

    def _showing_bar(self) -> Any:
        return None if self._bar is None or self._bar.closed else self._bar.bar


class _FirstFinish:
    def __init__(self, progress: Progress, callback: Callable[[], object]) -> None:
        self.progress = progress
        self.callback: Callable[[], object] | None = callback

    def finished(self, record: RunRecord) -> None:
        self.progress.finished(record)
        if self.callback is not None:
            callback, self.callback = self.callback, None
            callback()

    def close(self) -> None:
        self.progress.close()


def never_started(record: RunRecord) -> bool:
    """A run the batch stopped before its turn began (Ctrl-C, an engine that did not come
    back): summed up in one line, not one each. In a rerun it may have earlier attempts."""
    cancelled = record.unstarted is not None and record.unstarted.status == "cancelled"
    return cancelled or (record.status == "pending" and not record.attempts)


# Up to this many runs, one line per run; beyond, a line per failure and per step of progress.
EVERY_RUN_UP_TO = 100
PROGRESS_STEPS = 20


class LineProgress:
    """For logs, CI and pipes: one line per finished run in a small batch; in a big one, a
    line per run that did not succeed and one per twentieth of the batch. Runs that never
    started are one line at the end. Output grows with what there is to read, not with the
    batch."""

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.total = total
        self.done = 0
        self.counts: Counter[str] = Counter()
        self.unstarted: Counter[str] = Counter()
        self.step = max(1, total // PROGRESS_STEPS)
        self.closed_stream = False
        # Looked up now, not at import: sys.stdout may have been replaced since (redirects).
        self.stream = stream if stream is not None else sys.stdout

    def finished(self, record: RunRecord) -> None:
        if never_started(record):
            self.unstarted[record.status] += 1
            return
        self.done += 1
        self.counts[record.status] += 1
        if self.total <= EVERY_RUN_UP_TO or record.status != "succeeded":
            self._say(self._run_line(record))
        elif self.done % self.step == 0:
            self._say(f"[{self.done:>{len(str(self.total))}}/{self.total}] {counts(self.counts)}")

    def close(self) -> None:
        if self.unstarted:
            self._say(not_started_line(self.unstarted))

    def _run_line(self, record: RunRecord) -> str:
        width = len(str(self.total))
        duration = record.duration_seconds
        seconds = f" {duration:.1f}s" if duration is not None else ""
        shown = printable(record.error or "", ERROR_LIMIT)
        reason = f"  ({shown})" if shown and record.status != "succeeded" else ""
        position = f"[{self.done:>{width}}/{self.total}]"
        return f"{position} {record.status:<9} {record.run_id}{seconds}{reason}"

    def _say(self, line: str) -> None:
        """Best effort: a reader that went away (`run ... | head`) must not stop the batch."""
        if self.closed_stream:
            return
        try:
            print(line, file=self.stream, flush=True)
        except (BrokenPipeError, ValueError, OSError):
            self.closed_stream = True


def counts(by_status: Counter[str]) -> str:
    return ", ".join(f"{n} {status}" for status, n in sorted(by_status.items()) if n)


def not_started_line(unstarted: Counter[str]) -> str:
    parts = []
    if unstarted["cancelled"]:
        parts.append(f"{unstarted['cancelled']} cancelled before they started")
    if unstarted["pending"]:
        parts.append(f"{unstarted['pending']} not started (still pending)")
    return "runs not started: " + "; ".join(parts)


class BarProgress:
    """A tqdm bar with running counts, for an interactive terminal. Cancelled runs count apart
    from failed ones; runs that never started do not move the bar, which stops where the
    batch stopped, and are one line at the end."""

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        from tqdm import tqdm  # only a terminal run pays for the import

        self.bar = tqdm(
            total=total,
            unit="run",
            file=stream if stream is not None else sys.stderr,
            dynamic_ncols=True,
        )
        self.counts: Counter[str] = Counter()
        self.unstarted: Counter[str] = Counter()
        self.closed = False

    def finished(self, record: RunRecord) -> None:
        if never_started(record):
            self.unstarted[record.status] += 1
            return
        self.counts[record.status] += 1
        if record.status != "succeeded":
            # tqdm.write is a classmethod: it writes to stdout unless given the bar's stream.
            shown = printable(record.error or "", ERROR_LIMIT)
            self.bar.write(f"{record.status}: {record.run_id}  ({shown})", file=self.bar.fp)
        # Counts and position change together: one refresh, by update(), shows both.
        self.bar.set_postfix(
            ok=self.counts["succeeded"],
            failed=self.counts["failed"] + self.counts["timed_out"] + self.counts["error"],
            cancelled=self.counts["cancelled"],
            refresh=False,
        )
        self.bar.update(1)

    def close(self) -> None:
        self.closed = True
        self.bar.close()
        if self.unstarted:
            print(not_started_line(self.unstarted), file=self.bar.fp, flush=True)
