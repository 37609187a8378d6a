"""Library entry point for running a batch on a backend; `rerun.py` runs one again. Both go
through one preparation path (execution/prepare.py) and one BatchRunner."""

from __future__ import annotations

import os
import shutil
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path

from safeagents_batch.backends.base import AttemptRequest, Backend
from safeagents_batch.core.clock import now_iso
from safeagents_batch.core.errors import (
    EXIT_ENGINE_UNAVAILABLE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RUNS_FAILED,
    one_line,
)
from safeagents_batch.core.once import OncePerKey
from safeagents_batch.execution.budget import Budget, cost_left, pool_pace
from safeagents_batch.execution.executor import (
    DEFAULT_ENGINE_WAIT,
    EngineGate,
    interrupt_handling,
    run_pool,
)
from safeagents_batch.execution.prepare import (
    Work,
    check_passthrough,
    new_batch_id,
    new_record,
    pending_images,
    prepare_work,
    read_inputs,
    real_path,
    script_dir,
    select_runs,
    write_jobs_copies,
)
from safeagents_batch.execution.reporting import Reporter
from safeagents_batch.execution.sink import LocalSink
from safeagents_batch.jobs.model import JobsFile
from safeagents_batch.jobs.plan import RunSpec
from safeagents_batch.records.layout import BatchLayout, ignore_in_git
from safeagents_batch.records.lock import BatchLock
from safeagents_batch.records.manifest import JobsFileRecord, Manifest
from safeagents_batch.records.model import (
    Attempt,
    AttemptOutcome,
    ImageRecord,
    RunRecord,
    recorded_path,
)
from safeagents_batch.records.store import ManifestStore
from safeagents_batch.staging.code import StagedCode
from safeagents_batch.staging.images import ImageSpec

MAX_BACKOFF_SECONDS = 30.0


@dataclass(frozen=True)
class BatchOptions:
    workers: int | None = None
    output_dir: Path | None = None
    only: str | None = None
    rebuild: bool = False
    engine_wait: float = DEFAULT_ENGINE_WAIT
    batch_id: str | None = None  # given by `run --detach`, which announced the batch dir


@dataclass(frozen=True)
class BatchOutcome:
    batch_dir: Path
    summary: dict[str, int]
    interrupted: bool
    engine_gone: bool = False
    budget_spent: str | None = None  # why runs were left pending: the batch's cost limit

    @property
    def exit_code(self) -> int:
        if self.engine_gone:
            return EXIT_ENGINE_UNAVAILABLE
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_OK if self.summary["succeeded"] == self.summary["total"] else EXIT_RUNS_FAILED


# -- run ------------------------------------------------------------------------------


def run_batch(
    jobs_file: JobsFile,
    specs: list[RunSpec],
    backend: Backend,
    reporter: Reporter,
    options: BatchOptions = BatchOptions(),
) -> BatchOutcome:
    """Creates the batch dir, then runs every spec; nothing is left behind if input is bad."""
    specs = select_runs(specs, options.only)
    check_passthrough(specs, os.environ)
    inputs = read_inputs(specs)
    runs = {s.run_id: new_record(s, jobs_file, inputs, os.environ) for s in specs}
    batch_id = options.batch_id or new_batch_id(jobs_file.name)
    output_dir = (options.output_dir or jobs_file.output_dir).absolute()
    made_output_dir = not output_dir.exists()
    batch_dir = output_dir / batch_id
    batch_dir.mkdir(parents=True)
    try:
        work = prepare_work(specs, inputs, batch_dir, jobs_file)
    except BaseException:
        # Ours alone, just made: bad code input leaves no batch, and no empty output dir.
        shutil.rmtree(batch_dir)
        if made_output_dir:
            output_dir.rmdir()
        raise
    if made_output_dir:
        ignore_in_git(output_dir)
    snapshot_seal = write_jobs_copies(batch_dir, jobs_file)
    manifest = Manifest(
        batch_id=batch_id,
        batch_dir=str(batch_dir),
        jobs_file=JobsFileRecord(
            path=str(jobs_file.path),
            sha256=jobs_file.sha256,
            git=work.git,
            snapshot_seal=snapshot_seal,
        ),
        created_at=now_iso(),
        runs=runs,
        images=pending_images(work),
        backend=backend.where(),
    )
    with BatchLock(batch_dir), ManifestStore(manifest, batch_dir) as store:
        store.save()
        runner = BatchRunner(backend, store, batch_dir, work, reporter, options)
        return runner.execute(workers=options.workers or jobs_file.workers)


class BatchRunner:
    """Runs the prepared work of one batch dir on a backend; shared by `run` and `rerun`."""

    def __init__(
        self,
        backend: Backend,
        store: ManifestStore,
        batch_dir: Path,
        work: Work,
        reporter: Reporter,
        options: BatchOptions = BatchOptions(),
    ) -> None:
        self.backend = backend
        self.store = store
        self.batch_dir = batch_dir
        self.work = work
        self.reporter = reporter
        self.options = options
        self.by_id = {s.run_id: s for s in work.specs}
        self.cancel = threading.Event()
        self.gate = EngineGate(backend.available, reporter, self.cancel, options.engine_wait)
        # Concurrent asks for one image share one ensure, whose outcome stands for the batch.
        self.images: OncePerKey[str, ImageRecord] = OncePerKey()
        self.azure_dir = Path.home() / ".azure"
        self._azure_warned = False
        self.budget = Budget(work.cost_limit, store.manifest.runs.values())

    def execute(self, *, workers: int) -> BatchOutcome:
        new_images = pending_images(self.work)
        if new_images.keys() - self.store.manifest.images.keys():
            self.store.add_images(list(new_images.values()))
        run_ids = [s.run_id for s in self.work.specs]
        self.reporter.started(self.batch_dir)
        # The handlers stay until the manifest is final: a second Ctrl-C during cleanup must
        # not turn into a KeyboardInterrupt that leaves the batch `running` with no hint.
        with interrupt_handling(self.cancel, self.reporter):
            completed = False
            try:
                run_pool(
                    run_ids,
                    self.run_one,
                    workers=workers,
                    progress=self.reporter.progress(len(run_ids)),
                    cancel=self.cancel,
                    limits=self.work.limits,
                )
                completed = True
            finally:
                self._sweep()  # whatever happened, no container of this batch outlives us
                # A process that exits never leaves the batch `running`, also when it raises.
                stopped = not completed or self.cancel.is_set() or self.gate.gone
                left = self.budget.exhausted and self.store.summary()["pending"] > 0
                self.store.finish("interrupted" if stopped or left else "finished")
        summary = self.store.summary()
        spent = self.budget.reason() if left else None
        return BatchOutcome(self.batch_dir, summary, self.cancel.is_set(), self.gate.gone, spent)

    def _sweep(self) -> None:
        try:
            self.backend.sweep(self.store.manifest.batch_id)
        except Exception as exc:  # the engine is gone: a later rerun or `clean` sweeps
            self.reporter.warning(
                f"could not remove this batch's containers now ({one_line(exc)}); "
                "`safeagents-batch rerun` or `clean` removes them once the engine answers"
            )

    def run_one(self, run_id: str, cancel: threading.Event) -> RunRecord:
        """One run to its final state; an unexpected failure is the run's `error`, not a crash."""
        try:
            self._run_one(self.by_id[run_id], cancel)
        except Exception as exc:
            self._record_internal_error(run_id, f"internal error: {type(exc).__name__}: {exc}")
        return self.store.run(run_id)

    def _record_internal_error(self, run_id: str, reason: str) -> None:
        """Closes the attempt left `running` (or marks the run), so no attempt stays running."""
        last = self.store.run(run_id).latest
        if last is None or last.status != "running":
            self.store.mark_not_started(run_id, "error", reason)
            return
        self.store.record_attempt(run_id, last.closed_as_error(reason, now_iso()))

    def _run_one(self, spec: RunSpec, cancel: threading.Event) -> None:
        if not self._may_start(spec, cancel, first=True):
            return
        image = self._ensure_image(spec)
        if image.error is not None:
            self.store.mark_not_started(spec.run_id, "error", image.error)
            return
        for retry in range(spec.job.retries + 1):
            if retry and cancel.wait(min(MAX_BACKOFF_SECONDS, 2.0**retry)):
                break  # interrupted while backing off
            if not self._may_start(spec, cancel, first=retry == 0):
                break
            outcome = self._attempt(spec, cancel)
            if outcome.engine_lost:
                self.gate.lost()
            if outcome.status not in spec.job.retry_on or cancel.is_set():
                break

    def _may_start(self, spec: RunSpec, cancel: threading.Event, *, first: bool) -> bool:
        """Waits while the engine is lost. A run that Ctrl-C stopped before its turn's first
        attempt says so (its earlier attempts, from a previous turn, stay in its history); one
        the engine never came back for is left as it was (pending, or its last attempt)."""
        if self.budget.exhausted:
            return False  # the batch's cost limit: it stays as it is, pending if it never ran
        if self.gate.wait_open():
            return True
        if cancel.is_set() and first:
            self.store.mark_not_started(spec.run_id, "cancelled", "cancelled before it started")
        return False

    def _attempt(self, spec: RunSpec, cancel: threading.Event) -> AttemptOutcome:
        """One container run, recorded as `running` before it starts and final after."""
        number = len(self.store.run(spec.run_id).attempts) + 1
        log_dir = BatchLayout(self.batch_dir).attempt_dir(spec.run_id, number)
        code = self.work.code[script_dir(spec)]
        recorded = recorded_path(log_dir, self.batch_dir)
        started = Attempt(
            number=number,
            log_dir=recorded,
            started_at=now_iso(),
            code_digest=code.digest,
            git=self.work.git,
        )
        self.store.record_attempt(spec.run_id, started)
        # Walked from the batch dir, no link followed (runs/<id> may have been planted), and
        # new: a dir already there (a crash's, or planted) is moved aside, never written into.
        dir_fd = self.store.safe.fresh_directory(recorded)
        job = spec.job
        sink = LocalSink(
            log_dir, job.max_artifacts_size, file_limit=job.max_artifacts_files, dir_fd=dir_fd
        )
        with sink:
            try:
                outcome = self.backend.run(self._request(spec, number, code), sink, cancel)
            except Exception as exc:  # recorded by run_one as an internal error
                sink.traceback("".join(traceback.format_exception(exc)))
                raise
        self.store.record_attempt(spec.run_id, started.finished(outcome, tuple(sink.dropped)))
        self.budget.add(outcome.usage)
        return outcome

    def _ensure_image(self, spec: RunSpec) -> ImageRecord:
        image = self.work.images[spec.image]
        outcome = self.images.get(image.tag, lambda: self._ensure_now(image))
        record = outcome.recorded(self.batch_dir)
        self.store.set_image(record)
        return record

    def _ensure_now(self, image: ImageSpec) -> ImageRecord:
        try:
            outcomes = self.backend.ensure_images(
                [image],
                BatchLayout(self.batch_dir).images,
                rebuild=self.options.rebuild,
                progress=self.reporter.build_progress(),
            )
        except Exception as exc:  # remembered as the image's failure: its runs do not retry it
            error = f"image {image.tag} not available: {type(exc).__name__}: {one_line(exc)}"
            return ImageRecord(
                tag=image.tag,
                framework=image.config.framework,
                status="failed",
                build_seconds=None,
                build_log=None,
                error=error,
            )
        return outcomes[image.tag]

    def _request(self, spec: RunSpec, number: int, code: StagedCode) -> AttemptRequest:
        return AttemptRequest(
            run_id=spec.run_id,
            job=spec.job.name,
            batch_id=self.store.manifest.batch_id,
            attempt=number,
            image=self.work.images[spec.image].tag,
            code=code,
            script=real_path(spec.script).name,
            env=self.work.envs[spec.run_id],
            timeout=spec.job.timeout,
            azure_dir=self._azure_dir() if spec.job.bind_azure_folder else None,
            azure_mode=spec.job.azure_mount,
            resources=spec.job.resources,
            network=spec.job.network,
            runtime=spec.job.runtime,
            enforce_limits=spec.job.enforce_limits,
            read_only_rootfs=spec.job.read_only_rootfs,
            hardening=spec.job.hardening,
            artifact_limit=spec.job.max_artifacts_size,
            artifact_files=spec.job.max_artifacts_files,
            models=tuple(self.work.models[name] for name in spec.job.models),
            pace=pool_pace(spec.job.pool, self.work.rates),
            cost_limit=cost_left(spec.job.cost_limit, self.store.run(spec.run_id)),
            model_env=spec.job.model_env,
            batch_dir=self.batch_dir,
            slurm=spec.job.slurm,
        )

    def _azure_dir(self) -> Path | None:
        if self.azure_dir.is_dir():
            return self.azure_dir
        if not self._azure_warned:
            self._azure_warned = True
            self.reporter.warning(
                f"bind_azure_folder is set but {self.azure_dir} does not exist; running without it"
            )
        return None
