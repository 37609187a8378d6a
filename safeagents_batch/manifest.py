"""The batch manifest: typed records, status transitions, atomic JSON write, tolerant load."""

from __future__ import annotations

import json
import os
import secrets
import threading
from collections import Counter
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from safeagents_batch import __version__
from safeagents_batch.clock import now_iso
from safeagents_batch.errors import UsageError
from safeagents_batch.records import STATUSES, Attempt, ImageRecord, RunRecord, Status
from safeagents_batch.schema import validate_against

MANIFEST_VERSION = 1
MANIFEST_NAME = "manifest.json"
BatchState = Literal["running", "finished", "interrupted"]


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
    state: BatchState = "running"
    tool_version: str = __version__
    backend: dict[str, str] | None = None
    # Jobs files the batch ran from before `rerun --jobs` adopted the current one: like it,
    # they may hold literal secrets and sit among the scripts, so staging leaves them out.
    earlier_jobs_files: tuple[str, ...] = ()

    def summary(self) -> dict[str, int]:
        counts = Counter(r.status for r in self.runs.values())
        return {"total": len(self.runs), **{s: counts.get(s, 0) for s in STATUSES}}

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "manifest_version": MANIFEST_VERSION,
            "tool": {"name": "safeagents-batch", "version": self.tool_version},
            "batch_id": self.batch_id,
            "batch_dir": self.batch_dir,
            "jobs_file": self._jobs_file_json(),
            "state": self.state,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "finished_at": self.finished_at,
            "summary": self.summary(),
            "images": [asdict(i) for i in self.images.values()],
            "runs": [run_json(r) for r in self.runs.values()],
        }
        if self.backend is not None:
            data["backend"] = self.backend
        return data

    def _jobs_file_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"path": self.jobs_file, "sha256": self.jobs_file_sha256}
        if self.earlier_jobs_files:
            data["earlier"] = list(self.earlier_jobs_files)
        return data


def run_json(record: RunRecord) -> dict[str, Any]:
    """A run as the manifest shows it: its own fields, its latest state flat, its attempts."""
    data = {f.name: getattr(record, f.name) for f in fields(record)}
    del data["unstarted"]
    data.update(
        status=record.status,
        exit_code=record.exit_code,
        started_at=record.started_at,
        ended_at=record.ended_at,
        duration_seconds=record.duration_seconds,
        log_dir=record.log_dir,
        error=record.error,
        attempts=[_attempt_json(a) for a in record.attempts],
    )
    return data


def _attempt_json(attempt: Attempt) -> dict[str, Any]:
    data = asdict(attempt)
    data["dropped_artifacts"] = list(attempt.dropped_artifacts)
    return data


def _attempt_from_json(data: dict[str, Any]) -> Attempt:
    return Attempt(**{**data, "dropped_artifacts": tuple(data.get("dropped_artifacts", ()))})


_RUN_FIELDS = ("run_id", "job", "framework", "script", "script_sha256", "image", "env", "timeout")


def run_from_json(data: dict[str, Any]) -> RunRecord:
    attempts = tuple(_attempt_from_json(a) for a in data["attempts"])
    record = RunRecord(**{k: data[k] for k in _RUN_FIELDS}, attempts=attempts)
    if record.status != data["status"] or record.error != data["error"]:
        # Its latest turn started no attempt (cancelled before it started, no image).
        record = record.not_started(data["status"], data["error"] or "")
    return record


def manifest_from_json(data: dict[str, Any]) -> Manifest:
    """Inverse of Manifest.to_json for a document that passed the schema."""
    runs = {r["run_id"]: run_from_json(r) for r in data["runs"]}
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
        backend=data.get("backend"),
        earlier_jobs_files=tuple(data["jobs_file"].get("earlier", ())),
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
    """Thread-safe owner of the manifest: every change goes through a method here and is
    written to disk before it returns."""

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
            if self.manifest.images.get(record.tag) != record:
                self.manifest.images[record.tag] = record
                self._write()

    def add_images(self, records: list[ImageRecord]) -> None:
        """Records images not known yet (as `pending`), in one write."""
        with self._lock:
            for record in records:
                self.manifest.images.setdefault(record.tag, record)
            self._write()

    def record_attempt(self, run_id: str, attempt: Attempt) -> None:
        with self._lock:
            self.manifest.runs[run_id] = self.manifest.runs[run_id].with_attempt(attempt)
            self._write()

    def mark_not_started(self, run_id: str, status: Status, reason: str) -> None:
        with self._lock:
            self.manifest.runs[run_id] = self.manifest.runs[run_id].not_started(status, reason)
            self._write()

    def merge_runs(self, fresh: list[RunRecord]) -> tuple[list[str], list[str]]:
        """Matches a (maybe edited) jobs file's runs by id: known runs keep their attempts and
        take the new definition, new ids join as pending, vanished ids are kept. Returns the
        added and the vanished ids; written with the next change."""
        with self._lock:
            runs = self.manifest.runs
            added = [r.run_id for r in fresh if r.run_id not in runs]
            for record in fresh:
                old = runs.get(record.run_id)
                runs[record.run_id] = (
                    record
                    if old is None
                    else replace(record, attempts=old.attempts, unstarted=old.unstarted)
                )
            wanted = {r.run_id for r in fresh}
            return added, [run_id for run_id in runs if run_id not in wanted]

    def adopt_jobs_file(self, path: str, sha256: str) -> None:
        with self._lock:
            manifest = self.manifest
            if manifest.jobs_file != path and manifest.jobs_file not in manifest.earlier_jobs_files:
                manifest.earlier_jobs_files = (*manifest.earlier_jobs_files, manifest.jobs_file)
            manifest.jobs_file, manifest.jobs_file_sha256 = path, sha256

    def reopen(self) -> None:
        """A rerun starts: the batch is running again."""
        with self._lock:
            self.manifest.state, self.manifest.finished_at = "running", None
            self._write()

    def finish(self, state: BatchState) -> None:
        with self._lock:
            self.manifest.state = state
            self.manifest.finished_at = now_iso()
            self._write()

    def run(self, run_id: str) -> RunRecord:
        with self._lock:
            return self.manifest.runs[run_id]

    def runs(self) -> list[RunRecord]:
        with self._lock:
            return list(self.manifest.runs.values())
