"""The local sink: writes one attempt's output into its directory on this host.

The backend streams the container's stdout and stderr into it while the run goes, then hands it
the tar stream of what the script left in /safeagents/logs. The script is untrusted: the log
files are never opened through a link, and the archive is read as data, never extracted: only
regular files and directories land, as new files under directories entered without following
a link, within a size cap; everything else is listed in `dropped`.
"""

from __future__ import annotations

import errno
import os
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from safeagents_batch.core.errors import one_line
from safeagents_batch.core.tarsafe import (
    ARCHIVE_ERRORS,
    DIR_FLAGS,
    KINDS,
    ChunkReader,
    StreamingTar,
    directory,
    shown,
    split_name,
    unsafe_name,
    write_all,
    write_file,
)
from safeagents_batch.core.units import format_size
from safeagents_batch.jobs.model import DEFAULT_ARTIFACT_FILES, DEFAULT_ARTIFACT_LIMIT
from safeagents_batch.records.layout import (
    CONSOLE_LOG,
    LOG_NAMES,
    RESERVED_NAMES,
    STDERR_LOG,
    STDOUT_LOG,
    TRACEBACK,
)

_LOG_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
# How far past the cap the archive is read to reach what comes after a skipped member: a
# 5 GiB file before a small result is read through (seconds); more than this stops reading.
READ_SLACK = 8 * 1024**3
MAX_DROPS_LISTED = 100  # lines of `dropped_artifacts`; the rest is one count
# Failures of the host's own file system calls that the archive's content causes (a name given
# twice, a file where a directory goes, a name too long): that entry is dropped, not the run.
_CONTENT_ERRNOS = {
    errno.EEXIST: "already in the attempt dir",
    errno.ENOTDIR: "a file or link where a directory should be",
    errno.ELOOP: "a file or link where a directory should be",
    errno.ENAMETOOLONG: "name too long",
}


class LocalSink:
    """Owns one attempt's directory: console.log (stdout and stderr in arrival order),
    stdout.log, stderr.log, and the artifacts the script left.

    Each chunk is written to the kernel at once, nothing held back or held whole. Write errors
    (a full disk) raise OSError. `stdout` and `stderr` are meant to be called from one pump
    thread, and `artifacts` and `close` after it ends: there is no locking.
    `dropped` lists what the archive held that was not kept, one line each.
    Every file system call goes through a descriptor of the attempt dir, so a link planted
    after the checks cannot redirect a write.
    """

    def __init__(
        self,
        attempt_dir: Path,
        artifact_limit: int = DEFAULT_ARTIFACT_LIMIT,
        *,
        file_limit: int = DEFAULT_ARTIFACT_FILES,
        dir_fd: int | None = None,
    ) -> None:
        """`artifact_limit`: archive bytes kept (headers and data); `file_limit`: files and
        directories kept.
        `dir_fd`: the attempt dir, already opened (a batch's, walked from the batch dir
        without following a link: records/safedir.py); the sink takes it over."""
        self.attempt_dir = attempt_dir
        self.artifact_limit = artifact_limit
        self.file_limit = file_limit
        self.dropped: list[str] = []
        self._not_listed = 0  # drops past MAX_DROPS_LISTED, counted
        self._dir_fd = _open_attempt_dir(attempt_dir) if dir_fd is None else dir_fd
        self._logs: dict[str, int] = {}
        try:
            for name in LOG_NAMES:
                self._logs[name] = os.open(name, _LOG_FLAGS, 0o666, dir_fd=self._dir_fd)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> LocalSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def stdout(self, chunk: bytes) -> None:
        self._log(STDOUT_LOG, chunk)

    def stderr(self, chunk: bytes) -> None:
        self._log(STDERR_LOG, chunk)

    def _log(self, name: str, chunk: bytes) -> None:
        self._check_open()
        # Straight to the kernel, no buffer in between: until the next chunk, which may be
        # minutes away, the files show everything said so far (tail -f, a crash of ours).
        write_all(self._logs[name], chunk)
        write_all(self._logs[CONSOLE_LOG], chunk)

    def traceback(self, text: str) -> None:
        """The whole traceback behind the attempt's error, as `traceback.log`."""
        self._check_open()
        fd = os.open(TRACEBACK, _LOG_FLAGS, 0o666, dir_fd=self._dir_fd)
        try:
            write_all(fd, (text.rstrip("\n") + "\n").encode("utf-8", "replace"))
        finally:
            os.close(fd)

    def artifacts(self, tar_chunks: Iterable[bytes]) -> None:
        """Keeps the regular files and directories of the archive (see the module docstring);
        never raises for the archive's content, only for the host's own errors and for errors
        of `tar_chunks` itself. The iterator is closed once collection stops."""
        self._check_open()
        chunks = iter(tar_chunks)
        reader = ChunkReader(chunks)
        try:
            with StreamingTar.open(fileobj=reader, mode="r|") as tar:
                self._collect(tar, reader)
        except ARCHIVE_ERRORS as exc:
            self._drop(f"artifacts: unreadable archive: {one_line(exc)}")
        finally:
            _close_source(chunks)
            if self._not_listed:
                self.dropped.append(f"... and {self._not_listed} more entries not kept")

    def close(self) -> None:
        """Closes the log files and the attempt dir; a second call does nothing."""
        logs, self._logs = self._logs, {}
        fds = [*logs.values(), self._dir_fd]
        self._dir_fd = -1
        for fd in fds:
            if fd >= 0:
                os.close(fd)

    def _check_open(self) -> None:
        if self._dir_fd < 0:
            raise ValueError(f"the sink of {self.attempt_dir} is closed")

    def _collect(self, tar: tarfile.TarFile, reader: ChunkReader) -> None:
        """Member by member, in archive order. A member that would take what is kept over the
        cap is skipped and the rest kept (a huge file first must not cost the small result
        after it); reading stops once the archive has given READ_SLACK bytes beyond the cap,
        or once `file_limit` files and directories are kept (every later one would be over)."""
        top: str | None = None
        kept_bytes = kept_entries = 0
        read_limit = self.artifact_limit + READ_SLACK
        while (member := tar.next()) is not None:
            if reader.consumed > read_limit:
                self._drop(f"later entries not read: {format_size(read_limit)} of archive read")
                return
            parts = split_name(member.name)
            if top is None and parts and not unsafe_name(member.name, parts):
                top = parts[0]  # docker cp's layout: the copied directory, then its contents
            # The top directory is docker cp's, not the script's: it costs the script nothing.
            is_top = parts == [top]
            if not is_top and kept_entries >= self.file_limit:
                self._drop(
                    f"later entries not collected: {self.file_limit} files and directories "
                    "kept already"
                )
                return
            size = 0 if is_top else _archive_size(member)
            name = shown(_relative_name(member.name, parts, top))
            if reader.consumed + size > read_limit:  # past it is only by reading through it
                self._drop(f"{name}: {format_size(member.size)}, too large to read past")
                self._drop("later entries not collected: the archive is read no further")
                return
            problem = (
                _problem(member, parts, top)
                or self._over_cap(member, kept_bytes + size)
                or self._keep(tar, member, parts[1:])
            )
            if problem:
                self._drop(f"{name}: {problem}")
                continue
            kept_bytes += size
            kept_entries += not is_top

    def _over_cap(self, member: tarfile.TarInfo, total: int) -> str:
        if total <= self.artifact_limit:
            return ""
        return (
            f"{format_size(member.size)}, over the artifact limit of "
            f"{format_size(self.artifact_limit)} (archive bytes, headers included)"
        )

    def _drop(self, line: str) -> None:
        """What was not kept, one line each, the first MAX_DROPS_LISTED (then a count)."""
        if len(self.dropped) < MAX_DROPS_LISTED:
            self.dropped.append(line)
        else:
            self._not_listed += 1

    def _keep(self, tar: tarfile.TarFile, member: tarfile.TarInfo, rel: Sequence[str]) -> str:
        """Writes one checked member; returns why it was not written, or "" when it was."""
        try:
            if member.isdir():
                with directory(self._dir_fd, rel):
                    pass
            else:
                with directory(self._dir_fd, rel[:-1]) as parent:
                    write_file(tar, member, parent, rel[-1])
        except OSError as exc:
            if exc.errno not in _CONTENT_ERRNOS:
                raise
            return _CONTENT_ERRNOS[exc.errno]
        return ""


def _open_attempt_dir(attempt_dir: Path) -> int:
    if attempt_dir.is_symlink():
        raise OSError(errno.ELOOP, "refusing an attempt dir that is a symbolic link", attempt_dir)
    attempt_dir.mkdir(parents=True, exist_ok=True)
    # O_NOFOLLOW again: a link swapped in after the check above would fail here, and every
    # later write goes through this descriptor rather than the path.
    return os.open(attempt_dir, DIR_FLAGS)


def _close_source(chunks: Iterator[bytes]) -> None:
    """A generator over a connection (the engine's archive, a remote node's) lets it go."""
    close = getattr(chunks, "close", None)
    if callable(close):
        close()


def _relative_name(name: str, parts: Sequence[str], top: str | None) -> str:
    """The name as the user knows it, inside their log dir; the archive's name otherwise."""
    if len(parts) > 1 and parts[0] == top:
        return "/".join(parts[1:])
    return name


def _archive_size(member: tarfile.TarInfo) -> int:
    """What the member takes in the archive: its headers (long names, pax records included)
    and its data, padded to blocks; data follows the header of a file and of an unknown type
    (tarfile reads that as a file's)."""
    headers = member.offset_data - member.offset
    has_data = member.isreg() or member.type not in tarfile.SUPPORTED_TYPES
    blocks = -(-member.size // tarfile.BLOCKSIZE) if has_data else 0
    return headers + blocks * tarfile.BLOCKSIZE


def _problem(member: tarfile.TarInfo, parts: Sequence[str], top: str | None) -> str:
    """Why a member must not be written as it stands, or "" when it may be."""
    if unsafe_name(member.name, parts):
        return "unsafe path"
    if not parts or parts[0] != top:
        return "outside the archive's top directory"
    if not (member.isreg() or member.isdir()):
        return KINDS.get(member.type, f"an entry of unsupported tar type {member.type!r}")
    if len(parts) == 1:
        return "" if member.isdir() else "a file in place of the archive's top directory"
    if len(parts) == 2 and parts[1] in RESERVED_NAMES:
        return "reserved name"
    return ""
