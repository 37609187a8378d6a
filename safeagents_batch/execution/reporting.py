"""Where the library's notices go. The library never prints: the CLI renders a Reporter on the
terminal, DockerRunner turns one into `warnings` and `logging`, tests collect one."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from safeagents_batch.backends.base import BuildProgress
from safeagents_batch.records.model import ImageRecord, RunRecord


class Progress(Protocol):
    def finished(self, record: RunRecord) -> None: ...

    def close(self) -> None: ...


class Reporter(Protocol):
    def notice(self, text: str) -> None:
        """Something the user may want to know (what a rerun will do, a cleanup done)."""
        ...

    def warning(self, text: str) -> None:
        """Something that went wrong without stopping the batch."""
        ...

    def progress(self, total: int) -> Progress:
        """A progress display for `total` runs."""
        ...

    def build_progress(self) -> BuildProgress:
        """Where the batch's image builds say what they do as they go."""
        ...

    def started(self, batch_dir: Path) -> None:
        """The batch dir is written and its runs are about to start (`run`, `rerun`)."""
        ...


class SilentProgress:
    def finished(self, record: RunRecord) -> None:
        pass

    def close(self) -> None:
        pass


class CollectingReporter:
    """Keeps every notice and warning in lists: for tests and for callers that show them later."""

    def __init__(self) -> None:
        self.notices: list[str] = []
        self.warnings: list[str] = []
        self.finished: list[RunRecord] = []
        self.builds: list[tuple[str, str]] = []  # (tag, "started" / a line / the status)
        self.batch_dir: Path | None = None

    def notice(self, text: str) -> None:
        self.notices.append(text)

    def warning(self, text: str) -> None:
        self.warnings.append(text)

    def progress(self, total: int) -> Progress:
        reporter = self

        class _Collect(SilentProgress):
            def finished(self, record: RunRecord) -> None:
                reporter.finished.append(record)

        return _Collect()

    def build_progress(self) -> BuildProgress:
        return _CollectBuild(self.builds)

    def started(self, batch_dir: Path) -> None:
        self.batch_dir = batch_dir


class _CollectBuild:
    def __init__(self, events: list[tuple[str, str]]) -> None:
        self.events = events

    def started(self, tag: str) -> None:
        self.events.append((tag, "started"))

    def output(self, tag: str, line: str) -> None:
        self.events.append((tag, line))

    def finished(self, record: ImageRecord) -> None:
        self.events.append((record.tag, record.status))
