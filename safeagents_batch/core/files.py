"""Reading a file that should be a regular one, whoever made it: never blocking on a FIFO or
a device, never reading more than a bound."""

from __future__ import annotations

import errno
import os
import resource
import stat
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import IO

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class NotAFile(OSError):
    """A link (ELOOP), FIFO, device or directory (EINVAL) stands where a regular file should
    be; says so in words alone."""

    def __str__(self) -> str:
        return str(self.strerror)


def open_regular(name: Path | str, flags: int, *, dir_fd: int | None = None) -> int:
    """A descriptor of the regular file `name` (the caller closes it), opened with `flags`
    and never through a link at its last component; NotAFile names what stands there
    instead. Give O_NONBLOCK to read: opening a FIFO must not wait for a writer."""
    try:
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotAFile(errno.ELOOP, "a link, not followed") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotAFile(errno.EINVAL, "not a regular file")
    return fd


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
    """At most `limit` bytes of the open regular file `fd` (OSError naming `name` else). One
    read of the size fstat gives, so a big file costs its size once, not twice (chunks then
    joined); what it grew by since is read after."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise OSError(errno.EINVAL, "not a regular file", str(name))
    if info.st_size > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes", str(name))
    data = os.read(fd, info.st_size + 1)
    more, total = [], len(data)
    while total <= limit and (chunk := os.read(fd, min(1 << 20, limit + 1 - total))):
        more.append(chunk)
        total += len(chunk)
    if total > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes", str(name))
    return data + b"".join(more) if more else data


def open_log(path: Path) -> IO[str]:
    """A log file to write, made with its directory: neither followed through a link (one
    planted at the file's name, or at its directory's)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.parent.is_symlink():
        raise OSError(errno.ELOOP, "a link, not followed", str(path.parent))
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.fdopen(os.open(path, flags, 0o666), "w", encoding="utf-8")


def open_dir_below(root_fd: int, parts: Sequence[str], *, create: bool, mode: int = 0o755) -> int:
    """A descriptor of root/parts... (the caller closes it), entered one component at a time
    without following a link; with `create`, each missing directory made with `mode` (before
    the umask). A link or a file on the way is OSError ELOOP or ENOTDIR naming that component
    (its `filename`)."""
    fd = os.dup(root_fd)
    try:
        for part in parts:
            parent, fd = fd, -1
            try:
                if create:
                    with suppress(FileExistsError):  # the open below checks what it is
                        os.mkdir(part, mode, dir_fd=parent)
                fd = os.open(part, DIR_FLAGS, dir_fd=parent)
            finally:
                os.close(parent)
        return fd
    except BaseException:
        if fd >= 0:
            os.close(fd)
        raise


OPEN_FILES_WANTED = 65536


def raise_open_files_limit(wanted: int = OPEN_FILES_WANTED) -> None:
    """The soft limit on open files up to `wanted` (never past the hard limit): a batch holds
    log files, engine connections and the model gateway's connections at once, and the usual
    soft limit of 1,024 is a few hundred model calls in flight away."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
