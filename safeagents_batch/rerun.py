"""Rerun runs of an existing batch dir, in place: after a failure, Ctrl-C or a crash."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import docker

from safeagents_batch.batch import (
    SNAPSHOT_NAME,
    BatchOptions,
    BatchOutcome,
    BatchRunner,
    check_passthrough,
    image_specs,
    new_record,
    read_env_files,
    resolve_env,
    select_runs,
    write_jobs_copies,
)
from safeagents_batch.batchdir import BatchLock, remove_batch_containers
from safeagents_batch.errors import UsageError
from safeagents_batch.jobsfile import load_and_expand
from safeagents_batch.manifest import (
    MANIFEST_NAME,
    STATUSES,
    Manifest,
    ManifestStore,
    RunRecord,
    load_manifest,
    now_iso,
)
from safeagents_batch.model import JobsFile
from safeagents_batch.plan import RunSpec
from safeagents_batch.redaction import REDACTED

INTERRUPTED_REASON = "interrupted: the orchestrator stopped while this attempt ran"


@dataclass(frozen=True)
class RerunChoice:
    """Which runs to run again: by status (default: every status but succeeded) or all."""

    statuses: frozenset[str] = frozenset(set(STATUSES) - {"succeeded"})
    everything: bool = False
    jobs_file: Path | None = None

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
    client: docker.DockerClient,
    choice: RerunChoice = RerunChoice(),
    options: BatchOptions = BatchOptions(),
) -> BatchOutcome:
    if not batch_dir.is_dir():
        raise UsageError(f"{batch_dir}: no such batch directory")
    batch_dir = batch_dir.absolute()
    with BatchLock(batch_dir):
        manifest = load_manifest(batch_dir)
        jobs_path = choice.jobs_file or batch_dir / SNAPSHOT_NAME
        jobs_file, specs = load_and_expand(jobs_path)
        store = ManifestStore(manifest, batch_dir / MANIFEST_NAME)
        _recover_after_crash(client, store)
        env_files = read_env_files(specs)
        images = image_specs(specs)
        _merge_runs(store.manifest, [new_record(s, jobs_file, env_files, images) for s in specs])
        selected = [s for s in specs if choice.wants(manifest.runs[s.run_id].status)]
        selected = select_runs(selected, options.only) if selected and options.only else selected
        check_passthrough(selected, os.environ)
        _check_secrets_kept(selected, jobs_path)
        envs = {s.run_id: resolve_env(s, env_files, os.environ) for s in selected}
        if choice.jobs_file is not None:
            _adopt_jobs_file(batch_dir, store.manifest, jobs_file)
        store.manifest.state, store.manifest.finished_at = "running", None
        store.save()  # the merged runs too: written only once the input proved good
        print(
            f"rerunning {len(selected)} of {len(manifest.runs)} runs in {batch_dir}",
            file=sys.stderr,
        )
        runner = BatchRunner(client, store, batch_dir, selected, envs, images, options)
        return runner.execute(
            [s.run_id for s in selected], workers=options.workers or jobs_file.workers
        )


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


def _recover_after_crash(client: docker.DockerClient, store: ManifestStore) -> None:
    """A previous orchestrator may have died: remove its containers (found by label) and mark
    attempts it left `running` as errors, so they are rerun and the record stays truthful."""
    removed = remove_batch_containers(client, store.manifest.batch_id)
    if removed:
        print(f"removed {len(removed)} stale container(s) of this batch", file=sys.stderr)
    for record in list(store.manifest.runs.values()):
        if record.status == "running" and record.attempts:  # `running` only comes with one
            last = record.attempts[-1]
            store.record_attempt(
                record.run_id,
                replace(
                    last,
                    status="error",
                    ended_at=last.ended_at or now_iso(),
                    error=INTERRUPTED_REASON,
                ),
            )


def _merge_runs(manifest: Manifest, fresh_records: list[RunRecord]) -> None:
    """Match the (maybe edited) jobs file's runs to the manifest by run id: known runs keep
    their attempts, new ids join as pending, vanished ids are reported and kept."""
    wanted = {r.run_id for r in fresh_records}
    for fresh in fresh_records:
        old = manifest.runs.get(fresh.run_id)
        if old is None:
            print(f"new run added: {fresh.run_id}", file=sys.stderr)
            manifest.runs[fresh.run_id] = fresh
        else:
            manifest.runs[fresh.run_id] = replace(
                old,
                framework=fresh.framework,
                script=fresh.script,
                script_sha256=fresh.script_sha256,
                image=fresh.image,
                env=fresh.env,
                timeout=fresh.timeout,
            )
    vanished = [run_id for run_id in manifest.runs if run_id not in wanted]
    if vanished:
        print(
            f"not in the jobs file any more (kept in the manifest, not rerun): "
            f"{', '.join(vanished)}",
            file=sys.stderr,
        )


def _adopt_jobs_file(batch_dir: Path, manifest: Manifest, jobs_file: JobsFile) -> None:
    """`rerun --jobs FILE` makes FILE the batch's jobs file: a later plain `rerun` must not go
    back to the old snapshot, which lacks the new runs and has the fixes undone."""
    write_jobs_copies(batch_dir, jobs_file)
    manifest.jobs_file, manifest.jobs_file_sha256 = str(jobs_file.path), jobs_file.sha256
