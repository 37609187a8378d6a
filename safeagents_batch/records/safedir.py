"""Every open below a batch dir: the batch dir is untrusted input once it has been zipped,
sent, received or shared (its records, its logs, its jobs.yaml), so nothing of it is trusted
to be what its name says.

* Paths are relative to the batch dir and walked one component at a time from a descriptor
  of it, with O_NOFOLLOW at every step: a symbolic link anywhere below the batch dir is never
  followed, for reading or writing. A recorded path that is absolute (outside the batch dir)
  or climbs with `..` is a located error, never opened.
* Only regular files are read (O_NONBLOCK, then fstat: a FIFO cannot hang a reader, a device
  cannot feed it forever), and never more than a bound.
* Files are written to a unique temp name in their directory and renamed into place: readers
  see the old or the new, and a name planted beforehand is replaced, not written through.

The batch dir's own path is the caller's (the user named it); below it, this module rules.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from safeagents_batch.core.errors import UsageError
from safeagents_batch.core.files import DIR_FLAGS, NotAFile, open_dir_below, open_regular, read_fd

READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_LIST_DEPTH = 32  # directories below an attempt dir that a listing of its files enters
NEW_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# O_RDWR: opening a FIFO planted there does not wait for a writer; fstat then refuses it.
LOCK_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafePath(UsageError):
    """A path below the batch dir that the tool will not open: it leaves the batch dir, or
    a link, FIFO or device stands where a file or directory should be."""


def relative_parts(relative: str | PurePosixPath) -> tuple[str, ...]:
    """`relative`'s components; UnsafePath when it is absolute, climbs (`..`), or holds a NUL."""
    text = str(relative)
    parts = tuple(p for p in text.split("/") if p not in ("", "."))
    if text.startswith("/") or ".." in parts or "\0" in text or not parts:
        raise UnsafePath(f"{text!r} is not a path inside the batch dir")
    return parts


def inside(recorded: str, recorded_batch_dir: str) -> str:
    """A path a record names, as a path relative to the batch dir wherever it is now: a
    relative one as it is; an absolute one under the dir where the batch was created (what
    manifest version 1 recorded) mapped below the batch dir. UnsafePath for any other: a
    record that points outside the batch dir is not followed there."""
    path = PurePosixPath(recorded)
    if path.is_absolute():
        try:
            path = path.relative_to(recorded_batch_dir)
        except ValueError:
            raise UnsafePath(f"{recorded!r} is outside the batch dir") from None
    return "/".join(relative_parts(path))


def read_batch_file(batch_dir: Path, name: str, limit: int, *, missing: str) -> bytes:
    """`name` in the batch dir, read the ways below; UsageError `missing` when it is not
    there, and one naming the cause when it cannot be read (a link, a FIFO, too large)."""
    try:
        with SafeDir(batch_dir) as safe:
            return safe.read(name, limit)
    except FileNotFoundError:
        raise UsageError(missing) from None
    except OSError as exc:
        raise UsageError(f"{batch_dir / name}: unreadable: {exc.strerror or exc}") from None


class SafeDir:
    """A directory (a batch dir) and the paths below it, opened only the ways above. Use as a
    context manager, or close() it."""

    def __init__(self, root: Path, *, create: bool = False) -> None:
        self.root = root
        if create:
            root.mkdir(parents=True, exist_ok=True)
        # The root itself may be reached through links: it is the path the user gave.
        self.fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def __enter__(self) -> SafeDir:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    # -- directories -------------------------------------------------------------------------

    @contextlib.contextmanager
    def directory(self, relative: str, *, create: bool = False) -> Iterator[int]:
        """A descriptor of the directory `relative` (made, with its parents, when `create`)."""
        fd = self.open_directory(relative, create=create)
        try:
            yield fd
        finally:
            os.close(fd)

    def open_directory(self, relative: str, *, create: bool = False) -> int:
        """The caller closes it."""
        return self._walk(relative_parts(relative), create=create)

    def fresh_directory(self, relative: str) -> int:
        """A new, empty directory `relative` (its parents made as needed), opened; whatever
        stood at its name (a dir left by a crash, or planted) is moved aside to a hidden
        name first, never entered. The caller closes it."""
        parent, name = self._parent(relative, create=True)
        try:
            try:
                os.mkdir(name, 0o777, dir_fd=parent)
            except FileExistsError:
                aside = f".{name}.stale-{secrets.token_hex(4)}"
                os.rename(name, aside, src_dir_fd=parent, dst_dir_fd=parent)
                os.mkdir(name, 0o777, dir_fd=parent)
            return self._walk((name,), create=False, start=parent)
        finally:
            os.close(parent)

    def _walk(self, parts: tuple[str, ...], *, create: bool, start: int | None = None) -> int:
        """A descriptor of `parts` below `start` (the batch dir when None)."""
        try:
            return open_dir_below(
                self.fd if start is None else start, parts, create=create, mode=0o777
            )
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnsafePath(
                    f"{self._shown(parts)}: {exc.filename} is a link or a file, not a directory"
                ) from None
            raise

    def _parent(self, relative: str, *, create: bool) -> tuple[int, str]:
        parts = relative_parts(relative)
        return self._walk(parts[:-1], create=create), parts[-1]

    # -- reading -----------------------------------------------------------------------------

    def read(self, relative: str, limit: int) -> bytes:
        """The regular file's bytes, at most `limit` (OSError beyond, or for anything else
        that stands there; FileNotFoundError when nothing does)."""
        fd = self._open_below(relative, READ_FLAGS, create=False)
        try:
            return read_fd(fd, limit, self.root / relative)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def reader(self, relative: str) -> Iterator[BinaryIO]:
        """The regular file, to stream (a file the script wrote may be any size: its reader
        bounds what it takes)."""
        fd = self._open_below(relative, READ_FLAGS, create=False)
        with os.fdopen(fd, "rb") as stream:
            yield stream

    def read_tail(self, relative: str, size: int) -> tuple[bytes, int]:
        """The last `size` bytes of the regular file, and its whole size."""
        fd = self._open_below(relative, READ_FLAGS, create=False)
        try:
            total = os.fstat(fd).st_size
            return os.pread(fd, size, max(0, total - size)), total
        finally:
            os.close(fd)

    def _open_below(self, relative: str, flags: int, *, create: bool) -> int:
        """A descriptor of the regular file `relative` (the caller closes it); UnsafePath
        naming what stands there instead."""
        parent, name = self._parent(relative, create=create)
        try:
            return open_regular(name, flags, dir_fd=parent)
        except NotAFile as exc:
            raise UnsafePath(f"{self.root / relative}: {exc}") from None
        finally:
            os.close(parent)

    def kind(self, relative: str) -> str | None:
        """`file`, `dir`, `other` (a link, FIFO, device...) or None when nothing is there;
        never following a link."""
        try:
            parent, name = self._parent(relative, create=False)
        except (OSError, UnsafePath):
            return None
        try:
            info = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except OSError:
            return None
        finally:
            os.close(parent)
        if stat.S_ISREG(info.st_mode):
            return "file"
        return "dir" if stat.S_ISDIR(info.st_mode) else "other"

    def files(self, relative: str, limit: int) -> tuple[list[str], int]:
        """The regular files below the directory (relative to it, sorted), at most `limit` of
        them listed, and how many there are. The walk is bounded: it stops after 10 x `limit`
        entries (files and directories), and goes MAX_LIST_DEPTH directories deep (one
        descriptor open per level); links are never followed, entered or listed."""
        try:
            top = self.open_directory(relative)
        except (OSError, UnsafePath):
            return [], 0
        walk = _Walk(budget=10 * limit)
        walk.scan(top, "", depth=0)  # closes `top`
        return sorted(walk.found)[:limit], len(walk.found)

    # -- writing -----------------------------------------------------------------------------

    def write(self, relative: str, data: bytes, *, sync: bool = False) -> None:
        """The file, whole: a unique temp name beside it, renamed into place (a link or file
        planted at the name is replaced, never written through)."""
        with self.writer(relative, sync=sync) as stream:
            stream.write(data)

    @contextlib.contextmanager
    def writer(self, relative: str, *, sync: bool = False) -> Iterator[BinaryIO]:
        """`write`, of data made as it is written (a table too big to hold whole): the file
        is renamed into place when the block ends without an exception, else removed. The
        stream reads too (seek back to make a second file of the first before either is in
        place: no other writer's file comes in between)."""
        parent, name = self._parent(relative, create=True)
        temp = f".{name}.{secrets.token_hex(8)}.tmp"
        try:
            fd = os.open(temp, NEW_FLAGS, 0o666, dir_fd=parent)
            with os.fdopen(fd, "w+b") as stream:
                yield stream
                stream.flush()
                if sync:
                    os.fsync(fd)
            os.replace(temp, name, src_dir_fd=parent, dst_dir_fd=parent)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=parent)
            raise
        finally:
            os.close(parent)

    def remove(self, relative: str) -> None:
        """The file, if there is one (a link in its place is removed, never followed)."""
        parent, name = self._parent(relative, create=False)
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=parent)
        finally:
            os.close(parent)

    def open_lock(self, relative: str) -> int:
        """A descriptor of the regular file (made if missing, never truncated on open)."""
        return self._open_below(relative, LOCK_FLAGS, create=True)

    def _shown(self, parts: tuple[str, ...]) -> str:
        return str(self.root.joinpath(*parts))


class _Walk:
    """One bounded walk of SafeDir.files."""

    def __init__(self, budget: int) -> None:
        self.budget = budget  # entries still to look at
        self.found: list[str] = []

    def scan(self, fd: int, prefix: str, depth: int) -> None:
        """The directory `fd` (closed here) and, depth first, those below it."""
        subdirs = []
        try:
            with os.scandir(fd) as entries:
                for entry in entries:
                    if self.budget <= 0:
                        break
                    self.budget -= 1
                    if entry.is_dir(follow_symlinks=False):
                        subdirs.append(entry.name)
                    elif entry.is_file(follow_symlinks=False):
                        self.found.append(prefix + entry.name)
            for name in subdirs if depth < MAX_LIST_DEPTH else ():
                with contextlib.suppress(OSError):
                    self.scan(os.open(name, DIR_FLAGS, dir_fd=fd), f"{prefix}{name}/", depth + 1)
        finally:
            os.close(fd)
