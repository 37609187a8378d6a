"""The local sink: writes one attempt's output into its directory on this host.

The backend streams the container's stdout and stderr into it while the run goes, then hands it
the tar stream of what the script left in /safeagents/logs. The script is untrusted: the log
files are never opened through a link, and the archive is read as data, never extracted: only
regular files and directories land, as new files under directories entered without following
a link, within a size cap; everything else is listed in `dropped`.
"""

from __future__ import annotations

import errno
import io
import os
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from safeagents_batch.errors import one_line
from safeagents_batch.model import DEFAULT_ARTIFACT_LIMIT
from safeagents_batch.units import format_size

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

LOG_NAMES = ("console.log", "stdout.log", "stderr.log")

_LOG_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
_COPY_CHUNK = 1024**2
# Long names, link targets and pax records come as headers that tarfile reads whole into
# memory; real ones are a few KiB (PATH_MAX, xattrs), so a bigger one is a hostile archive.
_METADATA_LIMIT = 1024**2
_METADATA_TYPES = (
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
)
_KINDS = {
    tarfile.SYMTYPE: "a symbolic link",
    tarfile.LNKTYPE: "a hard link",
    tarfile.FIFOTYPE: "a FIFO",
    tarfile.CHRTYPE: "a character device",
    tarfile.BLKTYPE: "a block device",
}
# Failures of the host's own file system calls that the archive's content causes (a name given
# twice, a file where a directory goes, a name too long): that entry is dropped, not the run.
_CONTENT_ERRNOS = {
    errno.EEXIST: "already in the attempt dir",
    errno.ENOTDIR: "a file or link where a directory should be",
    errno.ELOOP: "a file or link where a directory should be",
    errno.ENAMETOOLONG: "name too long",
}
# What a bad archive raises from tarfile: its own errors, ValueError for unparsable numbers
# and text in pax and sparse headers, RecursionError for a long chain of pax headers.
_ARCHIVE_ERRORS = (tarfile.TarError, ValueError, RecursionError)
_SHOWN_NAME_LIMIT = 200

_T = TypeVar("_T", bound="_StrictTarInfo")


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

    def __init__(self, attempt_dir: Path, artifact_limit: int = DEFAULT_ARTIFACT_LIMIT) -> None:
        self.attempt_dir = attempt_dir
        self.artifact_limit = artifact_limit
        self.dropped: list[str] = []
        self._dir_fd = _open_attempt_dir(attempt_dir)
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
        self._log("stdout.log", chunk)

    def stderr(self, chunk: bytes) -> None:
        self._log("stderr.log", chunk)

    def _log(self, name: str, chunk: bytes) -> None:
        self._check_open()
        # Straight to the kernel, no buffer in between: until the next chunk, which may be
        # minutes away, the files show everything said so far (tail -f, a crash of ours).
        _write_all(self._logs[name], chunk)
        _write_all(self._logs["console.log"], chunk)

    def artifacts(self, tar_chunks: Iterable[bytes]) -> None:
        """Keeps the regular files and directories of the archive (see the module docstring);
        never raises for the archive's content, only for the host's own errors and for errors
        of `tar_chunks` itself. The iterator is closed once collection stops."""
        self._check_open()
        chunks = iter(tar_chunks)
        try:
            with _StreamingTar.open(fileobj=_ChunkReader(chunks), mode="r|") as tar:
                self._collect(tar)
        except _ARCHIVE_ERRORS as exc:
            self.dropped.append(f"artifacts: unreadable archive: {one_line(exc)}")
        finally:
            _close_source(chunks)

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

    def _collect(self, tar: tarfile.TarFile) -> None:
        """Member by member, in archive order; stops at the first member over the cap without
        reading its data (a huge sparse file would take as long to read through as its size)."""
        top: str | None = None
        counted = 0
        while (member := tar.next()) is not None:
            parts = _parts(member.name)
            if top is None and parts and not _unsafe(member.name, parts):
                top = parts[0]  # docker cp's layout: the copied directory, then its contents
            shown = _shown(_relative_name(member.name, parts, top))
            # Data of dropped members counts too: it is read all the same, to skip over it.
            counted += _data_size(member)
            if counted > self.artifact_limit:
                self.dropped.append(
                    f"{shown}: {format_size(member.size)}, over the artifact limit of "
                    f"{format_size(self.artifact_limit)}"
                )
                self.dropped.append("later entries not collected: artifact limit reached")
                return
            problem = _problem(member, parts, top)
            if not problem:
                problem = self._keep(tar, member, parts[1:])
            if problem:
                self.dropped.append(f"{shown}: {problem}")

    def _keep(self, tar: tarfile.TarFile, member: tarfile.TarInfo, rel: Sequence[str]) -> str:
        """Writes one checked member; returns why it was not written, or "" when it was."""
        try:
            if member.isdir():
                with _directory(self._dir_fd, rel):
                    pass
            else:
                with _directory(self._dir_fd, rel[:-1]) as parent:
                    _write_file(tar, member, parent, rel[-1])
        except OSError as exc:
            if exc.errno not in _CONTENT_ERRNOS:
                raise
            return _CONTENT_ERRNOS[exc.errno]
        return ""


class _ChunkReader(io.RawIOBase):
    """The file-like object tarfile reads: hands out the chunks as they come, holding at most
    one chunk, so the stream is never in memory whole."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        super().__init__()
        self._chunks = chunks
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = memoryview(chunk).cast("B")
        with memoryview(buffer).cast("B") as view:
            size = min(len(view), len(self._pending))
            view[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


class _StrictTarInfo(tarfile.TarInfo):
    """Headers as tarfile reads them, minus two leniencies that would hide a broken or hostile
    stream: a stream that stops or turns to garbage between members counts as a proper end,
    and a metadata header is read into memory whatever its size."""

    @classmethod
    def frombuf(cls: type[_T], buf: bytes | bytearray, encoding: str, errors: str) -> _T:
        if len(buf) != tarfile.BLOCKSIZE:
            raise tarfile.ReadError("the archive ends before its end-of-archive marker")
        try:
            info = super().frombuf(buf, encoding, errors)
        except tarfile.HeaderError as exc:
            if buf.count(0) == tarfile.BLOCKSIZE:
                raise  # the end-of-archive marker: tarfile takes it as the end
            raise tarfile.ReadError(f"bad header: {exc}") from None
        if info.type in _METADATA_TYPES and info.size > _METADATA_LIMIT:
            raise tarfile.ReadError(f"a metadata header of {format_size(info.size)}")
        return info


class _StreamingTar(tarfile.TarFile):
    """A TarFile for one pass: in stream mode TarFile keeps every header it has read, a list
    as long as the archive (a million empty files); this one forgets each once it is read."""

    members: list[tarfile.TarInfo]  # TarFile's own attribute, missing from its stubs
    tarinfo = _StrictTarInfo

    def next(self) -> tarfile.TarInfo | None:
        member = super().next()
        self.members.clear()
        return member


def _open_attempt_dir(attempt_dir: Path) -> int:
    if attempt_dir.is_symlink():
        raise OSError(errno.ELOOP, "refusing an attempt dir that is a symbolic link", attempt_dir)
    attempt_dir.mkdir(parents=True, exist_ok=True)
    # O_NOFOLLOW again: a link swapped in after the check above would fail here, and every
    # later write goes through this descriptor rather than the path.
    return os.open(attempt_dir, _DIR_FLAGS)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _close_source(chunks: Iterator[bytes]) -> None:
    """A generator over a connection (the engine's archive, a remote node's) lets it go."""
    close = getattr(chunks, "close", None)
    if callable(close):
        close()


def _parts(name: str) -> list[str]:
    """A member's path components; "" and "." ones (a doubled or trailing slash) mean nothing."""
    return [part for part in name.split("/") if part not in ("", ".")]


def _relative_name(name: str, parts: Sequence[str], top: str | None) -> str:
    """The name as the user knows it, inside their log dir; the archive's name otherwise."""
    if len(parts) > 1 and parts[0] == top:
        return "/".join(parts[1:])
    return name


def _shown(name: str) -> str:
    """An untrusted name fit for one line of a report: control characters escaped, cut short."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)
    return text if len(text) <= _SHOWN_NAME_LIMIT else text[:_SHOWN_NAME_LIMIT] + "..."


def _data_size(member: tarfile.TarInfo) -> int:
    """What the member counts against the cap: its apparent size when data follows its header
    (tarfile reads an unknown type's data as a file's)."""
    if member.isreg() or member.type not in tarfile.SUPPORTED_TYPES:
        return member.size
    return 0


def _problem(member: tarfile.TarInfo, parts: Sequence[str], top: str | None) -> str:
    """Why a member must not be written as it stands, or "" when it may be."""
    if _unsafe(member.name, parts):
        return "unsafe path"
    if not parts or parts[0] != top:
        return "outside the archive's top directory"
    if not (member.isreg() or member.isdir()):
        return _KINDS.get(member.type, f"an entry of unsupported tar type {member.type!r}")
    if len(parts) == 1:
        return "" if member.isdir() else "a file in place of the archive's top directory"
    if len(parts) == 2 and parts[1] in LOG_NAMES:
        return "reserved name"
    return ""


def _unsafe(name: str, parts: Sequence[str]) -> bool:
    return name.startswith("/") or ".." in parts or "\0" in name


@contextmanager
def _directory(root_fd: int, parts: Sequence[str]) -> Iterator[int]:
    """A descriptor of root/parts..., each missing directory made (0755 before the umask),
    no link followed on the way."""
    fd = os.dup(root_fd)
    try:
        for part in parts:
            parent, fd = fd, -1
            try:
                fd = _enter(parent, part)
            finally:
                os.close(parent)
        yield fd
    finally:
        if fd >= 0:
            os.close(fd)


def _enter(parent_fd: int, name: str) -> int:
    with suppress(FileExistsError):  # an earlier member made it; the open checks what it is
        os.mkdir(name, 0o755, dir_fd=parent_fd)
    return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)


def _write_file(tar: tarfile.TarFile, member: tarfile.TarInfo, parent_fd: int, name: str) -> None:
    """A new file (never an existing one, never through a link), 0644 or 0755 before the
    umask and never set-id; removed again when its data cannot be read or written whole."""
    mode = 0o755 if member.mode & 0o111 else 0o644
    fd = os.open(name, _NEW_FILE_FLAGS, mode, dir_fd=parent_fd)
    try:
        source = tar.extractfile(member)
        if source is None:  # only for links and devices, which never get here
            raise tarfile.ReadError(f"no data for {member.name!r}")
        with source:
            while chunk := source.read(_COPY_CHUNK):
                _write_all(fd, chunk)
    except BaseException:
        os.unlink(name, dir_fd=parent_fd)
        raise
    finally:
        os.close(fd)
