"""The one file selector: what of a directory on this host leaves it for a container, whether
as a code snapshot (staging/code.py) or as part of an image's build context (`source_dirs`,
staging/images.py). Same ignores, same cap, same reading rules for both:

* left out: `.git` and caches, virtualenvs (a dir with `pyvenv.cfg`, or `conda-meta/`), `*.pyc`,
  dotenv files (`.env`, `.env.*`: values reach a container only as its environment), whatever
  the directory's `.gitignore` files ignore (git's rules, nested files included), and the
  paths a caller names (the batch output dir, the jobs file and its env files);
* only regular files (a link to one is read through; links to dirs, FIFOs, devices never);
* at most a given size in all, else one error naming the largest entries.

Pure file-system code: no Docker, no output.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pathspec

from safeagents_batch.core.errors import UsageError
from safeagents_batch.core.units import format_size

# Caches and repository metadata: never code a script needs, and often large.
SKIPPED_DIRS = frozenset({".git", "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"})
SKIPPED_SUFFIXES = (".pyc",)
# Dotenv files hold secrets by convention: their values reach a container as its environment
# (env_file), never as a file.
SKIPPED_FILES = re.compile(r"\.env(\..*)?\Z")
LARGEST_SHOWN = 5
CHUNK = 1024**2
# A followed symlink that fails with these leads to no file (dangling, a loop): left out,
# where any other failure is a file the tool cannot read.
NOT_A_FILE = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP})


@dataclass(frozen=True)
class CodeFile:
    """One file that ships: where it goes in the snapshot and where its content comes from."""

    relative: str  # POSIX path inside the snapshot
    source: Path  # the file to read (a symlink to a regular file is read through)
    size: int
    executable: bool


class CodeTooLarge(UsageError):
    """A script directory would ship more than `max_code_size`; the message names the largest
    entries so the user knows what to ignore."""


@dataclass(frozen=True)
class _Pattern:
    """One .gitignore line as pathspec compiles it. `whole` matches only the path itself, not
    a path under it: git tests each directory on the way down, then each file."""

    regex: re.Pattern[str]
    whole: re.Pattern[str]
    open_ended: bool  # `a/**`, `*`: everything below matches, no end to anchor
    dirs_only: bool  # for `a/**/` (a `dir/` pattern otherwise ends in the named group)
    excludes: bool  # False for a `!` line


@dataclass(frozen=True)
class _Ignore:
    """The patterns of one .gitignore, last first; `base` is its directory, relative, "" or
    ending in /."""

    base: str
    patterns: tuple[_Pattern, ...]


@dataclass(frozen=True)
class _Walk:
    root: Path  # resolved: entries under it are compared with resolved `excluded` paths
    excluded: tuple[Path, ...]
    also_ignored: tuple[_Ignore, ...] = ()  # rules of the root's own, beside its .gitignore


def select_files(
    directory: Path,
    *,
    exclude: Sequence[Path] = (),
    keep: Sequence[Path] = (),
    ignore: Sequence[str] = (),
) -> list[CodeFile]:
    """Sorted listing of what leaves `directory`: its files as the rules above select them,
    and the `keep` paths (scripts) whatever the rules say, if they lie inside it. `ignore`
    lines are .gitignore lines of the root that leave out files on their own: what either
    they or the .gitignore files ignore does not ship."""
    root = _root(directory)
    also = (_Ignore("", _patterns(ignore)),) if ignore else ()
    walk = _Walk(root, tuple(path.resolve() for path in exclude), also)
    found = {file.relative: file for file in _walk(walk)}
    for path in keep:
        kept = _kept(root, path)
        if kept is not None:
            found[kept.relative] = kept
    return sorted(found.values(), key=lambda file: sort_key(file.relative))


# --- listing -------------------------------------------------------------------------------


def _root(directory: Path) -> Path:
    root = directory.resolve()
    if not root.is_dir():
        raise UsageError(f"{directory}: not a directory")
    return root


def _walk(walk: _Walk) -> Iterator[CodeFile]:
    # An explicit stack rather than recursion: no depth limit on deep trees.
    pending: list[tuple[str, tuple[_Ignore, ...]]] = [("", ())]
    while pending:
        relative_dir, inherited = pending.pop()
        entries = _scan(walk.root / relative_dir)
        rules = inherited + _gitignore(entries, relative_dir)
        for entry in entries:
            relative = relative_dir + entry.name
            if entry.is_dir(follow_symlinks=False):
                if _ships_dir(walk, entry, relative, rules):
                    pending.append((relative + "/", rules))
                continue
            file = _regular_file(entry, relative)
            if file is not None and _ships_file(walk, entry, relative, rules):
                yield file


def _scan(directory: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as entries:
            return list(entries)
    except OSError as exc:
        raise UsageError(f"cannot list {directory}: {exc.strerror or exc}") from exc


def _gitignore(entries: Iterable[os.DirEntry[str]], base: str) -> tuple[_Ignore, ...]:
    # Like git, a .gitignore that is a symlink is not read (it could point anywhere).
    for entry in entries:
        if entry.name == ".gitignore" and entry.is_file(follow_symlinks=False):
            text = read_bytes(Path(entry.path)).decode("utf-8", "surrogateescape")
            return (_Ignore(base, _patterns(text.splitlines())),)
    return ()


def _patterns(lines: Iterable[str]) -> tuple[_Pattern, ...]:
    patterns = [pattern for line in lines for pattern in _compile(line)]
    return tuple(reversed(patterns))


def _compile(line: str) -> list[_Pattern]:
    """pathspec compiles the line; we match it the way git walks. pathspec reads `a/**/` as
    `a/`, but for git it is every directory under a/, not a/ itself: that is `a/**`, for
    directories only."""
    dirs_only = line.rstrip(" ").endswith("/**/")
    text = line.rstrip(" ")[:-1] if dirs_only else line
    compiled = pathspec.GitIgnoreSpec.from_lines([text]).patterns
    return [
        _pattern(p.regex, excludes=p.include, dirs_only=dirs_only)
        for p in compiled
        if p.include is not None and p.regex is not None
    ]


def _pattern(regex: re.Pattern[str], *, excludes: bool, dirs_only: bool) -> _Pattern:
    # pathspec's regexes match a path or anything under it, ending a name with `(/|$)` (the
    # named group); anchoring that at the end leaves the path itself. Without the group the
    # pattern is open-ended (`a/**`): whatever it matches is matched itself.
    whole = re.compile(f"(?:{regex.pattern})\\Z", regex.flags)
    return _Pattern(regex, whole, not regex.groupindex, dirs_only, excludes)


def _ships_dir(
    walk: _Walk, entry: os.DirEntry[str], relative: str, rules: Sequence[_Ignore]
) -> bool:
    path = Path(entry.path)
    return not (
        entry.name in SKIPPED_DIRS
        or _is_environment(path)
        or _excluded(walk, path)
        or _ignored(rules, relative, is_dir=True)
        or _ignored(walk.also_ignored, relative, is_dir=True)
    )


def _ships_file(
    walk: _Walk, entry: os.DirEntry[str], relative: str, rules: Sequence[_Ignore]
) -> bool:
    return not (
        entry.name.endswith(SKIPPED_SUFFIXES)
        or SKIPPED_FILES.match(entry.name) is not None
        or _excluded(walk, Path(entry.path))
        or _ignored(rules, relative, is_dir=False)
        or _ignored(walk.also_ignored, relative, is_dir=False)
    )


def _is_environment(path: Path) -> bool:
    """A virtualenv or a conda env: installed packages, which the image provides instead."""
    return os.path.lexists(path / "pyvenv.cfg") or (path / "conda-meta").is_dir()


def _excluded(walk: _Walk, path: Path) -> bool:
    """At or under an excluded path, by its own path or, for a link, by what it points to: a
    link beside the scripts to a left-out env file must not ship that file's content."""
    candidates = {path, path.resolve()} if path.is_symlink() else {path}
    return any(
        candidate == excluded or excluded in candidate.parents
        for candidate in candidates
        for excluded in walk.excluded
    )


def _ignored(rules: Sequence[_Ignore], relative: str, *, is_dir: bool) -> bool:
    """Git's precedence: the deepest .gitignore with a matching pattern decides, and within a
    file the last matching pattern; no match, not ignored."""
    for rule in reversed(rules):
        local = relative[len(rule.base) :]
        for pattern in rule.patterns:
            if _matches(pattern, local, is_dir=is_dir):
                return pattern.excludes
    return False


def _matches(pattern: _Pattern, path: str, *, is_dir: bool) -> bool:
    if pattern.dirs_only and not is_dir:
        return False
    if pattern.open_ended:
        return pattern.regex.search(path) is not None
    if pattern.whole.search(path) is not None:
        return True
    # `dir/` patterns need the slash; a directory offers it.
    return is_dir and pattern.whole.search(path + "/") is not None


def _regular_file(entry: os.DirEntry[str], relative: str) -> CodeFile | None:
    """The entry as a file to ship, or None for what does not ship: links to directories,
    dangling links, FIFOs, sockets, devices. Only stat, never open: a FIFO cannot block."""
    try:
        info = entry.stat(follow_symlinks=True)
    except OSError as exc:
        if exc.errno in NOT_A_FILE:
            return None
        raise UsageError(f"cannot read {entry.path}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(info.st_mode):
        return None
    return CodeFile(relative, Path(entry.path), info.st_size, owner_executable(info.st_mode))


def _kept(root: Path, path: Path) -> CodeFile | None:
    """A path that ships whatever the rules say; None when it lies outside `root` (keep never
    brings in content from elsewhere)."""
    location = Path(os.path.abspath(path))
    location = location.parent.resolve() / location.name
    if root not in location.parents:
        return None
    try:
        info = location.stat()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise UsageError(f"{path}: not a regular file")
    relative = location.relative_to(root).as_posix()
    return CodeFile(relative, location, info.st_size, owner_executable(info.st_mode))


def owner_executable(mode: int) -> bool:
    return bool(mode & stat.S_IXUSR)


def sort_key(relative: str) -> bytes:
    # By bytes, so the order (and the digest) does not depend on the locale.
    return os.fsencode(relative)


# --- size cap ------------------------------------------------------------------------------


def check_size(directory: Path, files: Sequence[CodeFile], limit: int) -> None:
    total = sum(file.size for file in files)
    if total > limit:
        raise CodeTooLarge(_too_large_message(directory, files, total, limit))


def _too_large_message(directory: Path, files: Sequence[CodeFile], total: int, limit: int) -> str:
    largest = ", ".join(f"{name} {format_size(size)}" for name, size in _largest_entries(files))
    return (
        f"{os.path.join(directory, '')}: {format_size(total)} of code to ship, over the limit of "
        f"{format_size(limit)} (max_code_size); largest: {largest}; "
        "add them to .gitignore or raise max_code_size"
    )


def _largest_entries(files: Sequence[CodeFile]) -> list[tuple[str, int]]:
    """Top-level entries by the size they ship, a directory's files summed (shown as `dir/`)."""
    sizes: dict[str, int] = {}
    for file in files:
        head, slash, _ = file.relative.partition("/")
        name = head + slash
        sizes[name] = sizes.get(name, 0) + file.size
    ranked = sorted(sizes.items(), key=lambda item: (-item[1], item[0]))
    return ranked[:LARGEST_SHOWN]


# --- reading ---------------------------------------------------------------------------------


def read_bytes(source: Path) -> bytes:
    with open_regular(source) as (reader, _):
        return b"".join(chunks(reader, source))


@contextlib.contextmanager
def open_regular(source: Path) -> Iterator[tuple[BinaryIO, int]]:
    """A file listed as regular, opened, with its mode. O_NONBLOCK because it may have been
    replaced by a FIFO since: opening that must not hang (a regular file ignores the flag)."""
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise UsageError(f"cannot read {source}: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "rb") as reader:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise UsageError(f"{source}: no longer a regular file")
        yield reader, mode


def chunks(reader: BinaryIO, source: Path) -> Iterator[bytes]:
    while True:
        try:
            chunk = reader.read(CHUNK)
        except OSError as exc:
            raise UsageError(f"cannot read {source}: {exc.strerror or exc}") from exc
        if not chunk:
            return
        yield chunk
