"""What every key's check of a jobs file shares: the located problems and warnings found so far,
the document they point into, and the directory relative paths start from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from safeagents_batch.core.errors import Location, Problem
from safeagents_batch.core.text import printable as core_printable
from safeagents_batch.jobs.schema import format_key_path
from safeagents_batch.jobs.yamlmarks import KeyPath, MarkedDocument, Position

Entry = tuple[Position, KeyPath, str]
Scope = TypeVar("Scope")  # what a key's rule is given besides the value: the job, the checker


@dataclass(frozen=True)
class Key(Generic[Scope]):
    """One key of a mapping in a jobs file, declared as pre-commit's clientlib declares them.

    `rule` gets a value the schema passed and where it stands, reports what else is wrong
    there, and returns the record's value; `default` is the record's value when the key is
    left out, unless `missing` is set: then leaving it out is that problem."""

    name: str
    rule: Callable[[Scope, KeyPath, Any], Any]
    default: Any = None
    missing: str = ""


def as_is(scope: object, path: KeyPath, value: Any) -> Any:
    """The rule of a key the schema checks completely: the value is the record's."""
    return value


def as_tuple(scope: object, path: KeyPath, value: list[Any]) -> tuple[Any, ...]:
    return tuple(value)


@dataclass
class Checker:
    """Problems (the schema's and the checks') and warnings of one jobs file, by key path."""

    doc: MarkedDocument
    label: str
    base: Path
    problems: list[Entry] = field(default_factory=list)
    warnings: list[Entry] = field(default_factory=list)
    # Every prefix of a problem's key path, kept up with the problems as they come: asking
    # whether a key is clean is then one lookup, not a pass over every problem (a file with
    # thousands of faulty jobs asks thousands of times).
    _faulty: set[KeyPath] = field(default_factory=set, repr=False)
    _indexed: int = field(default=0, repr=False)

    def add(self, path: KeyPath, message: str, *, of_key: bool = False) -> None:
        self.problems.append((self.doc.position(path, of_key=of_key), path, message))

    def warn(self, path: KeyPath, message: str) -> None:
        self.warnings.append((self.doc.position(path), path, message))

    def located(self, entries: list[Entry] | None = None) -> list[Problem]:
        entries = self.problems if entries is None else entries
        ordered = sorted(entries, key=lambda e: (e[0].line, e[0].column, e[2]))
        # A faulty default is met once per job that inherits it: report it once.
        unique = dict.fromkeys(
            (self.location(pos), format_key_path(path), printable(msg))
            for pos, path, msg in ordered
        )
        return [Problem(*entry) for entry in unique]

    def location(self, pos: Position) -> Location:
        return Location(self.label, pos.line + 1, pos.column + 1)

    def is_clean(self, prefix: KeyPath) -> bool:
        """No schema problem at or below `prefix`: its data has the types the schema promises."""
        for _, path, _ in self.problems[self._indexed :]:
            self._faulty.update(path[:end] for end in range(len(path) + 1))
        self._indexed = len(self.problems)
        return prefix not in self._faulty

    def clean_part(self, raw: Any, prefix: KeyPath) -> dict[str, Any]:
        """The keys of a mapping the schema found no fault in (all of them in a valid file)."""
        if not isinstance(raw, dict):
            return {}
        return {k: v for k, v in raw.items() if self.is_clean((*prefix, k))}

    def existing_file(self, value: str, path: KeyPath, what: str) -> Path:
        """`value` relative to the jobs file; a problem at `path` when no such file exists."""
        file = self.base / value
        if not is_file(file):
            self.add(path, f"{what} not found: {file}")
        return file


def is_file(path: Path) -> bool:
    """Path.is_file, but a name the OS refuses (too long, ...) is simply not a file."""
    try:
        return path.is_file()
    except OSError:
        return False


def is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


MESSAGE_LIMIT = 500  # characters of one problem's message: it may quote a long value


def printable(text: str) -> str:
    """Problems print one per line: a newline (or another control character) taken from the
    file, a key or a path is shown escaped; a message that quotes much of a value is cut."""
    return core_printable(text, MESSAGE_LIMIT)
