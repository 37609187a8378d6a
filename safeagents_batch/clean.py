"""`clean`: what the tool left on an engine (labelled containers, images), and its removal.
Engine-agnostic: a backend that can clean lists leftovers and removes them one by one."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from safeagents_batch import labels


@dataclass(frozen=True)
class Leftover:
    kind: Literal["container", "image"]
    ref: str  # what the engine removes by (an id)
    name: str  # what the user reads
    size_bytes: int = 0
    kept_because: str | None = None
    tags: tuple[str, ...] = ()  # an image's tags: it is removed by them, not by its id


class Cleanable(Protocol):
    def leftover_containers(self) -> list[Leftover]: ...

    def tool_images(
        self, keep_tags: set[str], repositories: set[str] | None = None
    ) -> list[Leftover]: ...

    def remove_leftover(self, item: Leftover) -> str | None:
        """Removes one item; returns the engine's reason when it refuses (e.g. image in use)."""
        ...


@dataclass(frozen=True)
class CleanResult:
    lines: list[str]
    removed: int
    freed_bytes: int


def clean(backend: Cleanable, items: list[Leftover], *, dry_run: bool) -> CleanResult:
    verb = "would remove" if dry_run else "removed"
    lines: list[str] = []
    removed = freed = 0
    for item in items:
        failure = item.kept_because or (None if dry_run else backend.remove_leftover(item))
        if failure:
            lines.append(f"kept {item.kind} {item.name}: {failure}")
            continue
        size = f" ({human_size(item.size_bytes)})" if item.size_bytes else ""
        lines.append(f"{verb} {item.kind} {item.name}{size}")
        removed += 1
        freed += item.size_bytes
    lines.append(f"{verb} {removed} item(s), {human_size(freed)} of images")
    return CleanResult(lines, removed, freed)


def still_running_because(container_labels: Mapping[str, str]) -> str | None:
    """Why a labelled container is not a leftover: its orchestrator still runs on this host."""
    pid = container_labels.get(labels.PID, "")
    if container_labels.get(labels.HOST) != socket.gethostname() or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # the process exists; it belongs to another user
    return f"its batch is still running (pid {pid})"


def human_size(size: float) -> str:
    for unit in ("B", "kB", "MB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"
