"""An error raised somewhere else (a Ray node, an agent, a node task) as the driver reports it:
one line with the exception's type, its message and where it was raised, and the whole
traceback for a file. Ray's own text of such an error starts with a long header (the task,
its pid, ip, actor id and repr) and carries terminal colour codes; the cause is at its end.

No Ray here: the node builds these from a live exception, the driver from Ray's text.
"""

from __future__ import annotations

import re
import traceback
from dataclasses import dataclass

PACKAGE = "safeagents_batch"
LINE_LIMIT = 500
# ECMA-48 control sequences (CSI ... final byte, OSC ... BEL/ST) and two-byte escapes, then any
# other C0/C1 control character but newline and tab.
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]|\x9b[0-?]*[ -/]*[@-~]"
)
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<function>.+)$')
_EXCEPTION_LINE = re.compile(r"^(?P<kind>[A-Za-z_][\w.]*(?:\([\w.]+\))?): (?P<message>.*)$")


def strip_escapes(text: str) -> str:
    """Text from elsewhere fit for a terminal and a file: escape sequences and other control
    characters removed (newlines and tabs kept)."""
    return _CONTROLS.sub("", _ESCAPES.sub("", text))


@dataclass(frozen=True)
class RemoteError:
    kind: str  # the exception's type name
    message: str
    where: str | None  # file:line in function, innermost frame (and the package's own, if other)
    traceback: str  # the whole text, escapes removed

    def line(self, limit: int = LINE_LIMIT) -> str:
        """`Type: message (raised at file:line in function)`, on one line, cut at `limit`."""
        text = f"{self.kind}: {self.message}" if self.message else self.kind
        if self.where:
            text = f"{text} (raised at {self.where})"
        text = " ".join(text.split())
        return text if len(text) <= limit else text[: limit - 3] + "..."


def from_exception(exc: BaseException) -> RemoteError:
    """A live exception where it was raised (on the node), with its traceback."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = _where([(f.filename, f.lineno or 0, f.name) for f in frames])
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return RemoteError(type(exc).__name__, strip_escapes(str(exc)), where, strip_escapes(text))


def from_text(text: str, kind: str | None = None, message: str | None = None) -> RemoteError:
    """An error known only as Ray's text of it (a task's or an actor call's failure); `kind`
    and `message` when the cause came across as an object (Ray's `cause`)."""
    clean = strip_escapes(text)
    lines = clean.rstrip().splitlines()
    frames = []
    for line in lines:
        found = _FRAME.match(line)
        if found:
            frames.append((found["file"], int(found["line"]), found["function"].strip()))
    if kind is None:
        kind, message = _last_exception_line(lines)
    return RemoteError(kind, message or "", _where(frames), clean)


def _last_exception_line(lines: list[str]) -> tuple[str, str]:
    """The `Type: message` line a Python traceback ends with; Ray may wrap it as
    `ray::f() (...)` first, so the last such line wins."""
    for line in reversed(lines):
        found = _EXCEPTION_LINE.match(line.strip())
        if found and not line.startswith((" ", "\t")):
            return found["kind"], found["message"]
    last = next((line.strip() for line in reversed(lines) if line.strip()), "")
    return "Error", last


def _where(frames: list[tuple[str, int, str]]) -> str | None:
    """The innermost frame, and the innermost of this package's own when that is another (an
    error raised inside the standard library, called from here)."""
    if not frames:
        return None
    innermost = _frame_text(*frames[-1])
    own = next((f for f in reversed(frames) if _is_own(f[0])), None)
    if own is None or own == frames[-1]:
        return innermost
    return f"{innermost}, called from {_frame_text(*own)}"


def _is_own(filename: str) -> bool:
    return f"/{PACKAGE}/" in filename.replace("\\", "/")


def _frame_text(filename: str, line: int, function: str) -> str:
    return f"{_short(filename)}:{line} in {function}"


def _short(filename: str) -> str:
    """A node's path of the package (under its cache, a digest deep) from the package's name
    on; other files by their last two components."""
    path = filename.replace("\\", "/")
    marker = f"/{PACKAGE}/"
    if marker in path:
        return PACKAGE + "/" + path.rsplit(marker, 1)[1]
    return "/".join(path.rsplit("/", 2)[-2:])
