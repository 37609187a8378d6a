"""The batch manifest: typed records, status transitions, atomic JSON write, tolerant load."""

from __future__ import annotations

import json
import os
import secrets
import threading
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from safeagents_batch import __version__
from safeagents_batch.errors import UsageError
from safeagents_batch.schema import validate_against

MANIFEST_VERSION = 1
MANIFEST_NAME = "manifest.json"
STATUSES = ("pending", "running", "succeeded", "failed", "timed_out", "error", "cancelled")
FINISHED = frozenset({"succeeded", "failed", "timed_out", "error", "cancelled"})


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    delta = datetime.fromisoformat(end) - datetime.fromisoformat(start)
    return round(delta.total_seconds(), 3)


@dataclass(frozen=True)
class Attempt:
    number: int
    status: str
    log_dir: str
    started_at: str | None = None
    ended_at: str | None = None
    duration_seconds: float | None = None
    exit_code: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class RunRecord:
    """One run of the batch; its status, times and exit code are those of the latest attempt."""

    run_id: str
    job: str
    framework: str
    script: str
    script_sha256: str
    image: str
    env: dict[str, str]
    timeout: int
    status: str = "pending"
    exit_code: int | None = None
    started_at: str | None = None
    ended_at: str | None = None
    duration_seconds: float | None = None
    log_dir: str | None = None
    error: str | None = None
    attempts: tuple[Attempt, ...] = ()

    def with_latest(self, attempt: Attempt) -> RunRecord:
        """This record with `attempt` added (or replacing the one of the same number)."""
        others = tuple(a for a in self.attempts if a.number != attempt.number)
        return replace(
            self,
            attempts=(*others, attempt),
            status=attempt.status,
            exit_code=attempt.exit_code,
            started_at=attempt.started_at,
            ended_at=attempt.ended_at,
            duration_seconds=attempt.duration_seconds,
            log_dir=attempt.log_dir,
            error=attempt.error,
        )


@dataclass(frozen=True)
class ImageRecord:
    tag: str
    framework: str
    status: str  # pending | built | cached | failed
    build_seconds: float | None = None
    build_log: str | None = None
    error: str | None = None


@dataclass
class Manifest:
    """The whole manifest. Mutated only through ManifestStore, which writes every change."""

    batch_id: str
    batch_dir: str
    jobs_file: str
    jobs_file_sha256: str
    created_at: str
    runs: dict[str, RunRecord]
    images: dict[str, ImageRecord] = field(default_factory=dict)
    updated_at: str = ""
    finished_at: str | None = None
    state: str = "running"  # running | finished | interrupted
    tool_version: str = __version__

    def summary(self) -> dict[str, int]:
        counts = Counter(r.status for r in self.runs.values())
        return {"total": len(self.runs), **{s: counts.get(s, 0) for s in STATUSES}}

    def to_json(self) -> dict[str, Any]:
        return {
            "manifest_version": MANIFEST_VERSION,
            "tool": {"name": "safeagents-batch", "version": self.tool_version},
            "batch_id": self.batch_id,
            "batch_dir": self.batch_dir,
            "jobs_file": {"path": self.jobs_file, "sha256": self.jobs_file_sha256},
            "state": self.state,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "finished_at": self.finished_at,
            "summary": self.summary(),
            "images": [asdict(i) for i in self.images.values()],
            "runs": [_run_json(r) for r in self.runs.values()],
        }


def _run_json(record: RunRecord) -> dict[str, Any]:
    data = asdict(record)
    data["attempts"] = [asdict(a) for a in record.attempts]
    return data


def manifest_from_json(data: dict[str, Any]) -> Manifest:
    """Inverse of Manifest.to_json for a document that passed the schema."""
    runs = {
        r["run_id"]: RunRecord(**{**r, "attempts": tuple(Attempt(**a) for a in r["attempts"])})
        for r in data["runs"]
    }
    return Manifest(
        batch_id=data["batch_id"],
        batch_dir=data["batch_dir"],
        jobs_file=data["jobs_file"]["path"],
        jobs_file_sha256=data["jobs_file"]["sha256"],
        created_at=data["created_at"],
        runs=runs,
        images={i["tag"]: ImageRecord(**i) for i in data["images"]},
        updated_at=data["updated_at"],
        finished_at=data["finished_at"],
        state=data["state"],
        tool_version=data["tool"]["version"],
    )


def load_manifest(batch_dir: Path) -> Manifest:
    """Read a batch's manifest; a missing or corrupt one is a clear UsageError, never a crash."""
    path = batch_dir / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{batch_dir}: not a batch directory (no {MANIFEST_NAME})") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: unreadable manifest: {exc}") from None
    problems = validate_against("manifest", data)
    if problems:
        raise UsageError(f"{path}: invalid manifest: {problems[0]}")
    return manifest_from_json(data)


def write_json_atomically(path: Path, data: Any) -> None:
    """Temp file in the same directory + fsync + os.replace: readers see old or new, never half."""
    # Not mkstemp: its 0600 would make the manifest the one file of the batch dir that others
    # cannot read. O_EXCL with a random name is as safe, and the umask applies as for logs.
    temp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


class ManifestStore:
    """Thread-safe owner of the manifest: every transition is written to disk before returning."""

    def __init__(self, manifest: Manifest, path: Path) -> None:
        self.manifest = manifest
        self.path = path
        self._lock = threading.Lock()

    def save(self) -> None:
        with self._lock:
            self._write()

    def _write(self) -> None:
        self.manifest.updated_at = now_iso()
        write_json_atomically(self.path, self.manifest.to_json())

    def set_image(self, record: ImageRecord) -> None:
        with self._lock:
            self.manifest.images[record.tag] = record
            self._write()

    def record_attempt(self, run_id: str, attempt: Attempt) -> None:
        with self._lock:
            self.manifest.runs[run_id] = self.manifest.runs[run_id].with_latest(attempt)
            self._write()

    def set_run(self, record: RunRecord) -> None:
        with self._lock:
            self.manifest.runs[record.run_id] = record
            self._write()

    def finish(self, state: str) -> None:
        with self._lock:
            self.manifest.state = state
            self.manifest.finished_at = now_iso()
            self._write()

    def run(self, run_id: str) -> RunRecord:
        with self._lock:
            return self.manifest.runs[run_id]
