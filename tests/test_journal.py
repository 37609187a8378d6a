"""journal and manifest: the append-only journal, the snapshot, and loading a batch (fold).

Real temp dirs, a real child process killed with SIGKILL, and a reader thread that checks the
snapshot on disk while a store writes it. No engine.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
import records
from msgspec import structs
from old_batches import old_document

import safeagents_batch
import safeagents_batch.records.store as store_module
from safeagents_batch.core.clock import now_iso
from safeagents_batch.core.errors import UsageError
from safeagents_batch.jobs.schema import validate_against
from safeagents_batch.records.events import UnstartedEvent
from safeagents_batch.records.journal import JournalWriter, read_events
from safeagents_batch.records.layout import JOURNAL as JOURNAL_NAME
from safeagents_batch.records.layout import MANIFEST as MANIFEST_NAME
from safeagents_batch.records.manifest import (
    JobsFileRecord,
    Manifest,
    decode,
    encode,
    json_schema,
    load_manifest,
)
from safeagents_batch.records.model import Attempt, AttemptOutcome, ImageRecord, Status
from safeagents_batch.records.store import ManifestStore

PATIENCE_SECONDS = 20.0  # a bound on every wait for another thread or process
PACKAGE_ROOT = Path(safeagents_batch.__file__).resolve().parents[1]
IMAGE = ImageRecord(
    tag="safeagents-runtime:plain-0123", framework="plain", status="built", build_seconds=0.5
)


# -- helpers ----------------------------------------------------------------------------


def new_manifest(batch_dir: Path, count: int) -> Manifest:
    runs = {f"r{i}": records.run(f"r{i}") for i in range(count)}
    return Manifest(
        batch_id="b-1",
        batch_dir=str(batch_dir),
        jobs_file=JobsFileRecord(path=str(batch_dir.parent / "jobs.yaml"), sha256="f" * 64),
        created_at=now_iso(),
        runs=runs,
        backend={"backend": "fake", "host": "memory"},
    )


def started(run_id: str, number: int = 1) -> Attempt:
    return Attempt(number=number, log_dir=f"runs/{run_id}/attempt-{number}", started_at=now_iso())


def ended(attempt: Attempt, status: Status, exit_code: int | None = 0) -> Attempt:
    error = None if status == "succeeded" else f"ended {status}"
    outcome = AttemptOutcome(
        status=status,
        started_at=attempt.started_at,
        ended_at=now_iso(),
        exit_code=exit_code,
        error=error,
    )
    return attempt.finished(outcome)


def event(n: int = 0) -> UnstartedEvent:
    """An event for the journal alone: its content marks it (`reason`)."""
    return UnstartedEvent(run_id=f"r{n}", status="cancelled", reason=str(n))


def reasons(path: Path, after_seq: int = 0) -> list[tuple[int, str]]:
    found = []
    for e in read_events(path, after_seq):
        assert isinstance(e, UnstartedEvent)
        found.append((e.seq, e.reason))
    return found


def run_through(store: ManifestStore, run_id: str, *statuses: Status) -> None:
    """One attempt per status, each recorded `running` first, then final."""
    for number, status in enumerate(statuses, start=1):
        attempt = started(run_id, number)
        store.record_attempt(run_id, attempt)
        store.record_attempt(run_id, ended(attempt, status, 0 if status == "succeeded" else 1))


def as_json(manifest: Manifest) -> dict[str, Any]:
    """The manifest as the store writes it, read back as plain JSON."""
    data: dict[str, Any] = json.loads(encode(manifest, indent=False))
    return data


def disk(batch_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((batch_dir / MANIFEST_NAME).read_text("utf-8"))
    return data


def eventually(condition: Callable[[], bool], seconds: float = PATIENCE_SECONDS) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def read_up_to(seen: list[int], seq: int) -> Callable[[], bool]:
    return lambda: bool(seen) and max(seen) >= seq


@pytest.fixture
def batch_dir(tmp_path: Path) -> Path:
    path = tmp_path / "logs" / "b-1"
    path.mkdir(parents=True)
    return path


@pytest.fixture
def no_background_snapshots(monkeypatch: pytest.MonkeyPatch) -> None:
    """The snapshot thread never writes: what is on disk is only what save() wrote."""
    monkeypatch.setattr(store_module, "SNAPSHOT_SECONDS", 3600.0)


# -- the journal alone -------------------------------------------------------------------


def test_events_come_back_in_order_with_increasing_seq(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    writer = JournalWriter(path)
    seqs = [writer.append(event(n)) for n in range(5)]
    writer.close()

    assert seqs == [1, 2, 3, 4, 5]
    assert reasons(path) == [(s, str(n)) for s, n in zip(seqs, range(5), strict=True)]
    assert {json.loads(line)["v"] for line in path.read_bytes().splitlines()} == {2}
    assert len(path.read_bytes().splitlines()) == 5


def test_a_writer_reopened_goes_on_from_the_last_seq(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    first = JournalWriter(path)
    first.append(event(0))
    first.append(event(1))
    first.close()
    second = JournalWriter(path, last_seq=2)
    assert second.append(event(2)) == 3
    second.close()
    assert reasons(path) == [(1, "0"), (2, "1"), (3, "2")]


def test_after_seq_gives_only_the_later_events(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    writer = JournalWriter(path)
    for n in range(6):
        writer.append(event(n))
    writer.close()
    assert [e.seq for e in read_events(path, after_seq=4)] == [5, 6]
    assert [e.seq for e in read_events(path, after_seq=6)] == []
    assert [e.seq for e in read_events(path, after_seq=0)] == [1, 2, 3, 4, 5, 6]


def test_a_missing_journal_has_no_events(tmp_path: Path) -> None:
    assert list(read_events(tmp_path / JOURNAL_NAME)) == []


@pytest.mark.parametrize(
    "torn",
    [b'{"v":1,"seq":3,"event":"x","n"', b'{"v":1,"seq":3,"event":"x"}', b"\0\0\0\0"],
    ids=["half a line", "whole json without newline", "zeros"],
)
def test_a_torn_last_line_is_ignored_and_cut_before_the_next_append(
    tmp_path: Path, torn: bytes
) -> None:
    path = tmp_path / JOURNAL_NAME
    writer = JournalWriter(path)
    writer.append(event(0))
    writer.append(event(1))
    writer.close()
    whole = path.read_bytes()
    with path.open("ab") as handle:
        handle.write(torn)  # a process that died mid-write

    assert [e.seq for e in read_events(path)] == [1, 2]

    again = JournalWriter(path, last_seq=2)
    assert again.append(event(2)) == 3
    again.close()

    assert reasons(path) == [(1, "0"), (2, "1"), (3, "2")]
    content = path.read_bytes()
    assert content.startswith(whole)
    new = content[len(whole) :]  # the torn bytes are gone: one whole line follows
    assert new.count(b"\n") == 1 and new.endswith(b"\n")
    assert json.loads(new)["seq"] == 3


def test_a_torn_journal_of_one_line_is_cut_to_nothing(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    path.write_bytes(b'{"v":1,"seq":1,"ev')
    assert list(read_events(path)) == []
    writer = JournalWriter(path)
    writer.append(event())
    writer.close()
    assert [e.seq for e in read_events(path)] == [1]
    assert path.read_bytes().count(b"\n") == 1


def test_a_torn_line_longer_than_64k_cuts_only_that_line(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    writer = JournalWriter(path)
    writer.append(event(0))
    writer.append(event(1))
    writer.close()
    with path.open("ab") as handle:  # a big event (many dropped artifacts), torn
        handle.write(b'{"v":1,"seq":3,"event":"attempt","pad":"' + b"a" * 70_000)
    assert [e.seq for e in read_events(path)] == [1, 2]

    again = JournalWriter(path, last_seq=2)
    again.append(event(2))
    again.close()

    assert [e.seq for e in read_events(path)] == [1, 2, 3]


def test_a_damaged_line_in_the_middle_is_an_error_naming_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    writer = JournalWriter(path)
    for n in range(3):
        writer.append(event(n))
    writer.close()
    lines = path.read_bytes().splitlines(keepends=True)
    lines[1] = b'{"v":2,"seq":2,"ev\n'
    path.write_bytes(b"".join(lines))

    with pytest.raises(UsageError) as info:
        list(read_events(path))

    assert str(info.value).startswith(f"{path}:2: damaged journal line")


def test_a_damaged_line_after_the_snapshot_offset_is_named_by_its_line_in_the_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / JOURNAL_NAME
    writer = JournalWriter(path)
    writer.append(event(0))
    writer.append(event(1))
    offset = writer.size  # where a snapshot holding seq 2 says its events end
    for n in range(3):
        writer.append(event(2 + n))
    writer.close()
    lines = path.read_bytes().splitlines(keepends=True)
    lines[3] = b"garbage\n"
    path.write_bytes(b"".join(lines))

    with pytest.raises(UsageError) as info:
        list(read_events(path, after_seq=2, offset=offset))

    assert str(info.value).startswith(f"{path}:4: damaged journal line")


def test_reading_from_an_offset_gives_the_same_events_as_from_the_start(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    writer = JournalWriter(path)
    offsets = []
    for n in range(5):
        writer.append(event(n))
        offsets.append(writer.size)
    writer.close()
    assert offsets[-1] == path.stat().st_size
    for seq, offset in enumerate(offsets, start=1):
        assert [e.seq for e in read_events(path, seq, offset)] == list(range(seq + 1, 6))
    # An offset that is not at a line start (a stale or foreign hint) reads from the start.
    assert [e.seq for e in read_events(path, 2, offsets[1] + 3)] == [3, 4, 5]
    assert [e.seq for e in read_events(path, 0, 10**9)] == [1, 2, 3, 4, 5]


def test_a_line_that_is_not_an_object_in_the_middle_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    first = msgspec.json.encode(event(0)).replace(b'"seq":0', b'"seq":1')
    path.write_bytes(first + b"\n[1, 2]\n" + first.replace(b'"seq":1', b'"seq":3') + b"\n")
    with pytest.raises(UsageError, match=rf"^{path}:2: damaged journal line"):
        list(read_events(path))


def test_another_journal_version_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    writer = JournalWriter(path)
    writer.append(event(0))
    writer.close()
    with path.open("a") as handle:
        handle.write('{"v":3,"seq":2,"event":"unstarted"}\n{"v":2,"seq":3}\n')
    with pytest.raises(UsageError) as info:
        list(read_events(path))
    assert str(info.value) == f"{path}:2: journal version 3; this tool reads versions 1 and 2"


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (
            '{"seq":2,"event":"unstarted"}',
            "damaged journal line: Object missing required field `v`",
        ),
        ('{"v":"2","seq":2}', "damaged journal line: Expected `int`, got `str` - at `$.v`"),
        (
            '{"v":2,"seq":2,"event":"unstarted","run_id":"r1","status":"lost","reason":""}',
            "bad journal event: Invalid enum value 'lost' - at `$.status`",
        ),
        (
            '{"v":2,"seq":2,"event":"resumed"}',
            "bad journal event: Invalid value 'resumed' - at `$.event`",
        ),
    ],
    ids=["no version", "version not a number", "a wrong field", "an unknown event"],
)
def test_a_wrong_line_is_an_error_naming_its_line_and_field(
    tmp_path: Path, line: str, why: str
) -> None:
    path = tmp_path / JOURNAL_NAME
    writer = JournalWriter(path)
    writer.append(event(0))
    writer.close()
    with path.open("a") as handle:
        handle.write(line + "\n" + '{"v":2,"seq":3}\n')
    with pytest.raises(UsageError) as info:
        list(read_events(path))
    assert str(info.value) == f"{path}:2: {why}"


def test_appended_events_are_readable_before_close(tmp_path: Path) -> None:
    """Written at once (no buffering in the process): what a concurrent `status` sees."""
    path = tmp_path / JOURNAL_NAME
    writer = JournalWriter(path)
    try:
        writer.append(event(0))
        writer.append(event(1))
        assert reasons(path) == [(1, "0"), (2, "1")]
    finally:
        writer.close()


# -- the store and loading ---------------------------------------------------------------


def same_records(loaded: Manifest, held: Manifest) -> bool:
    """Equal in everything but the journal offset, a reading hint that a fold leaves as the
    snapshot had it (it may lag, never lead)."""
    assert loaded.journal.offset <= held.journal.offset
    no_hint = {"journal": structs.replace(held.journal, offset=0)}
    return structs.replace(loaded, **no_hint) == structs.replace(held, **no_hint)


def drive(store: ManifestStore) -> None:
    """Every kind of transition: an image, attempts (one retried), not started, the end."""
    store.set_image(IMAGE)
    run_through(store, "r0", "succeeded")
    run_through(store, "r1", "failed", "succeeded")
    run_through(store, "r2", "timed_out")
    store.record_attempt("r3", started("r3"))  # still running
    store.mark_not_started("r4", "cancelled", "cancelled before it started")
    store.mark_not_started("r5", "error", "image build failed: fake")


def test_loading_folds_the_journal_into_a_stale_snapshot_and_equals_the_store(
    batch_dir: Path, no_background_snapshots: None
) -> None:
    store = ManifestStore(new_manifest(batch_dir, 7), batch_dir)
    try:
        store.save()
        drive(store)

        snapshot = disk(batch_dir)
        assert snapshot["journal"]["seq"] == 0  # fold does all the work
        assert {r["status"] for r in snapshot["runs"]} == {"pending"}
        loaded = load_manifest(batch_dir)
        assert loaded.runs == store.manifest.runs
        assert loaded.images == store.manifest.images == {IMAGE.tag: IMAGE}
        assert (loaded.state, loaded.journal.seq) == ("running", store.manifest.journal.seq)
        assert same_records(loaded, store.manifest)
        assert loaded.journal.seq == 12
        statuses = {k: r.status for k, r in loaded.runs.items()}
        assert statuses == {
            "r0": "succeeded",
            "r1": "succeeded",
            "r2": "timed_out",
            "r3": "running",
            "r4": "cancelled",
            "r5": "error",
            "r6": "pending",
        }
        assert [a.status for a in loaded.runs["r1"].attempts] == ["failed", "succeeded"]
        assert loaded.summary() == store.summary()
        store.finish("interrupted")
    finally:
        store.close()

    after = load_manifest(batch_dir)
    assert same_records(after, store.manifest)
    assert (after.state, after.finished_at) == ("interrupted", store.manifest.finished_at)
    assert disk(batch_dir)["journal"]["seq"] == after.journal.seq == 13
    assert decode(batch_dir / MANIFEST_NAME, (batch_dir / MANIFEST_NAME).read_bytes()) == after
    assert validate_against("manifest", disk(batch_dir)) == []


def test_a_snapshot_in_the_middle_takes_only_the_later_events(
    batch_dir: Path, no_background_snapshots: None
) -> None:
    with ManifestStore(new_manifest(batch_dir, 4), batch_dir) as store:
        store.save()
        run_through(store, "r0", "failed", "succeeded")
        store.save()
        middle = store.manifest.journal.seq
        run_through(store, "r1", "error")
        store.mark_not_started("r2", "cancelled", "cancelled before it started")

        assert disk(batch_dir)["journal"]["seq"] == middle == 4
        assert same_records(load_manifest(batch_dir), store.manifest)
        assert [e.seq for e in read_events(batch_dir / JOURNAL_NAME, middle)] == [5, 6, 7]


def test_the_store_counts_as_runs_change(batch_dir: Path, no_background_snapshots: None) -> None:
    with ManifestStore(new_manifest(batch_dir, 7), batch_dir) as store:
        store.save()
        drive(store)
        assert (
            store.summary()
            == store.manifest.summary()
            == {
                "total": 7,
                "pending": 1,
                "running": 1,
                "succeeded": 2,
                "failed": 0,
                "timed_out": 1,
                "error": 1,
                "cancelled": 1,
            }
        )


def test_an_old_batch_dir_with_a_manifest_and_no_journal_loads(batch_dir: Path) -> None:
    """As the release before the journal wrote it: no `journal` key, no journal.jsonl."""
    manifest = new_manifest(batch_dir, 3)
    attempt = ended(started("r0"), "succeeded")
    manifest.runs["r0"] = manifest.runs["r0"].with_attempt(attempt)
    manifest.images[IMAGE.tag] = IMAGE
    manifest.state, manifest.finished_at, manifest.updated_at = "finished", now_iso(), now_iso()
    data = old_document(as_json(manifest), batch_dir, 2)
    del data["journal"]
    del data["jobs_file"]["git"]
    for run in data["runs"]:
        for old in run["attempts"]:
            del old["node"]
    (batch_dir / MANIFEST_NAME).write_text(json.dumps(data, indent=2), "utf-8")
    assert not (batch_dir / JOURNAL_NAME).exists()

    loaded = load_manifest(batch_dir)

    assert loaded == manifest
    assert loaded.journal.seq == 0
    # A rerun of it journals from there on, and the result loads again.
    with ManifestStore(loaded, batch_dir) as store:
        store.reopen()
        run_through(store, "r1", "succeeded")
    again = load_manifest(batch_dir)
    assert same_records(again, store.manifest)
    assert again.runs["r1"].status == "succeeded" and again.runs["r0"] == manifest.runs["r0"]
    assert [e.seq for e in read_events(batch_dir / JOURNAL_NAME)] == [1, 2]


@pytest.mark.parametrize("version", [1, 2])
def test_both_manifest_versions_load(batch_dir: Path, version: int) -> None:
    """1: paths absolute where the batch was created; 2: relative to the batch dir. Both:
    outcomes flat in the attempts."""
    manifest = new_manifest(batch_dir, 2)
    manifest.runs["r0"] = manifest.runs["r0"].with_attempt(ended(started("r0"), "failed"))
    manifest.runs["r1"] = manifest.runs["r1"].with_attempt(started("r1"))
    manifest.updated_at = now_iso()
    data = old_document(as_json(manifest), batch_dir, version)
    (batch_dir / MANIFEST_NAME).write_text(json.dumps(data), "utf-8")
    loaded = load_manifest(batch_dir)
    if version == 1:  # as recorded: absolute, found where the batch dir is by `located`
        for run_id in ("r0", "r1"):
            [attempt] = loaded.runs[run_id].attempts
            assert attempt.log_dir == str(batch_dir / f"runs/{run_id}/attempt-1")
            relative = structs.replace(attempt, log_dir=f"runs/{run_id}/attempt-1")
            loaded.runs[run_id] = loaded.runs[run_id].with_attempt(relative)
    assert loaded == manifest


def test_a_manifest_of_today_loads_as_it_was_written(batch_dir: Path) -> None:
    manifest = new_manifest(batch_dir, 3)
    manifest.runs["r0"] = manifest.runs["r0"].with_attempt(ended(started("r0"), "failed"))
    manifest.runs["r1"] = manifest.runs["r1"].not_started(
        "cancelled", "cancelled before it started"
    )
    manifest.images[IMAGE.tag] = IMAGE
    (batch_dir / MANIFEST_NAME).write_text(json.dumps(as_json(manifest)), "utf-8")
    assert load_manifest(batch_dir) == manifest
    assert validate_against("manifest", as_json(manifest)) == []


@pytest.mark.parametrize("version", [4, 0])
def test_a_manifest_of_another_version_is_refused_by_its_version(
    batch_dir: Path, version: int
) -> None:
    """A newer tool's manifest may mean other things by the same fields: refused, named."""
    data = {**as_json(new_manifest(batch_dir, 1)), "manifest_version": version}
    path = batch_dir / MANIFEST_NAME
    path.write_text(json.dumps(data), "utf-8")
    with pytest.raises(UsageError) as info:
        load_manifest(batch_dir)
    assert str(info.value) == (
        f"{path}: manifest version {version!r}; this tool reads versions 1, 2, 3"
    )


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (
            {"manifest_version": "3"},
            "unreadable manifest: Expected `int`, got `str` - at `$.manifest_version`",
        ),
        ({"batch_id": 5}, "invalid manifest: Expected `str`, got `int` - at `$.batch_id`"),
        (
            {"runs": [{"run_id": "r0"}]},
            "invalid manifest: Object missing required field `job` - at `$.runs[0]`",
        ),
    ],
    ids=["version as text", "a wrong type", "a run missing a field"],
)
def test_a_wrong_manifest_is_one_line_naming_the_field(
    batch_dir: Path, change: dict[str, Any], why: str
) -> None:
    data = {**as_json(new_manifest(batch_dir, 1)), **change}
    path = batch_dir / MANIFEST_NAME
    path.write_text(json.dumps(data), "utf-8")
    with pytest.raises(UsageError) as info:
        load_manifest(batch_dir)
    assert str(info.value) == f"{path}: {why}"


def test_a_damaged_journal_makes_loading_a_usage_error(batch_dir: Path) -> None:
    with ManifestStore(new_manifest(batch_dir, 2), batch_dir) as store:
        store.save()
    journal = batch_dir / JOURNAL_NAME
    journal.write_bytes(b'{"v":1,"seq":1,"event":"attempt",\n{"v":1,"seq":2}\n')
    with pytest.raises(UsageError, match=rf"^{journal}:1: damaged journal line"):
        load_manifest(batch_dir)


CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import safeagents_batch.records.store as m
    from safeagents_batch.core.clock import now_iso
    from safeagents_batch.records.manifest import JobsFileRecord, Manifest
    from safeagents_batch.records.model import Attempt, AttemptOutcome, RunRecord

    m.SNAPSHOT_SECONDS = 3600.0  # no snapshot after the first: the journal holds it all
    batch_dir, count = Path(sys.argv[1]), int(sys.argv[2])
    runs = {
        f"r{i}": RunRecord(run_id=f"r{i}", job="job", framework="plain", script="s.py",
                           script_sha256="0" * 64, image="img:t", env={}, timeout=60)
        for i in range(count)
    }
    jobs_file = JobsFileRecord(path="/x/jobs.yaml", sha256="f" * 64)
    manifest = Manifest(batch_id="b-1", batch_dir=str(batch_dir), jobs_file=jobs_file,
                        created_at=now_iso(), runs=runs)
    store = m.ManifestStore(manifest, batch_dir)
    store.save()
    for i in range(count):
        outcome = AttemptOutcome(status="succeeded", started_at=now_iso(), ended_at=now_iso(),
                                 exit_code=0)
        attempt = Attempt(number=1, log_dir=f"runs/r{i}/attempt-1", started_at=now_iso(),
                          outcome=outcome)
        store.record_attempt(f"r{i}", attempt)
    print("ready", flush=True)
    time.sleep(600)
    """
)


def test_a_store_killed_with_sigkill_loses_no_transition(batch_dir: Path) -> None:
    count = 25
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(batch_dir), str(count)],
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert child.stdout is not None
        readable, _, _ = select.select([child.stdout], [], [], PATIENCE_SECONDS)
        assert readable, "the child never said it was ready"
        assert child.stdout.readline() == b"ready\n"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(PATIENCE_SECONDS)
        if child.stdout is not None:
            child.stdout.close()
    assert child.returncode == -signal.SIGKILL

    on_disk = disk(batch_dir)
    assert on_disk["journal"]["seq"] == 0  # the snapshot is from before any transition
    assert {r["status"] for r in on_disk["runs"]} == {"pending"}
    loaded = load_manifest(batch_dir)
    assert loaded.journal.seq == count
    assert {k: r.status for k, r in loaded.runs.items()} == {
        f"r{i}": "succeeded" for i in range(count)
    }
    assert all(len(r.attempts) == 1 for r in loaded.runs.values())


def test_the_snapshot_on_disk_validates_at_every_instant_while_a_store_writes(
    batch_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "SNAPSHOT_SECONDS", 0.001)  # rewrite it all the time
    path = batch_dir / MANIFEST_NAME
    problems: list[str] = []
    seen: list[int] = []
    stop = threading.Event()

    def read_again_and_again() -> None:
        while not stop.is_set():
            try:
                data = json.loads(path.read_text("utf-8"))
            except (OSError, ValueError) as exc:
                problems.append(f"unreadable: {exc}")
                continue
            problems.extend(validate_against("manifest", data))
            seen.append(data["journal"]["seq"])

    store = ManifestStore(new_manifest(batch_dir, 200), batch_dir)
    store.save()
    reader = threading.Thread(target=read_again_and_again, daemon=True)
    reader.start()
    try:
        for i in range(200):
            run_through(store, f"r{i}", "failed" if i % 7 == 0 else "succeeded")
            if i % 40 == 39:
                store.save()
                assert eventually(read_up_to(seen, store.manifest.journal.seq))
        store.finish("finished")
    finally:
        store.close()
        stop.set()
        reader.join(PATIENCE_SECONDS)

    assert problems == []
    assert len(set(seen)) >= 5  # it read many versions, not one
    assert validate_against("manifest", disk(batch_dir)) == []
    assert disk(batch_dir)["journal"]["seq"] == 401
    assert same_records(load_manifest(batch_dir), store.manifest)
    assert [p.name for p in batch_dir.iterdir() if p.name.endswith(".tmp")] == []


def test_the_shipped_manifest_schema_is_made_from_the_records_types() -> None:
    """schemas/manifest.schema.json is what the types say; when they change, regenerate it:
    `safeagents-batch schema manifest > safeagents_batch/schemas/manifest.schema.json`."""
    shipped = json.loads(
        (PACKAGE_ROOT / "safeagents_batch/schemas/manifest.schema.json").read_text()
    )
    assert shipped == json.loads(json.dumps(json_schema()))
