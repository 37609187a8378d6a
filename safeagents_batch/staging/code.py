"""Code snapshots: a script directory -> the files that ship (staging/select.py) -> their
digest -> a read-only snapshot.

Each distinct script directory is copied once into the batch dir as `code/<digest>/`, and
containers mount that snapshot, never the user's directory: a run sees the code as it was when
the batch started, and the snapshot is readable by the container's uid whatever the source's
modes. Pure file-system code: no Docker, no output.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from safeagents_batch.core.errors import UsageError
from safeagents_batch.core.units import format_size
from safeagents_batch.jobs.model import DEFAULT_CODE_LIMIT
from safeagents_batch.staging.select import (
    CodeFile,
    CodeTooLarge,
    check_size,
    chunks,
    open_regular,
    owner_executable,
    select_files,
    sort_key,
)

# Changing how the digest is computed must change every digest: the format is hashed first.
DIGEST_FORMAT = b"safeagents-batch code v1\n"
FILE_MODE = 0o644
EXECUTABLE_MODE = 0o755
DIR_MODE = 0o755


@dataclass(frozen=True)
class StagedCode:
    """A snapshot of a script directory, named by the digest of its contents. `path` is a local
    tree of exactly those files, readable by any uid; a remote backend ships it by digest."""

    digest: str
    path: Path


@dataclass(frozen=True)
class _Copied:
    """What was actually written for one file: the digest is computed from these."""

    relative: str
    executable: bool
    sha256: str
    size: int


def code_digest(files: Sequence[CodeFile]) -> str:
    """sha256 hex over (relative path, executable bit, sha256 of content) of every file, sorted:
    the same tree gives the same digest on every machine."""
    return _tree_digest(
        (file.relative, file.executable, _content_sha256(file.source)) for file in files
    )


def stage_code(
    directory: Path,
    store: Path,
    *,
    exclude: Sequence[Path] = (),
    keep: Sequence[Path] = (),
    limit: int = DEFAULT_CODE_LIMIT,
) -> StagedCode:
    """Snapshot into store/<digest>/ (store is e.g. BATCH_DIR/code); reuse it when it already
    exists."""
    files = select_files(directory, exclude=exclude, keep=keep)
    check_size(directory, files, limit)
    _make_dir(store)
    # Copied beside its final place, then renamed: a snapshot is complete or absent, and
    # the content is read once, hashed as it is copied, so the name matches what is there.
    temp = Path(tempfile.mkdtemp(prefix=".staging-", dir=store))
    try:
        copied = _copy_tree(directory, files, temp, limit)
        digest = _tree_digest((c.relative, c.executable, c.sha256) for c in copied)
        target = store / digest
        if not _publish(temp, target):
            shutil.rmtree(temp)
        return StagedCode(digest=digest, path=target)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


# --- digest --------------------------------------------------------------------------------


def _tree_digest(entries: Iterable[tuple[str, bool, str]]) -> str:
    """One record per file: the path's bytes, NUL (never in a path), x or -, content sha256."""
    digest = hashlib.sha256(DIGEST_FORMAT)
    for relative, executable, content in sorted(entries, key=lambda e: sort_key(e[0])):
        flag = b"x" if executable else b"-"
        digest.update(os.fsencode(relative) + b"\0" + flag + content.encode() + b"\n")
    return digest.hexdigest()


def _content_sha256(source: Path) -> str:
    digest = hashlib.sha256()
    with open_regular(source) as (reader, _):
        for chunk in chunks(reader, source):
            digest.update(chunk)
    return digest.hexdigest()


# --- snapshot ------------------------------------------------------------------------------


def _make_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():  # a batch dir's code/ planted as a link: snapshots would land there
        raise UsageError(f"{path}: a link, not a directory; refusing to stage code through it")
    os.chmod(path, DIR_MODE)  # explicit: mkdir's mode is reduced by the umask


def _copy_tree(directory: Path, files: Sequence[CodeFile], temp: Path, limit: int) -> list[_Copied]:
    copied: list[_Copied] = []
    allowance = limit
    for file in files:
        target = temp / file.relative
        _make_parents(temp, target.parent)
        done = _copy_file(file, target, allowance)
        if done is None:
            raise CodeTooLarge(
                f"{os.path.join(directory, '')}: files grew past the limit of {format_size(limit)} "
                "(max_code_size) while being copied"
            )
        allowance -= done.size
        copied.append(done)
    return copied


def _make_parents(temp: Path, directory: Path) -> None:
    missing: list[Path] = []
    while directory != temp and not directory.is_dir():
        missing.append(directory)
        directory = directory.parent
    for path in reversed(missing):
        path.mkdir()
        os.chmod(path, DIR_MODE)


def _copy_file(file: CodeFile, target: Path, allowance: int) -> _Copied | None:
    """Copies and hashes in one read; None when the file holds more than `allowance` bytes
    (it grew since it was listed). The mode comes from the file as opened, like the content."""
    digest = hashlib.sha256()
    size = 0
    with open_regular(file.source) as (reader, source_mode):
        executable = owner_executable(source_mode)
        mode = EXECUTABLE_MODE if executable else FILE_MODE
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        with os.fdopen(fd, "wb") as writer:
            os.fchmod(writer.fileno(), mode)  # explicit: the umask reduced the create mode
            for chunk in chunks(reader, file.source):
                size += len(chunk)
                if size > allowance:
                    return None
                digest.update(chunk)
                writer.write(chunk)
    return _Copied(file.relative, executable, digest.hexdigest(), size)


def _publish(temp: Path, target: Path) -> bool:
    """Renames the copy into place; False when a snapshot of that digest is already there,
    whole (an earlier stage, or a concurrent one that won the race): the caller discards the
    copy. What stands at the name and is not that snapshot (a link planted there, a dir whose
    files no longer hash to its name) is moved aside first: a container mounts what is there."""
    os.chmod(temp, DIR_MODE)  # mkdtemp makes it 0700
    if _is_snapshot(target):
        return False
    if os.path.lexists(target):
        os.rename(target, target.with_name(f".stale-{target.name[:12]}-{secrets.token_hex(4)}"))
    try:
        os.rename(temp, target)
    except OSError:
        if _is_snapshot(target):
            return False
        raise
    return True


def _is_snapshot(target: Path) -> bool:
    """A real directory whose regular files, and nothing else, hash to its name."""
    if target.is_symlink() or not target.is_dir():
        return False
    entries: list[tuple[str, bool, str]] = []
    for root, dirs, names in os.walk(target):
        for name in [*dirs, *names]:
            path = Path(root, name)
            if path.is_symlink() or not (path.is_dir() or path.is_file()):
                return False
        for name in names:
            path = Path(root, name)
            executable = owner_executable(path.lstat().st_mode)
            entries.append((path.relative_to(target).as_posix(), executable, _content_sha256(path)))
    return _tree_digest(entries) == target.name
