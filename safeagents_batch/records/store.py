"""The ManifestStore: the one owner of a running batch's records. Every transition is an event
appended to the journal at once; `manifest.json` is a snapshot, valid at every instant (atomic
replace), rewritten at most about once a second and at the end, so the bookkeeping of one
transition costs the same whatever the batch's size."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

from msgspec import structs

from safeagents_batch.core.clock import now_iso
from safeagents_batch.records import layout
from safeagents_batch.records.events import (
    AttemptEvent,
    BatchState,
    Event,
    ImageEvent,
    StateEvent,
    UnstartedEvent,
)
from safeagents_batch.records.journal import JournalWriter
from safeagents_batch.records.layout import BatchLayout
from safeagents_batch.records.manifest import Manifest, encode
from safeagents_batch.records.model import STATUSES, Attempt, ImageRecord, RunRecord, Status
from safeagents_batch.records.safedir import SafeDir

SNAPSHOT_SECONDS = 1.0
HUMAN_SIZED = 100
# A snapshot serializes every run: spaced out so that it takes at most this share of the time.
SNAPSHOT_SHARE = 0.1


class ManifestStore:
    """Thread-safe owner of a batch's records: every change goes through a method here. A
    transition is a journal event, on disk before the method returns; rare changes (runs
    merged, the batch reopened) also write the snapshot at once. Use as a context manager:
    leaving it writes the final snapshot and closes the journal."""

    def __init__(self, manifest: Manifest, batch_dir: Path) -> None:
        self.manifest = manifest
        self.layout = BatchLayout(batch_dir)
        self.safe = SafeDir(batch_dir)  # every open below the batch dir goes through it
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter(r.status for r in manifest.runs.values())
        try:
            self._journal = JournalWriter(self.layout.journal, manifest.journal.seq)
        except BaseException:  # a link or FIFO planted at the journal: nothing stays open
            self.safe.close()
            raise
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
        try:
            self.save()
            self._journal.close()
        finally:
            self.safe.close()

    # -- transitions: one journal event each --------------------------------------------

    def record_attempt(self, run_id: str, attempt: Attempt) -> None:
        with self._lock:
            self._set_run(self.manifest.runs[run_id].with_attempt(attempt))
            self._append(AttemptEvent(run_id=run_id, attempt=attempt))

    def mark_not_started(self, run_id: str, status: Status, reason: str) -> None:
        with self._lock:
            self._set_run(self.manifest.runs[run_id].not_started(status, reason))
            self._append(UnstartedEvent(run_id=run_id, status=status, reason=reason))

    def set_image(self, record: ImageRecord) -> None:
        with self._lock:
            if self.manifest.images.get(record.tag) != record:
                self.manifest.images[record.tag] = record
                self._append(ImageEvent(image=record))

    def finish(self, state: BatchState) -> None:
        with self._lock:
            self.manifest.state = state
            self.manifest.finished_at = now_iso()
            finished = self.manifest.finished_at
            self._append(StateEvent(state=state, finished_at=finished))
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
                    else structs.replace(record, attempts=old.attempts, unstarted=old.unstarted)
                )
                self._set_run(merged)
            wanted = {r.run_id for r in fresh}
            return added, [run_id for run_id in runs if run_id not in wanted]

    def adopt_jobs_file(self, path: str, sha256: str, snapshot_seal: str) -> None:
        """FILE (`rerun --jobs FILE`) is now the batch's jobs file, its snapshot sealed."""
        with self._lock:
            old = self.manifest.jobs_file
            earlier = old.earlier
            if old.path != path and old.path not in earlier:
                earlier = (*earlier, old.path)
            self.manifest.jobs_file = structs.replace(
                old, path=path, sha256=sha256, earlier=earlier, snapshot_seal=snapshot_seal
            )

    def trust_snapshot(self, snapshot_seal: str) -> None:
        """The user looked at the batch's jobs.yaml (`rerun --trust-batch-dir`): it is sealed
        as theirs, and later reruns take it without asking."""
        with self._lock:
            old = self.manifest.jobs_file
            self.manifest.jobs_file = structs.replace(old, snapshot_seal=snapshot_seal)

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

    def _append(self, event: Event) -> None:
        event.at = self.manifest.updated_at = now_iso()
        seq = self._journal.append(event)
        self.manifest.journal = structs.replace(
            self.manifest.journal, seq=seq, offset=self._journal.size
        )
        self._changed = True

    def _copy(self) -> Manifest:
        """A snapshot's worth of the manifest, taken under the lock: the records are frozen, so
        shallow copies of the dicts suffice and the writing happens outside the lock."""
        self._changed = False
        self._version += 1
        self.manifest.updated_at = self.manifest.updated_at or now_iso()
        return structs.replace(
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
            # Indented for people while small; compact (faster) for big batches.
            data = encode(snapshot, indent=len(snapshot.runs) <= HUMAN_SIZED)
            # The journal first: a snapshot must never name events that a power loss could take.
            self._journal.sync()
            self.safe.write(layout.MANIFEST, data, sync=True)
            self._written = version
