"""Untrusted tar streams read as data, never extracted by tarfile: the attempt sink keeps a
script's artifacts with it, and a Ray node unpacks shipped code and credentials with it.

Only regular files and directories land, as new files under directories entered through
descriptors without following a link; names that are absolute, climb with `..` or hold a NUL
never land. This is what tarfile's `data` extraction filter guarantees, without it: the filter
came with Python 3.12 and as a backport in 3.11.4, and Debian 12's own Python is 3.11.2.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, TypeVar

from safeagents_batch.core.files import DIR_FLAGS, open_dir_below
from safeagents_batch.core.text import printable
from safeagents_batch.core.units import format_size

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
COPY_CHUNK = 1024**2
# Long names, link targets and pax records come as headers that tarfile reads whole into
# memory; real ones are a few KiB (PATH_MAX, xattrs), so a bigger one is a hostile archive.
METADATA_LIMIT = 1024**2
METADATA_TYPES = (
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
)
KINDS = {
    tarfile.SYMTYPE: "a symbolic link",
    tarfile.LNKTYPE: "a hard link",
    tarfile.FIFOTYPE: "a FIFO",
    tarfile.CHRTYPE: "a character device",
    tarfile.BLKTYPE: "a block device",
}
# What a bad archive raises from tarfile: its own errors, ValueError for unparsable numbers
# and text in pax and sparse headers, RecursionError for a long chain of pax headers.
ARCHIVE_ERRORS = (tarfile.TarError, ValueError, RecursionError)
SHOWN_NAME_LIMIT = 200

_T = TypeVar("_T", bound="StrictTarInfo")


class ChunkReader(io.RawIOBase):
    """The file-like object tarfile reads: hands out the chunks as they come, holding at most
    one chunk, so the stream is never in memory whole."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        super().__init__()
        self._chunks = chunks
        self._pending = memoryview(b"")
        self.consumed = 0  # bytes handed to the reader so far

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
        self.consumed += size
        return size


class StrictTarInfo(tarfile.TarInfo):
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
        if info.type in METADATA_TYPES and info.size > METADATA_LIMIT:
            raise tarfile.ReadError(f"a metadata header of {format_size(info.size)}")
        return info


class StreamingTar(tarfile.TarFile):
    """A TarFile for one pass: in stream mode TarFile keeps every header it has read, a list
    as long as the archive (a million empty files); this one forgets each once it is read."""

    members: list[tarfile.TarInfo]  # TarFile's own attribute, missing from its stubs
    tarinfo = StrictTarInfo

    def next(self) -> tarfile.TarInfo | None:
        member = super().next()
        self.members.clear()
        return member


def extract(source: IO[bytes], target: Path) -> None:
    """Every member of the tar read from `source` into the existing directory `target`, with
    its permission bits less group and other write and any set-id bit, exactly (not as the
    umask leaves them: a container's user reads a node's code). Raises ValueError for a member
    that is not a regular file or a directory, or whose name leaves `target`."""
    root = os.open(target, DIR_FLAGS)
    try:
        with StreamingTar.open(fileobj=source, mode="r|") as tar:
            while (member := tar.next()) is not None:
                _extract_member(tar, member, root)
    finally:
        os.close(root)


def _extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, root: int) -> None:
    parts = split_name(member.name)
    if not parts or unsafe_name(member.name, parts):
        raise ValueError(f"unsafe path in the archive: {shown(member.name)}")
    if not (member.isreg() or member.isdir()):
        kind = KINDS.get(member.type, f"an entry of type {member.type!r}")
        raise ValueError(f"{shown(member.name)} in the archive is {kind}")
    mode = member.mode & 0o755
    if member.isdir():
        with directory(root, parts) as made:
            os.fchmod(made, mode)
        return
    with directory(root, parts[:-1]) as parent:
        write_file(tar, member, parent, parts[-1], exact_mode=mode)


def split_name(name: str) -> list[str]:
    """A member's path components; "" and "." ones (a doubled or trailing slash) mean nothing."""
    return [part for part in name.split("/") if part not in ("", ".")]


def unsafe_name(name: str, parts: Sequence[str]) -> bool:
    return name.startswith("/") or ".." in parts or "\0" in name


def shown(name: str) -> str:
    """An untrusted name fit for one line of a report: control characters escaped, cut short."""
    return printable(name, SHOWN_NAME_LIMIT)


@contextmanager
def directory(root_fd: int, parts: Sequence[str]) -> Iterator[int]:
    """A descriptor of root/parts..., each missing directory made (0755 before the umask),
    no link followed on the way."""
    fd = open_dir_below(root_fd, parts, create=True)
    try:
        yield fd
    finally:
        os.close(fd)


def write_file(
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    parent_fd: int,
    name: str,
    *,
    exact_mode: int | None = None,
) -> None:
    """A new file (never an existing one, never through a link), 0644 or 0755 before the
    umask (or `exact_mode`, whatever the umask) and never set-id; removed again when its data
    cannot be read or written whole."""
    mode = 0o755 if member.mode & 0o111 else 0o644
    fd = os.open(name, NEW_FILE_FLAGS, mode, dir_fd=parent_fd)
    try:
        if exact_mode is not None:
            os.fchmod(fd, exact_mode)
        source = tar.extractfile(member)
        if source is None:  # only for links and devices, which never get here
            raise tarfile.ReadError(f"no data for {member.name!r}")
        with source:
            while chunk := source.read(COPY_CHUNK):
                write_all(fd, chunk)
    except BaseException:
        os.unlink(name, dir_fd=parent_fd)
        raise
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def tar_tree(root: Path) -> bytes:
    """A directory as an uncompressed tar, members relative to it (regular files, dirs)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:") as archive:
        for path in sorted(root.rglob("*")):
            if path.is_symlink() or not (path.is_file() or path.is_dir()):
                continue
            archive.add(path, arcname=path.relative_to(root).as_posix(), recursive=False)
    return buffer.getvalue()
