"""Git provenance of a batch: which commit of the jobs file's work tree produced it, and
whether the jobs file or its scripts had uncommitted changes. git runs as a subprocess; a
missing git, or a jobs file outside any work tree, is "no provenance", never a failure."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from msgspec import Struct

GIT_TIMEOUT_SECONDS = 30.0  # a hung git (a lock, a slow network mount) must not hang `run`


class GitState(Struct, frozen=True, kw_only=True):
    """The jobs file's work tree: HEAD (None before the first commit), the branch (None when
    detached) and whether the files the batch runs differ from HEAD (untracked counts)."""

    commit: str | None
    branch: str | None
    dirty: bool


@dataclass(frozen=True)
class GitCheck:
    """A look at the work tree: its state as recorded, and the dirty paths (relative to the
    work tree; shown by `--require-clean`, never recorded)."""

    state: GitState
    changed: tuple[str, ...]


def git_state(
    jobs_file: Path, scripts: Sequence[Path], ignore: Sequence[Path] = ()
) -> GitState | None:
    """The provenance of a batch of `scripts` (files, or the dirs that ship) run from
    `jobs_file`, or None if not in git; changes under `ignore` (the batch output, env files:
    nothing that ships) do not count."""
    check = git_check(jobs_file, scripts, ignore)
    return check.state if check is not None else None


def git_check(
    jobs_file: Path, scripts: Sequence[Path], ignore: Sequence[Path] = ()
) -> GitCheck | None:
    where = jobs_file.absolute().parent
    top = _git(where, "rev-parse", "--show-toplevel")
    if top is None:
        return None
    root = Path(top)
    paths = [_inside(root, p) for p in (jobs_file, *scripts)]
    ignored = [f":(exclude){p}" for p in (_inside(root, i) for i in ignore) if p is not None]
    changed = _changed(root, [*sorted({p for p in paths if p is not None}), *ignored])
    state = GitState(
        commit=_git(where, "rev-parse", "--verify", "--quiet", "HEAD"),
        branch=_branch(where),
        dirty=bool(changed),
    )
    return GitCheck(state, changed)


def _branch(where: Path) -> str | None:
    name = _git(where, "symbolic-ref", "--quiet", "--short", "HEAD")
    return name or None


def _changed(root: Path, paths: list[str]) -> tuple[str, ...]:
    """Paths among `paths` that `git status` lists: modified, staged, untracked, deleted."""
    if not any(not p.startswith(":(exclude)") for p in paths):
        return ()
    out = _git(root, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--", *paths)
    if out is None:
        # git answered rev-parse but not status (e.g. a corrupt index): say dirty, not clean.
        return ("(git status failed)",)
    entries = iter(e for e in out.split("\0") if e)
    found = []
    for entry in entries:
        found.append(entry[3:])
        if entry[0] in "RC":
            next(entries, None)  # a rename or copy: its source path comes as its own entry
    return tuple(found)


def _inside(root: Path, path: Path) -> str | None:
    """`path` relative to the work tree, or None for a file outside it (another repository)."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return None


def _git(where: Path, *args: str) -> str | None:
    """git's stdout stripped of the final newline, or None if git failed or is missing."""
    try:
        done = subprocess.run(
            ["git", "-C", str(where), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.rstrip("\n") if done.returncode == 0 else None
