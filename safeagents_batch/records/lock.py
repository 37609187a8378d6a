"""The exclusive lock on a batch directory: one orchestrator per batch at a time."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from types import TracebackType

from safeagents_batch.core.errors import BatchLocked
from safeagents_batch.records import layout
from safeagents_batch.records.layout import BatchLayout
from safeagents_batch.records.safedir import SafeDir


class BatchLock:
    """An flock on BATCH_DIR/.lock. The kernel drops it when its holder dies, so a lock left by
    a killed process is simply taken over; a live holder is named in the error."""

    def __init__(self, batch_dir: Path) -> None:
        self.batch_dir = batch_dir
        self.path = BatchLayout(batch_dir).lock
        self.fd: int | None = None

    def __enter__(self) -> BatchLock:
        with SafeDir(self.batch_dir) as safe:  # a planted link is refused, never truncated
            fd = safe.open_lock(layout.LOCK)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise BatchLocked(
                    f"{self.path.parent} is in use by pid {holder}; "
                    "wait for it to finish or stop it first"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self.fd = fd
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.close(self.fd)  # closing releases the flock
            self.fd = None
