"""How the CLI shows what the library reports: notices and warnings on stderr, progress as a
tqdm bar on a terminal or one line per finished run elsewhere."""

from __future__ import annotations

import sys
from collections import Counter
from typing import TextIO

from safeagents_batch.records import RunRecord
from safeagents_batch.reporting import Progress

PREFIX = "safeagents-batch: "


class ConsoleReporter:
    def __init__(self, *, bar: bool | None = None) -> None:
        self.bar = bar

    def notice(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def warning(self, text: str) -> None:
        print(f"{PREFIX}warning: {text}", file=sys.stderr, flush=True)

    def progress(self, total: int) -> Progress:
        """A bar on a TTY unless told otherwise; plain lines elsewhere."""
        use_bar = sys.stderr.isatty() and sys.stdout.isatty() if self.bar is None else self.bar
        return BarProgress(total) if use_bar else LineProgress(total)


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
        duration = record.duration_seconds
        seconds = f" {duration:.1f}s" if duration is not None else ""
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
        from tqdm import tqdm  # only a terminal run pays for the import

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
