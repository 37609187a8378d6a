"""Which entries of an attempt's artifact archive (the tar of /safeagents/logs, as `docker cp`
gives it: one top directory, then its contents; Podman 4.3 gives a volume's top unnamed and
its entries as `/NAME`, read as if named like Docker's) are kept. One set of rules for both places
that read such an archive: the local sink, which writes each kept entry into the attempt dir,
and a Ray node, which ships only the kept entries to the driver.

The script is untrusted. Only regular files and directories under the top directory are kept,
never a tool's own log name. What is kept is counted as the archive holds it (each entry's
headers and its data in 512-byte blocks; the top directory is docker's, free): an entry that
would go over `artifact_limit` is skipped and the entries after it still kept if they fit (a
huge file first must not cost the small result after it). Reading stops READ_SLACK bytes past
the cap, or once `file_limit` files and directories are kept: every later one would be over.
Each entry not kept is one line of `dropped` (the first MAX_DROPS_LISTED, then a count).
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable, Iterable, Iterator, Sequence

from safeagents_batch.core.errors import one_line
from safeagents_batch.core.tarsafe import (
    ARCHIVE_ERRORS,
    KINDS,
    ChunkReader,
    StreamingTar,
    shown,
    split_name,
    unsafe_name,
)
from safeagents_batch.core.units import format_size
from safeagents_batch.records.layout import RESERVED_NAMES

# How far past the cap the archive is read to reach what comes after a skipped member: a
# 5 GiB file before a small result is read through (seconds); more than this stops reading.
READ_SLACK = 8 * 1024**3
MAX_DROPS_LISTED = 100  # lines of `dropped_artifacts`; the rest is one count
UNCAPPED = 1 << 62
ROOTED_TOP = "logs"  # the top directory's name where the archive gives it none (Podman)

# Keeps one checked entry: given the archive (to read its data), the entry and its path below
# the top directory ([] for the top directory itself); returns why it was not kept, or "".
Keep = Callable[[tarfile.TarFile, tarfile.TarInfo, Sequence[str]], str]


class ArtifactSelection:
    """The rules above, applied to one archive; `dropped` says what was not kept."""

    def __init__(self, artifact_limit: int, file_limit: int) -> None:
        self.artifact_limit = artifact_limit
        self.file_limit = file_limit
        self.dropped: list[str] = []
        self._not_listed = 0  # drops past MAX_DROPS_LISTED, counted

    def without_caps(self) -> ArtifactSelection:
        """The same rules but the caps, writing into the same `dropped` (for an archive whose
        caps were applied where it was made)."""
        uncapped = ArtifactSelection(UNCAPPED, UNCAPPED)
        uncapped.dropped = self.dropped
        return uncapped

    def select(self, tar_chunks: Iterable[bytes], keep: Keep) -> None:
        """Reads the archive and calls `keep` for each entry the rules keep; never raises for
        the archive's content, only for `keep`'s errors and those of `tar_chunks` itself. The
        iterator is closed once reading stops."""
        chunks = iter(tar_chunks)
        reader = ChunkReader(chunks)
        try:
            with StreamingTar.open(fileobj=reader, mode="r|") as tar:
                self._walk(tar, reader, keep)
        except ARCHIVE_ERRORS as exc:
            self.drop(f"artifacts: unreadable archive: {one_line(exc)}")
        finally:
            _close_source(chunks)
            if self._not_listed:
                self.dropped.append(f"... and {self._not_listed} more entries not kept")
                self._not_listed = 0

    def drop(self, line: str) -> None:
        """What was not kept, one line (listed while fewer than MAX_DROPS_LISTED are)."""
        if len(self.dropped) < MAX_DROPS_LISTED:
            self.dropped.append(line)
        else:
            self._not_listed += 1

    def _walk(self, tar: tarfile.TarFile, reader: ChunkReader, keep: Keep) -> None:
        top: str | None = None
        kept_bytes = kept_entries = 0
        read_limit = self.artifact_limit + READ_SLACK
        rooted = False  # Podman's layout of a volume: an unnamed top, then "/NAME" entries
        while (member := tar.next()) is not None:
            if reader.consumed > read_limit:
                self.drop(f"later entries not read: {format_size(read_limit)} of archive read")
                return
            if top is None and member.isdir() and member.name.strip("./") == "":
                rooted = True
            if rooted:
                member.name = _under_top(member.name)
            parts = split_name(member.name)
            if top is None and parts and not unsafe_name(member.name, parts):
                top = parts[0]  # docker cp's layout: the copied directory, then its contents
            is_top = parts == [top]
            if not is_top and kept_entries >= self.file_limit:
                self.drop(
                    f"later entries not collected: {self.file_limit} files and directories "
                    "kept already"
                )
                return
            size = 0 if is_top else archive_size(member)
            name = shown(_relative_name(member.name, parts, top))
            if reader.consumed + size > read_limit:  # past it is only by reading through it
                self.drop(f"{name}: {format_size(member.size)}, too large to read past")
                self.drop("later entries not collected: the archive is read no further")
                return
            problem = (
                _problem(member, parts, top)
                or self._over_cap(member, kept_bytes + size)
                or keep(tar, member, parts[1:])
            )
            if problem:
                self.drop(f"{name}: {problem}")
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


def archive_size(member: tarfile.TarInfo) -> int:
    """What the member takes in the archive: its headers (long names, pax records included)
    and its data, padded to blocks; data follows the header of a file and of an unknown type
    (tarfile reads that as a file's)."""
    headers = member.offset_data - member.offset
    has_data = member.isreg() or member.type not in tarfile.SUPPORTED_TYPES
    blocks = -(-member.size // tarfile.BLOCKSIZE) if has_data else 0
    return headers + blocks * tarfile.BLOCKSIZE


def _close_source(chunks: Iterator[bytes]) -> None:
    """A generator over a connection (the engine's archive, a remote node's) lets it go."""
    close = getattr(chunks, "close", None)
    if callable(close):
        close()


def _under_top(name: str) -> str:
    """A name of Podman's archive of a volume (`""` for the top, `/a/b` below it) as Docker
    names it (`logs`, `logs/a/b`); the usual checks follow (a `..` stays unsafe)."""
    below = name.lstrip("/")
    return f"{ROOTED_TOP}/{below}" if below.strip("./") else ROOTED_TOP


def _relative_name(name: str, parts: Sequence[str], top: str | None) -> str:
    """The name as the user knows it, inside their log dir; the archive's name otherwise."""
    if len(parts) > 1 and parts[0] == top:
        return "/".join(parts[1:])
    return name


def _problem(member: tarfile.TarInfo, parts: Sequence[str], top: str | None) -> str:
    """Why a member must not be kept as it stands, or "" when it may be."""
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
