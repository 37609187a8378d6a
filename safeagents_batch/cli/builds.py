"""How the CLI shows image builds as they go: a cold build takes a minute or two, and a tool
silent for that long looks hung (in CI, it may be killed as such)."""

from __future__ import annotations

import shutil
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from safeagents_batch.core.text import printable
from safeagents_batch.records.model import ImageRecord

EVERY_SECONDS = 10.0  # off a terminal: at most one line per build this often
CLEAR_LINE = "\r\x1b[K"
BAR_WIDTH = 45  # what a progress bar needs beside its description: `40%|####  | 4/10 [...]`


def _timer(seconds: float, function: Callable[[], None]) -> threading.Timer:
    timer = threading.Timer(seconds, function)
    timer.daemon = True  # a process that is done does not wait for a line
    timer.start()
    return timer


class BuildDisplay:
    """Off a terminal: a line when a build starts, then its latest output line (a step, what
    the step prints) at most every EVERY_SECONDS, then, with `say_end`, a line when it ends; a
    log or CI shows where a build is without a line per package. On a terminal: the same
    start and end lines, and between them one live line rewritten with each output line
    (the progress bar's description while a bar shows). Safe from several build threads."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        live: bool,
        say_end: bool = True,
        bar: Callable[[], Any] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        later: Callable[[float, Callable[[], None]], object] = _timer,
    ) -> None:
        # Looked up now, not at import: sys.stdout may have been replaced since (redirects).
        self.stream = stream if stream is not None else (sys.stderr if live else sys.stdout)
        self.live = live
        self.say_end = say_end
        self.bar = bar  # the run's tqdm bar while one shows, else None
        self.clock = clock
        self._lock = threading.Lock()
        self.later = later  # runs a function after some seconds (a daemon timer)
        self._started: dict[str, float] = {}
        self._shown: dict[str, float] = {}  # when each build's last line was shown
        # A line that came too soon after the last one shown: shown when its time comes, if
        # no later line took its place (a step followed by a minute of silence is shown).
        self._held: dict[str, str] = {}

    def started(self, tag: str) -> None:
        with self._lock:
            self._started[tag] = self._shown[tag] = self.clock()
            self._line(f"building {tag}")

    def output(self, tag: str, line: str) -> None:
        with self._lock:
            now = self.clock()
            elapsed = f"({now - self._started.get(tag, now):.0f}s): {line}"
            text = f"building {tag} {elapsed}"
            if self.live:
                # Beside a bar, the tag without its repository: the bar needs the width.
                self._rewrite(text, short=f"building {tag.rpartition(':')[2]} {elapsed}")
                return
            wait = self._shown.get(tag, now) + EVERY_SECONDS - now
            if wait <= 0:
                self._held.pop(tag, None)
                self._shown[tag] = now
                self._line(text)
                return
            if tag not in self._held:
                self.later(wait, lambda: self._show_held(tag))
            self._held[tag] = text

    def _show_held(self, tag: str) -> None:
        with self._lock:
            text = self._held.pop(tag, None)
            if text is not None and tag in self._started:
                self._shown[tag] = self.clock()
                self._line(text)

    def finished(self, record: ImageRecord) -> None:
        with self._lock:
            self._started.pop(record.tag, None)
            self._shown.pop(record.tag, None)
            self._held.pop(record.tag, None)
            if self.live:
                self._rewrite("", short="")
            if self.say_end:
                self._line(end_line(record))

    def _rewrite(self, text: str, *, short: str) -> None:
        bar = self.bar()
        if bar is not None:
            bar.set_description_str(printable(short, max(20, _width() - BAR_WIDTH)), refresh=True)
            return
        shown = printable(text, _width() - 1)
        self._write(f"{CLEAR_LINE}{shown}" if shown else CLEAR_LINE)

    def _line(self, text: str) -> None:
        bar = self.bar() if self.live else None
        if bar is not None:
            bar.write(printable(text), file=bar.fp)
            return
        self._write(f"{CLEAR_LINE if self.live else ''}{printable(text)}\n")

    def _write(self, text: str) -> None:
        """Best effort: a reader that went away must not stop the build."""
        try:
            self.stream.write(text)
            self.stream.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass


def end_line(record: ImageRecord) -> str:
    """`built   TAG in 31.2s`, `cached  TAG`, or `failed  TAG  (its error)`."""
    seconds = f" in {record.build_seconds:.1f}s" if record.build_seconds else ""
    error = f"  ({record.error})" if record.error else ""
    return f"{record.status:<7} {record.tag}{seconds}{error}"


def _width() -> int:
    return shutil.get_terminal_size((100, 24)).columns
