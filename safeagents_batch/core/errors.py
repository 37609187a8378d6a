"""One error hierarchy; the CLI maps each class to an exit code and prints one line."""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_RUNS_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_ENGINE_UNAVAILABLE = 3
EXIT_INTERRUPTED = 130


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's text for a one-line report: engine errors span lines and can be long."""
    return " ".join(str(exc).split())[:limit] or type(exc).__name__


class BatchError(Exception):
    """Base of every error the tool reports to the user (never shown as a traceback)."""

    exit_code = EXIT_BAD_INPUT


@dataclass(frozen=True)
class Location:
    """Where in a jobs file a problem is: file as the user named it, 1-based line and column."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Problem:
    """One located problem in a jobs file: `FILE:LINE:COL: key.path: message`."""

    location: Location
    key_path: str
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.key_path}: {self.message}"


class JobsFileError(BatchError):
    """A jobs file is invalid; carries every problem found, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class UsageError(BatchError):
    """Bad command-line input or a bad batch directory."""


class EngineUnavailable(BatchError):
    """The Docker engine (or cluster) cannot be reached."""

    exit_code = EXIT_ENGINE_UNAVAILABLE


class BatchLocked(BatchError):
    """Another live process is working on the same batch directory."""
