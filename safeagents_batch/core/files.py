"""Reading a file that should be a regular one, whoever made it: never blocking on a FIFO or
a device, never reading more than a bound."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import IO


def read_regular(path: Path, limit: int, *, dir_fd: int | None = None) -> bytes:
    """The file's bytes; OSError when it is not a regular file (a FIFO, a device, a
    directory) or holds more than `limit` bytes. O_NONBLOCK: opening a FIFO must not wait for
    a writer; a regular file ignores the flag."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        return read_fd(fd, limit, path)
    finally:
        os.close(fd)


def read_fd(fd: int, limit: int, name: object) -> bytes:
    """At most `limit` bytes of the open regular file `fd` (OSError naming `name` else)."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise OSError(errno.EINVAL, "not a regular file", str(name))
    chunks, total = [], 0
    while chunk := os.read(fd, min(1 << 20, limit + 1 - total)):
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            raise OSError(errno.EFBIG, f"larger than {limit} bytes", str(name))
    return b"".join(chunks)


def open_log(path: Path) -> IO[str]:
    """A log file to write, made with its directory: neither followed through a link (one
    planted at the file's name, or at its directory's)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.parent.is_symlink():
        raise OSError(errno.ELOOP, "a link, not followed", str(path.parent))
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.fdopen(os.open(path, flags, 0o666), "w", encoding="utf-8")
