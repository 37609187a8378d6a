"""The batch manifest: the whole record of a batch, its document on disk, and reading it back.

`manifest.json` is a snapshot (written by records/store.py); the journal holds every later
transition, and reading a batch folds those into the snapshot. The document is decoded
strictly, whole: a wrong type anywhere is one line naming the file and the field's place.
Versions 1 and 2 (outcomes flat in attempts, no matrix values) are read through
records/legacy.py; this tool writes version 3.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import msgspec
from msgspec import Struct, structs

from safeagents_batch.core.errors import UsageError
from safeagents_batch.core.version import VERSION
from safeagents_batch.records import layout
from safeagents_batch.records.events import (
    JOURNAL_VERSION,
    AnyEvent,
    AttemptEvent,
    BatchState,
    ImageEvent,
    StateEvent,
    UnstartedEvent,
)
from safeagents_batch.records.journal import read_events
from safeagents_batch.records.layout import BatchLayout
from safeagents_batch.records.legacy import RunV1
from safeagents_batch.records.model import STATUSES, ImageRecord, RunRecord
from safeagents_batch.records.provenance import GitState
from safeagents_batch.records.safedir import UnsafePath, inside, read_batch_file

# 3: an attempt embeds its outcome; runs carry their matrix values and why their last turn
# started no attempt. 2: paths into the batch dir are relative to it (1: absolute, as created).
MANIFEST_VERSION = 3
READ_VERSIONS = (1, 2, 3)
TOOL_NAME = "safeagents-batch"
MAX_MANIFEST_BYTES = 2 * 1024**3  # a million runs' manifest is well under a gigabyte


class ToolRecord(Struct, frozen=True, kw_only=True):
    name: str = TOOL_NAME
    version: str = VERSION


class JobsFileRecord(Struct, frozen=True, kw_only=True):
    """The jobs file the batch runs from, and the ones it ran from before `rerun --jobs`
    adopted this one: like it, they may hold literal secrets and sit among the scripts, so
    staging leaves them out. `git`: its work tree when the batch started (None: not in git)."""

    path: str
    sha256: str
    git: GitState | None = None
    earlier: tuple[str, ...] = ()
    # This user's seal of the batch's jobs.yaml as the tool wrote it (records/trust.py).
    snapshot_seal: str | None = None


class JournalMark(Struct, frozen=True, kw_only=True):
    """The last journal event a snapshot holds, and where its line ends (a reading hint).
    `version`: of the events this tool appends (each line names its own; older ones are
    read too)."""

    version: int = JOURNAL_VERSION
    seq: int = 0
    offset: int = 0


class ManifestHead(Struct, kw_only=True):
    """What the manifest in memory and its document share."""

    tool: ToolRecord = ToolRecord()
    batch_id: str
    batch_dir: str  # where it was created (informational: it may have moved since)
    jobs_file: JobsFileRecord
    state: BatchState = "running"
    created_at: str
    updated_at: str = ""
    finished_at: str | None = None
    backend: dict[str, str] | None = None
    journal: JournalMark = JournalMark()


class Manifest(ManifestHead, kw_only=True):
    """The whole manifest in memory, runs and images by id. Changed only through the
    ManifestStore, which writes every change."""

    runs: dict[str, RunRecord]
    images: dict[str, ImageRecord] = {}

    def summary(self) -> dict[str, int]:
        counts = Counter(r.status for r in self.runs.values())
        return {"total": len(self.runs), **{s: counts.get(s, 0) for s in STATUSES}}


class ManifestDoc(ManifestHead, kw_only=True):
    """manifest.json as written: runs and images as lists, and the summary of the runs."""

    manifest_version: int = MANIFEST_VERSION
    summary: dict[str, int]
    images: list[ImageRecord]
    runs: list[RunRecord]


class ManifestDocV1(ManifestDoc, kw_only=True):
    """manifest.json of versions 1 and 2."""

    runs: list[RunV1]  # type: ignore[assignment]


class _Version(Struct):
    manifest_version: int


_HEAD_FIELDS = tuple(f.name for f in structs.fields(ManifestHead))
_DECODERS: dict[int, msgspec.json.Decoder[Any]] = {
    1: msgspec.json.Decoder(ManifestDocV1),
    2: msgspec.json.Decoder(ManifestDocV1),
    3: msgspec.json.Decoder(ManifestDoc),
}
_ENCODER = msgspec.json.Encoder()


def json_schema() -> dict[str, Any]:
    """The JSON Schema of manifest.json (version 3), made from the types themselves: what
    `safeagents-batch schema manifest` prints and schemas/manifest.schema.json holds."""
    schema = msgspec.json.schema(ManifestDoc)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://safeagents-batch.dev/schemas/manifest.schema.json",
        "title": f"safeagents-batch manifest, version {MANIFEST_VERSION}",
        **schema,
    }


def document(manifest: Manifest) -> ManifestDoc:
    head = {name: getattr(manifest, name) for name in _HEAD_FIELDS}
    return ManifestDoc(
        **head,
        summary=manifest.summary(),
        images=list(manifest.images.values()),
        runs=list(manifest.runs.values()),
    )


def from_document(doc: ManifestDoc) -> Manifest:
    head = {name: getattr(doc, name) for name in _HEAD_FIELDS}
    head["journal"] = structs.replace(doc.journal, version=JOURNAL_VERSION)
    runs = [r.today() if isinstance(r, RunV1) else r for r in doc.runs]
    return Manifest(**head, runs={r.run_id: r for r in runs}, images={i.tag: i for i in doc.images})


def encode(manifest: Manifest, *, indent: bool) -> bytes:
    """The document's bytes; indented for people while small (the compact one is faster)."""
    data = _ENCODER.encode(document(manifest))
    return msgspec.json.format(data, indent=2) + b"\n" if indent else data + b"\n"


def decode(path: Path, data: bytes) -> Manifest:
    """The manifest in `data` (read from `path`); a clear UsageError if it is not one."""
    try:
        version = msgspec.json.decode(data, type=_Version).manifest_version
    except msgspec.DecodeError as exc:
        raise UsageError(f"{path}: unreadable manifest: {exc}") from None
    if version not in _DECODERS:
        raise UsageError(
            f"{path}: manifest version {version!r}; this tool reads versions "
            + ", ".join(map(str, READ_VERSIONS))
        )
    try:
        doc = _DECODERS[version].decode(data)
    except msgspec.DecodeError as exc:
        raise UsageError(f"{path}: invalid manifest: {exc}") from None
    for field, recorded in _recorded_paths(doc):
        try:
            inside(recorded, doc.batch_dir)
        except UnsafePath as exc:
            raise UsageError(f"{path}: invalid manifest: {exc} - at `{field}`") from None
    return from_document(doc)


def _recorded_paths(doc: ManifestDoc) -> Iterator[tuple[str, str]]:
    """(field, path) of every path the document records into the batch dir."""
    for i, image in enumerate(doc.images):
        if image.build_log is not None:
            yield f"$.images[{i}].build_log", image.build_log
    for i, run in enumerate(doc.runs):
        for j, attempt in enumerate(run.attempts):
            yield f"$.runs[{i}].attempts[{j}].log_dir", attempt.log_dir


def load_manifest(batch_dir: Path) -> Manifest:
    """A batch's manifest with its journal's later events folded in; a missing, corrupt or
    planted one (a link, a FIFO, a device) is a clear UsageError, never a crash or a hang."""
    where = BatchLayout(batch_dir)
    missing = f"{batch_dir}: not a batch directory (no {layout.MANIFEST})"
    data = read_batch_file(batch_dir, layout.MANIFEST, MAX_MANIFEST_BYTES, missing=missing)
    manifest = decode(where.manifest, data)
    fold(manifest, read_events(where.journal, manifest.journal.seq, manifest.journal.offset))
    return manifest


def fold(manifest: Manifest, events: Iterable[AnyEvent]) -> None:
    """Applies journal events, in order, to a snapshot (written by a store, or loaded). An
    event that does not fit the snapshot (an unknown run) is a clear error."""
    for event in events:
        try:
            apply_event(manifest, event)
        except KeyError as exc:
            raise UsageError(
                f"journal event {event.seq} does not fit the manifest: no run {exc}"
            ) from None
        except UnsafePath as exc:
            raise UsageError(f"journal event {event.seq}: {exc}") from None


def apply_event(manifest: Manifest, event: AnyEvent) -> None:
    if isinstance(event, AttemptEvent):
        inside(event.attempt.log_dir, manifest.batch_dir)  # UnsafePath: not a batch's record
        manifest.runs[event.run_id] = manifest.runs[event.run_id].with_attempt(event.attempt)
    elif isinstance(event, UnstartedEvent):
        run = manifest.runs[event.run_id]
        manifest.runs[event.run_id] = run.not_started(event.status, event.reason)
    elif isinstance(event, ImageEvent):
        manifest.images[event.image.tag] = event.image
    elif isinstance(event, StateEvent):
        manifest.state, manifest.finished_at = event.state, event.finished_at
    manifest.journal = structs.replace(manifest.journal, seq=event.seq)
    manifest.updated_at = event.at
