"""The batch manifest: its records, the store every change goes through, and loading.

Every transition is an event appended to the batch's journal (`journal.py`) at once;
`manifest.json` is a snapshot, valid at every instant (atomic replace), rewritten at most about
once a second and at the end. Reading a batch folds the journal's later events into the
snapshot, so the bookkeeping of one transition costs the same whatever the batch's size."""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from safeagents_batch import __version__
from safeagents_batch.clock import now_iso
from safeagents_batch.errors import UsageError
from safeagents_batch.journal import JOURNAL_NAME, JOURNAL_VERSION, JournalWriter, read_events
from safeagents_batch.provenance import GitState
from safeagents_batch.records import STATUSES, Attempt, ImageRecord, RunRecord, Status
from safeagents_batch.schema import validate_against

# 2: paths that point into the batch dir are relative to it (1: absolute, as created). A
# reader of version 1 would take them as relative to its working directory: it refuses 2.
# The journal stays at its version: it is read only under a manifest, whose version rules.
MANIFEST_VERSION = 2
READ_VERSIONS = (1, 2)
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
    journal_seq: int = 0  # the last journal event this snapshot holds
    journal_offset: int = 0  # where that event's line ends in the journal (a reading hint)
    # The git commit, branch and dirty flag of the jobs file's work tree (None: not in git).
    jobs_file_git: GitState | None = None

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
            "images": [i.to_json() for i in self.images.values()],
            "runs": [run_json(r) for r in self.runs.values()],
        }
        if self.backend is not None:
            data["backend"] = self.backend
        data["journal"] = {
            "version": JOURNAL_VERSION,
            "seq": self.journal_seq,
            "offset": self.journal_offset,
        }
        return data

    def _jobs_file_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"path": self.jobs_file, "sha256": self.jobs_file_sha256}
        data["git"] = self.jobs_file_git.to_json() if self.jobs_file_git else None
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
        jobs_file_git=GitState.from_json(data["jobs_file"].get("git")),
        journal_seq=data.get("journal", {}).get("seq", 0),
        journal_offset=data.get("journal", {}).get("offset", 0),
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
    _check_version(path, data)
    problems = validate_against("manifest", _sample(data))
    if problems:
        raise UsageError(f"{path}: invalid manifest: {problems[0]}")
    try:
        manifest = manifest_from_json(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UsageError(f"{path}: invalid manifest: {type(exc).__name__}: {exc}") from None
    journal = batch_dir / JOURNAL_NAME
    fold(manifest, read_events(journal, manifest.journal_seq, manifest.journal_offset))
    return manifest


def _check_version(path: Path, data: Any) -> None:
    """A manifest of a newer tool is refused by its version, before its fields mislead; one
    with no version at all is the schema's to report."""
    if not isinstance(data, dict) or "manifest_version" not in data:
        return
    version = data["manifest_version"]
    if version not in READ_VERSIONS:
        raise UsageError(
            f"{path}: manifest version {version!r}; this tool reads versions "
            + " and ".join(map(str, READ_VERSIONS))
        )


SCHEMA_SAMPLE = 100


def _sample(data: Any) -> Any:
    """The document with at most SCHEMA_SAMPLE of its runs, for the schema check: checking a
    10,000-run manifest whole takes seconds (`status` must answer in well under one). The
    other runs are still read field by field, and a missing or wrong field is an error."""
    runs = data.get("runs") if isinstance(data, dict) else None
    if not isinstance(runs, list) or len(runs) <= SCHEMA_SAMPLE:
        return data
    half = SCHEMA_SAMPLE // 2
    return {**data, "runs": runs[:half] + runs[-half:]}


def fold(manifest: Manifest, events: Iterable[dict[str, Any]]) -> None:
    """Applies journal events, in order, to a snapshot (written by a store, or loaded). An
    event that does not fit the snapshot (an unknown run, a field missing) is a clear error."""
    for event in events:
        try:
            apply_event(manifest, event)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            seq = event.get("seq", "?")
            raise UsageError(f"journal event {seq} does not fit the manifest: {exc!r}") from None


def apply_event(manifest: Manifest, event: dict[str, Any]) -> None:
    kind = event["event"]
    if kind == "attempt":
        run_id = event["run_id"]
        attempt = _attempt_from_json(event["attempt"])
        manifest.runs[run_id] = manifest.runs[run_id].with_attempt(attempt)
    elif kind == "unstarted":
        run_id = event["run_id"]
        manifest.runs[run_id] = manifest.runs[run_id].not_started(event["status"], event["reason"])
    elif kind == "image":
        record = ImageRecord(**event["image"])
        manifest.images[record.tag] = record
    elif kind == "state":
        manifest.state, manifest.finished_at = event["state"], event["finished_at"]
    else:
        raise UsageError(f"unknown journal event {kind!r} (seq {event['seq']})")
    manifest.journal_seq = event["seq"]
    manifest.updated_at = event["at"]


def write_json_atomically(path: Path, data: Any, indent: int | None = 2) -> None:
    """Temp file in the same directory + fsync + os.replace: readers see old or new, never half."""
    # Not mkstemp: its 0600 would make the manifest the one file of the batch dir that others
    # cannot read. O_EXCL with a random name is as safe, and the umask applies as for logs.
    temp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=indent)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


SNAPSHOT_SECONDS = 1.0
HUMAN_SIZED = 100
# A snapshot serializes every run: spaced out so that it takes at most this share of the time.
SNAPSHOT_SHARE = 0.1


class ManifestStore:
    """Thread-safe owner of a batch's records: every change goes through a method here. A
    transition is a journal event, on disk before the method returns; rare changes (runs
    merged, the batch reopened) also write the snapshot at once. Use as a context manager:
    leaving it writes the final snapshot and closes the journal."""

    def __init__(self, manifest: Manifest, path: Path) -> None:
        self.manifest = manifest
        self.path = path
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter(r.status for r in manifest.runs.values())
        self._journal = JournalWriter(path.parent / JOURNAL_NAME, manifest.journal_seq)
        self._changed = False
        self._version = 0  # counts changes: a snapshot never replaces a newer one
        self._written = -1
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._snapshots = threading.Thread(target=self._snapshot_loop, name="snapshot", daemon=True)
        self._snapshots.start()

    def __enter__(self) -> ManifestStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._snapshots.join()
        self.save()
        self._journal.close()

    # -- transitions: one journal event each --------------------------------------------

    def record_attempt(self, run_id: str, attempt: Attempt) -> None:
        with self._lock:
            self._set_run(self.manifest.runs[run_id].with_attempt(attempt))
            self._append({"event": "attempt", "run_id": run_id, "attempt": _attempt_json(attempt)})

    def mark_not_started(self, run_id: str, status: Status, reason: str) -> None:
        with self._lock:
            self._set_run(self.manifest.runs[run_id].not_started(status, reason))
            event = {"event": "unstarted", "run_id": run_id, "status": status, "reason": reason}
            self._append(event)

    def set_image(self, record: ImageRecord) -> None:
        with self._lock:
            if self.manifest.images.get(record.tag) != record:
                self.manifest.images[record.tag] = record
                self._append({"event": "image", "image": asdict(record)})

    def finish(self, state: BatchState) -> None:
        with self._lock:
            self.manifest.state = state
            self.manifest.finished_at = now_iso()
            finished = self.manifest.finished_at
            self._append({"event": "state", "state": state, "finished_at": finished})
        self.save()

    # -- rare changes: the snapshot at once ---------------------------------------------

    def save(self) -> None:
        with self._lock:
            version, snapshot = self._version, self._copy()
        self._write(version, snapshot)

    def add_images(self, records: list[ImageRecord]) -> None:
        """Records images not known yet (as `pending`), in one write."""
        with self._lock:
            for record in records:
                self.manifest.images.setdefault(record.tag, record)
        self.save()

    def merge_runs(self, fresh: list[RunRecord]) -> tuple[list[str], list[str]]:
        """Matches a (maybe edited) jobs file's runs by id: known runs keep their attempts and
        take the new definition, new ids join as pending, vanished ids are kept. Returns the
        added and the vanished ids; written with the next save."""
        with self._lock:
            runs = self.manifest.runs
            added = [r.run_id for r in fresh if r.run_id not in runs]
            for record in fresh:
                old = runs.get(record.run_id)
                merged = (
                    record
                    if old is None
                    else replace(record, attempts=old.attempts, unstarted=old.unstarted)
                )
                self._set_run(merged)
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
        self.save()

    # -- reads ---------------------------------------------------------------------------

    def run(self, run_id: str) -> RunRecord:
        with self._lock:
            return self.manifest.runs[run_id]

    def runs(self) -> list[RunRecord]:
        with self._lock:
            return list(self.manifest.runs.values())

    def summary(self) -> dict[str, int]:
        """Counts per status, kept as runs change: no pass over the runs."""
        with self._lock:
            total = len(self.manifest.runs)
            return {"total": total, **{s: self._counts.get(s, 0) for s in STATUSES}}

    # -- inside ----------------------------------------------------------------------------

    def _set_run(self, record: RunRecord) -> None:
        self._version += 1
        old = self.manifest.runs.get(record.run_id)
        if old is not None:
            self._counts[old.status] -= 1
        self._counts[record.status] += 1
        self.manifest.runs[record.run_id] = record

    def _append(self, event: dict[str, Any]) -> None:
        event["at"] = self.manifest.updated_at = now_iso()
        self.manifest.journal_seq = self._journal.append(event)
        self.manifest.journal_offset = self._journal.size
        self._changed = True

    def _copy(self) -> Manifest:
        """A snapshot's worth of the manifest, taken under the lock: the records are frozen, so
        shallow copies of the dicts suffice and the writing happens outside the lock."""
        self._changed = False
        self._version += 1
        self.manifest.updated_at = self.manifest.updated_at or now_iso()
        return replace(
            self.manifest, runs=dict(self.manifest.runs), images=dict(self.manifest.images)
        )

    def _snapshot_loop(self) -> None:
        pause = SNAPSHOT_SECONDS
        while not self._stop.wait(pause):
            with self._lock:
                if not self._changed:
                    continue
                version, snapshot = self._version, self._copy()
            started = time.monotonic()
            try:
                self._write(version, snapshot)
            except OSError:  # a full disk: the journal holds everything; try again next tick
                with self._lock:
                    self._changed = True
                continue
            pause = max(SNAPSHOT_SECONDS, (time.monotonic() - started) / SNAPSHOT_SHARE)

    def _write(self, version: int, snapshot: Manifest) -> None:
        with self._write_lock:
            if version < self._written:
                return  # a newer snapshot is on disk already
            # Indented for people while small; the C encoder (no indent) is several times faster.
            indent = 2 if len(snapshot.runs) <= HUMAN_SIZED else None
            # The journal first: a snapshot must never name events that a power loss could take.
            self._journal.sync()
            write_json_atomically(self.path, snapshot.to_json(), indent)
            self._written = version
