"""The batch journal: one JSON line per event, appended at once, fsync'd in groups.

It is the source of truth for every transition of a batch: `manifest.json` is a snapshot that
names the last event it holds (`journal.seq`), and readers fold the journal's later events
into it. A process killed at any point loses nothing it had appended (the kernel has the
bytes); a machine that loses power loses at most the last group not yet fsync'd. A torn last
line (the process died mid-write) is ignored on read and cut off before the next append.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import msgspec

from safeagents_batch.core.errors import UsageError
from safeagents_batch.core.files import NotAFile, open_regular
from safeagents_batch.records.events import (
    JOURNAL_VERSION,
    AnyEvent,
    Event,
    Header,
    ImageEvent,
    StateEvent,
    UnstartedEvent,
)
from safeagents_batch.records.legacy import AttemptEventV1

FSYNC_SECONDS = 0.2
MAX_LINE_BYTES = 64 * 1024**2  # an event is a few kB; one with many dropped artifacts, more
WRITE_FLAGS = os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
READ_VERSIONS = (1, JOURNAL_VERSION)
_HEADER = msgspec.json.Decoder(Header)
_DECODERS = {
    1: msgspec.json.Decoder(AttemptEventV1 | UnstartedEvent | ImageEvent | StateEvent),
    JOURNAL_VERSION: msgspec.json.Decoder(AnyEvent),
}
_ENCODER = msgspec.json.Encoder()


class JournalWriter:
    """Appends events with increasing `seq`. Not thread-safe by itself: the manifest store
    calls it under its own lock, which also orders the events."""

    def __init__(self, path: Path, last_seq: int = 0) -> None:
        self.path = path
        self.seq = last_seq
        self._fd = _open(path, WRITE_FLAGS)
        try:
            _cut_torn_tail(self._fd)
        except BaseException:
            os.close(self._fd)
            raise
        self.size = os.fstat(self._fd).st_size  # bytes written so far: where the next event starts
        self.failure: OSError | None = None
        self._dirty = threading.Event()
        self._closing = threading.Event()
        self._syncer = threading.Thread(target=self._sync_loop, name="journal-fsync", daemon=True)
        self._syncer.start()

    def append(self, event: Event) -> int:
        """Writes one event now (its `seq` given here), whole or not at all: a write that fails
        part way (a full disk) is cut back off, so the next event does not land glued to half
        a line."""
        seq = self.seq + 1
        event.seq = seq
        encoded = _ENCODER.encode(event) + b"\n"
        data = memoryview(encoded)
        try:
            while data:
                data = data[os.write(self._fd, data) :]
        except OSError:
            os.ftruncate(self._fd, self.size)
            raise
        self.seq, self.size = seq, self.size + len(encoded)
        self._dirty.set()
        return seq

    def sync(self) -> None:
        self._dirty.clear()
        os.fsync(self._fd)

    def _sync_quietly(self) -> None:
        """The group fsync of the background thread: a failure is kept, and raised by close()
        (the events are written; only their durability against power loss is at stake)."""
        try:
            self.sync()
        except OSError as exc:
            self.failure = exc

    def close(self) -> None:
        if self._closing.is_set():
            return
        self._closing.set()
        self._dirty.set()  # wake the syncer so it sees the close
        self._syncer.join()
        try:
            os.fsync(self._fd)
        finally:
            os.close(self._fd)
        if self.failure is not None:
            raise self.failure

    def _sync_loop(self) -> None:
        """Group commit: one fsync for whatever was appended in the last FSYNC_SECONDS."""
        while not self._closing.is_set():
            if self._dirty.wait(FSYNC_SECONDS) and not self._closing.is_set():
                self._closing.wait(FSYNC_SECONDS)  # let the group fill
                self._sync_quietly()


def read_events(path: Path, after_seq: int = 0, offset: int = 0) -> Iterator[AnyEvent]:
    """The journal's events with seq > `after_seq`, in order. A missing journal has none; a
    torn last line is skipped; a damaged line before the last is a clear error naming its
    line (and the field, for a wrong one), and so is a line longer than any event. `offset` (a
    snapshot's hint: where its last event ended) skips reading what the snapshot holds. A
    journal that is not a regular file (a link, a FIFO, a device) is refused."""
    try:
        fd = _open(path, READ_FLAGS)
    except FileNotFoundError:
        return
    with os.fdopen(fd, "rb") as handle:
        position = _seek_line(handle, offset)
        previous: tuple[int, bytes] | None = None
        while raw := handle.readline(MAX_LINE_BYTES + 1):
            if len(raw) > MAX_LINE_BYTES:
                raise UsageError(
                    f"{path}:{_line_number(path, position)}: journal line longer than "
                    f"{MAX_LINE_BYTES} bytes"
                )
            if previous is not None:
                yield from _event(path, previous, after_seq, last=False)
            previous, position = (position, raw), position + len(raw)
        if previous is not None:
            yield from _event(path, previous, after_seq, last=True)


def _open(path: Path, flags: int) -> int:
    """The journal, never through a link (a direct child of the batch dir: O_NOFOLLOW is the
    whole walk), and only as a regular file."""
    try:
        return open_regular(path, flags)
    except NotAFile as exc:
        raise UsageError(f"{path}: {exc}") from None


def _event(
    path: Path, line: tuple[int, bytes], after_seq: int, *, last: bool
) -> Iterator[AnyEvent]:
    start, raw = line
    try:
        if not raw.endswith(b"\n"):
            raise ValueError("not a whole event")
        header = _HEADER.decode(raw)
    except (msgspec.DecodeError, ValueError) as exc:
        if last:
            return  # written by a process that died mid-line: the event never happened
        raise UsageError(
            f"{path}:{_line_number(path, start)}: damaged journal line: {exc}"
        ) from None
    if header.seq <= after_seq:
        return
    if header.v not in _DECODERS:
        raise UsageError(
            f"{path}:{_line_number(path, start)}: journal version {header.v!r}; this tool reads "
            f"versions {' and '.join(map(str, READ_VERSIONS))}"
        )
    try:
        event = _DECODERS[header.v].decode(raw)
    except msgspec.DecodeError as exc:
        raise UsageError(f"{path}:{_line_number(path, start)}: bad journal event: {exc}") from None
    yield event.today() if isinstance(event, AttemptEventV1) else event


def _line_number(path: Path, start: int) -> int:
    """The line (1-based) that starts at byte `start`; counted only for an error message."""
    lines = 1
    with os.fdopen(_open(path, READ_FLAGS), "rb") as handle:
        while start > 0 and (chunk := handle.read(min(start, 1 << 20))):
            lines += chunk.count(b"\n")
            start -= len(chunk)
    return lines


def _seek_line(handle: BinaryIO, offset: int) -> int:
    """To `offset` if a line starts there (the byte before is a newline), else to the start;
    returns the position. The offset is a hint read from the manifest: one past the file's
    end (or of any size) means start at the top."""
    if 0 < offset <= os.fstat(handle.fileno()).st_size:
        handle.seek(offset - 1)
        if handle.read(1) == b"\n":
            return offset
    handle.seek(0)
    return 0


def _last_line_end(fd: int, size: int, block: int = 65536) -> int:
    """Where the last whole line ends (just after its newline), 0 if there is none; searched
    backwards block by block, so a torn line of any length costs only its own length."""
    end = size
    while end > 0:
        start = max(0, end - block)
        cut = os.pread(fd, end - start, start).rfind(b"\n")
        if cut >= 0:
            return start + cut + 1
        end = start
    return 0


def _cut_torn_tail(fd: int) -> None:
    """Removes a last line without its newline, so the next event starts on a line of its own."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    os.ftruncate(fd, _last_line_end(fd, size))
