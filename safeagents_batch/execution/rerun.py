"""Rerun runs of an existing batch dir, in place: after a failure, Ctrl-C or a crash."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from safeagents_batch.backends.base import Backend, Sink
from safeagents_batch.core.clock import now_iso
from safeagents_batch.core.errors import UsageError
from safeagents_batch.execution.batch import BatchOptions, BatchOutcome, BatchRunner
from safeagents_batch.execution.executor import interrupt_handling
from safeagents_batch.execution.prepare import (
    new_record,
    prepare_work,
    read_inputs,
    select_runs,
    write_jobs_copies,
)
from safeagents_batch.execution.reporting import Reporter
from safeagents_batch.execution.sink import LocalSink
from safeagents_batch.jobs.load import MAX_JOBS_FILE_BYTES, load_and_expand
from safeagents_batch.jobs.model import DEFAULT_ARTIFACT_FILES, DEFAULT_ARTIFACT_LIMIT
from safeagents_batch.jobs.plan import RunSpec
from safeagents_batch.jobs.secrets import REDACTED
from safeagents_batch.records import layout
from safeagents_batch.records.layout import BatchLayout
from safeagents_batch.records.lock import BatchLock
from safeagents_batch.records.manifest import load_manifest
from safeagents_batch.records.model import STATUSES, Attempt, RunRecord
from safeagents_batch.records.safedir import read_batch_file
from safeagents_batch.records.store import ManifestStore
from safeagents_batch.records.trust import owned_by_me, seal, sealed

DEFAULT_LIMITS = (DEFAULT_ARTIFACT_LIMIT, DEFAULT_ARTIFACT_FILES)
INTERRUPTED_REASON = "interrupted: the orchestrator stopped while this attempt ran"


@dataclass(frozen=True)
class RerunChoice:
    """Which runs to run again: by status (default: every status but succeeded) or all."""

    statuses: frozenset[str] = frozenset(set(STATUSES) - {"succeeded"})
    everything: bool = False
    jobs_file: Path | None = None
    # The user looked at a batch dir this tool did not write (or not as it is now): run it.
    trust: bool = False

    def wants(self, status: str) -> bool:
        return self.everything or status in self.statuses


def parse_statuses(text: str) -> frozenset[str]:
    chosen = frozenset(s.strip() for s in text.split(",") if s.strip())
    unknown = sorted(chosen - set(STATUSES))
    if unknown or not chosen:
        raise UsageError(
            f"--status takes a comma-separated list of: {', '.join(STATUSES)}"
            + (f" (not: {', '.join(unknown)})" if unknown else "")
        )
    return chosen


def rerun_batch(
    batch_dir: Path,
    backend: Backend,
    reporter: Reporter,
    choice: RerunChoice = RerunChoice(),
    options: BatchOptions = BatchOptions(),
) -> BatchOutcome:
    """Runs the chosen runs of `batch_dir` again, in place, with the code as it is now."""
    if not batch_dir.is_dir():
        raise UsageError(f"{batch_dir}: no such batch directory")
    batch_dir = batch_dir.absolute()
    _check_owner(batch_dir, choice)
    with BatchLock(batch_dir), _store(batch_dir) as store:
        jobs_path = choice.jobs_file or BatchLayout(batch_dir).jobs_snapshot
        snapshot = None if choice.jobs_file else _snapshot(batch_dir, store, choice)
        jobs_file, specs = load_and_expand(jobs_path, snapshot)
        _recover_after_crash(backend, store, reporter, {s.run_id: s for s in specs})
        inputs = read_inputs(specs)
        known = store.manifest.runs
        # A run id new to the batch is pending; the merge waits until the input proved good.
        selected = [
            s
            for s in specs
            if choice.wants(known[s.run_id].status if s.run_id in known else "pending")
        ]
        selected = select_runs(selected, options.only) if selected and options.only else selected
        _check_secrets_kept(selected, jobs_path)
        # The jobs files the batch ran from may sit among the scripts too.
        manifest = store.manifest
        ran_from = [Path(p) for p in (manifest.jobs_file.path, *manifest.jobs_file.earlier)]
        work = prepare_work(selected, inputs, batch_dir, jobs_file, *ran_from)
        _merge(store, [new_record(s, jobs_file, inputs, os.environ) for s in specs], reporter)
        if choice.jobs_file is not None:
            # FILE becomes the batch's jobs file: a later plain `rerun` must not go back to the
            # old snapshot, which lacks the new runs and has the fixes undone.
            snapshot_seal = write_jobs_copies(batch_dir, jobs_file)
            store.adopt_jobs_file(str(jobs_file.path), jobs_file.sha256, snapshot_seal)
        store.reopen()  # the merged runs too: written only once the input proved good
        reporter.notice(f"rerunning {len(selected)} of {len(store.runs())} runs in {batch_dir}")
        runner = BatchRunner(backend, store, batch_dir, work, reporter, options)
        return runner.execute(workers=options.workers or jobs_file.workers)


def _store(batch_dir: Path) -> ManifestStore:
    return ManifestStore(load_manifest(batch_dir), batch_dir)


TRUST_HINT = (
    "a batch dir runs what its jobs.yaml says (host variables, ~/.azure, the network, root): "
    "look at it, then rerun with --trust-batch-dir, or give your own jobs file with --jobs FILE"
)


def _check_owner(batch_dir: Path, choice: RerunChoice) -> None:
    """Like git's safe.directory: another user's batch dir is not rerun unasked."""
    if not choice.trust and not owned_by_me(batch_dir):
        owner = batch_dir.stat().st_uid
        raise UsageError(
            f"{batch_dir} belongs to another user (uid {owner}), and a rerun runs what its "
            "jobs.yaml says and writes into it: look at it, then rerun with --trust-batch-dir"
        )


def _snapshot(batch_dir: Path, store: ManifestStore, choice: RerunChoice) -> bytes:
    """The batch's jobs.yaml, read as a regular file (never through a link), and only as this
    tool last wrote it for this user (its seal), unless the user trusts it: then it is sealed
    as theirs from now on."""
    where = BatchLayout(batch_dir).jobs_snapshot
    missing = f"{where}: missing; rerun with --jobs FILE"
    data = read_batch_file(batch_dir, layout.JOBS_SNAPSHOT, MAX_JOBS_FILE_BYTES, missing=missing)
    if choice.trust:
        store.trust_snapshot(seal(data))
    elif not sealed(data, store.manifest.jobs_file.snapshot_seal):
        raise UsageError(
            f"{where} is not as this tool wrote it for you (edited, or received); {TRUST_HINT}"
        )
    return data


def _check_secrets_kept(specs: list[RunSpec], jobs_path: Path) -> None:
    """The batch's snapshot holds "<redacted>" where the jobs file had a literal secret value:
    a rerun with that text in its place would quietly run something else."""
    redacted = sorted(
        {
            f"jobs[{s.job.index}].env.{name}"
            for s in specs
            for name, value in s.literal_env.items()
            if value == REDACTED
        }
    )
    if redacted:
        raise UsageError(
            f"{jobs_path} has redacted secret values ({', '.join(redacted)}): a "
            "batch dir keeps no literal secrets; rerun with --jobs <the original "
            "jobs file>, or move them to env_passthrough or env_file"
        )


def _recover_after_crash(
    backend: Backend, store: ManifestStore, reporter: Reporter, specs: dict[str, RunSpec]
) -> None:
    """A previous orchestrator may have died. An attempt it left `running` that the backend
    can still see (a Slurm job, which runs on without its driver) is followed to its end, or
    its end read, and recorded as it ended; the others are closed as errors, so they are
    rerun and the record stays truthful. Then its containers (found by label) are removed.
    Ctrl-C while an attempt is followed cancels it (recorded so) and ends the rerun there."""
    cancel = threading.Event()
    with interrupt_handling(cancel, reporter):
        _fold_running(backend, store, reporter, specs, cancel)
    if cancel.is_set():
        raise KeyboardInterrupt
    removed = backend.sweep(store.manifest.batch_id)
    if removed:
        reporter.notice(f"removed {removed} stale container(s) of this batch")


def _fold_running(
    backend: Backend,
    store: ManifestStore,
    reporter: Reporter,
    specs: dict[str, RunSpec],
    cancel: threading.Event,
) -> None:
    for record in store.runs():
        last = record.latest
        if record.status != "running" or last is None:
            continue
        folded = _reattach(backend, store, last, specs.get(record.run_id), cancel)
        if folded is not None:
            store.record_attempt(record.run_id, folded)
            status = folded.outcome.status if folded.outcome else "?"
            reporter.notice(f"{record.run_id}: attempt {last.number} ended {status} meanwhile")
            continue
        # When it really ended is unknown: the recovery is the first moment known to be after.
        closed = last.closed_as_error(INTERRUPTED_REASON, last.ended_at or now_iso())
        store.record_attempt(record.run_id, closed)


def _reattach(
    backend: Backend,
    store: ManifestStore,
    attempt: Attempt,
    spec: RunSpec | None,
    cancel: threading.Event,
) -> Attempt | None:
    """The attempt as the backend still sees it, its logs written afresh into its dir (what
    the dead driver wrote there is moved aside); None when the backend knows nothing of it."""
    batch_dir = store.layout.root
    run_id = Path(attempt.log_dir).parent.name
    job = spec.job if spec is not None else None
    limits = (job.max_artifacts_size, job.max_artifacts_files) if job else DEFAULT_LIMITS
    opened: list[LocalSink] = []

    def open_sink() -> Sink:
        dir_fd = store.safe.fresh_directory(attempt.log_dir)
        log_dir = batch_dir / attempt.log_dir
        opened.append(LocalSink(log_dir, limits[0], file_limit=limits[1], dir_fd=dir_fd))
        return opened[-1]

    try:
        outcome = backend.reattach(batch_dir, run_id, attempt.number, open_sink, cancel)
    finally:
        for sink in opened:
            sink.close()
    dropped = tuple(opened[-1].dropped) if opened else ()
    return attempt.finished(outcome, dropped) if outcome is not None else None


def _merge(store: ManifestStore, fresh: list[RunRecord], reporter: Reporter) -> None:
    added, vanished = store.merge_runs(fresh)
    for run_id in added:
        reporter.notice(f"new run added: {run_id}")
    if vanished:
        reporter.notice(
            "not in the jobs file any more (kept in the manifest, not rerun): "
            + ", ".join(vanished)
        )
