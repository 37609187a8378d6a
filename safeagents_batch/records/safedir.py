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

from safeagents_batch.core.errors import UsageError
from safeagents_batch.core.files import read_fd

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
NEW_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
APPEND_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
LOCK_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
CHUNK = 1 << 20


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

    def _walk(self, parts: tuple[str, ...], *, create: bool) -> int:
        fd = os.dup(self.fd)
        try:
            for part in parts:
                parent, fd = fd, -1
                try:
                    fd = _enter(parent, part, create=create, shown=self._shown(parts))
                finally:
                    os.close(parent)
            return fd
        except BaseException:
            if fd >= 0:
                os.close(fd)
            raise

    def _parent(self, relative: str, *, create: bool) -> tuple[int, str]:
        parts = relative_parts(relative)
        return self._walk(parts[:-1], create=create), parts[-1]

    # -- reading -----------------------------------------------------------------------------

    def read(self, relative: str, limit: int) -> bytes:
        """The regular file's bytes, at most `limit` (OSError beyond, or for anything else
        that stands there; FileNotFoundError when nothing does)."""
        parent, name = self._parent(relative, create=False)
        try:
            fd = self._open_regular(parent, name, relative)
        finally:
            os.close(parent)
        try:
            return read_fd(fd, limit, self.root / relative)
        finally:
            os.close(fd)

    def read_tail(self, relative: str, size: int) -> tuple[bytes, int]:
        """The last `size` bytes of the regular file, and its whole size."""
        fd = self.open_read(relative)
        try:
            total = os.fstat(fd).st_size
            return os.pread(fd, size, max(0, total - size)), total
        finally:
            os.close(fd)

    def open_read(self, relative: str) -> int:
        """A descriptor of the regular file (the caller closes it)."""
        parent, name = self._parent(relative, create=False)
        try:
            return self._open_regular(parent, name, relative)
        finally:
            os.close(parent)

    def _open_regular(self, parent: int, name: str, relative: str) -> int:
        try:
            fd = os.open(name, READ_FLAGS, dir_fd=parent)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafePath(f"{self.root / relative}: a link, not followed") from None
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise UnsafePath(f"{self.root / relative}: not a regular file")
        return fd

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
        them listed, and how many there are (counted up to 10 x `limit`); links never
        followed, entered or listed."""
        found: list[str] = []
        count = 0
        try:
            top = self.open_directory(relative)
        except (OSError, UnsafePath):
            return [], 0
        pending: list[tuple[int, str]] = [(top, "")]
        try:
            while pending and count <= 10 * limit:
                fd, prefix = pending.pop()
                count = self._scan(fd, prefix, pending, found, count)
        finally:
            for fd, _ in pending:
                os.close(fd)
        return sorted(found)[:limit], count

    def _scan(
        self, fd: int, prefix: str, pending: list[tuple[int, str]], found: list[str], count: int
    ) -> int:
        try:
            with os.scandir(fd) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        with contextlib.suppress(OSError):
                            child = os.open(entry.name, DIR_FLAGS, dir_fd=fd)
                            pending.append((child, f"{prefix}{entry.name}/"))
                    elif entry.is_file(follow_symlinks=False):
                        count += 1
                        found.append(prefix + entry.name)
        finally:
            os.close(fd)
        return count

    # -- writing -----------------------------------------------------------------------------

    def write(self, relative: str, data: bytes, *, sync: bool = False) -> None:
        """The file, whole: a unique temp name beside it, renamed into place (a link or file
        planted at the name is replaced, never written through)."""
        parent, name = self._parent(relative, create=True)
        temp = f".{name}.{secrets.token_hex(8)}.tmp"
        try:
            fd = os.open(temp, NEW_FLAGS, 0o666, dir_fd=parent)
            try:
                _write_all(fd, data)
                if sync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, name, src_dir_fd=parent, dst_dir_fd=parent)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=parent)
            raise
        finally:
            os.close(parent)

    def open_append(self, relative: str) -> int:
        """A descriptor for appending to the regular file (made if missing)."""
        return self._open_file(relative, APPEND_FLAGS)

    def open_lock(self, relative: str) -> int:
        """A descriptor of the regular file (made if missing, never truncated on open)."""
        return self._open_file(relative, LOCK_FLAGS)

    def _open_file(self, relative: str, flags: int) -> int:
        parent, name = self._parent(relative, create=True)
        try:
            fd = os.open(name, flags, 0o666, dir_fd=parent)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafePath(f"{self.root / relative}: a link, not followed") from None
            raise
        finally:
            os.close(parent)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise UnsafePath(f"{self.root / relative}: not a regular file")
        return fd

    def _shown(self, parts: tuple[str, ...]) -> str:
        return str(self.root.joinpath(*parts))


def _enter(parent: int, name: str, *, create: bool, shown: str) -> int:
    if create:
        with contextlib.suppress(FileExistsError):  # the open below checks what it is
            os.mkdir(name, 0o777, dir_fd=parent)
    try:
        return os.open(name, DIR_FLAGS, dir_fd=parent)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafePath(f"{shown}: {name} is a link or a file, not a directory") from None
        raise


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view[:CHUNK]) :]
