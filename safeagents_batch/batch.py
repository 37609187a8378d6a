"""Library entry point for running a batch on a backend; `rerun.py` runs one again. Both go
through one preparation path (select, env, code, images, records) and one BatchRunner."""

from __future__ import annotations

import fnmatch
import functools
import os
import secrets
import shutil
import threading
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from safeagents_batch.backends.base import (
    AttemptOutcome,
    AttemptRequest,
    Backend,
    ImageOutcome,
    StagedCode,
)
from safeagents_batch.batchlock import BatchLock
from safeagents_batch.clock import now_iso, seconds_between
from safeagents_batch.code import stage_code
from safeagents_batch.dotenv import read_dotenv
from safeagents_batch.errors import (
    EXIT_ENGINE_UNAVAILABLE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RUNS_FAILED,
    UsageError,
    one_line,
)
from safeagents_batch.executor import (
    DEFAULT_ENGINE_WAIT,
    EngineGate,
    Limits,
    interrupt_handling,
    run_pool,
)
from safeagents_batch.images import ImageSpec, file_sha256, image_spec
from safeagents_batch.manifest import MANIFEST_NAME, Manifest, ManifestStore
from safeagents_batch.model import ImageConfig, JobsFile
from safeagents_batch.plan import RunSpec, needed_images
from safeagents_batch.provenance import git_state
from safeagents_batch.records import Attempt, ImageRecord, RunRecord, recorded_path
from safeagents_batch.redaction import is_secret_name, redact_env, redact_yaml_text
from safeagents_batch.reporting import Reporter
from safeagents_batch.sink import LocalSink
from safeagents_batch.snapshot import resolved_yaml

SNAPSHOT_NAME = "jobs.yaml"
SOURCE_COPY_NAME = "jobs.source.yaml"
CODE_DIR_NAME = "code"
MAX_BACKOFF_SECONDS = 30.0


@dataclass(frozen=True)
class BatchOptions:
    workers: int | None = None
    output_dir: Path | None = None
    only: str | None = None
    rebuild: bool = False
    engine_wait: float = DEFAULT_ENGINE_WAIT


@dataclass(frozen=True)
class BatchOutcome:
    batch_dir: Path
    summary: dict[str, int]
    interrupted: bool
    engine_gone: bool = False

    @property
    def exit_code(self) -> int:
        if self.engine_gone:
            return EXIT_ENGINE_UNAVAILABLE
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_OK if self.summary["succeeded"] == self.summary["total"] else EXIT_RUNS_FAILED


# -- preparation (pure apart from reading env files and staging code) ---------------------


def select_runs(specs: list[RunSpec], only: str | None) -> list[RunSpec]:
    """`--only PATTERN`: glob on run id or job name."""
    if only is None:
        return specs
    chosen = [
        s
        for s in specs
        if fnmatch.fnmatchcase(s.run_id, only) or fnmatch.fnmatchcase(s.job.name, only)
    ]
    if not chosen:
        raise UsageError(f"--only {only!r} matches no run id or job name")
    return chosen


@dataclass(frozen=True)
class RunInputs:
    """What every run's record needs, read once: a job's runs share one env file and one
    image, and image_spec hashes the requirements file and source dirs."""

    env_files: dict[Path, dict[str, str]] = field(repr=False)
    images: dict[ImageConfig, ImageSpec]
    script_digests: dict[Path, str]  # a script's sha256, read once however many runs it has


def read_inputs(specs: list[RunSpec]) -> RunInputs:
    paths = dict.fromkeys(s.job.env_file for s in specs if s.job.env_file is not None)
    env_files = {path: read_dotenv(path) for path in paths}  # bad env files fail here
    images = {c: image_spec(c) for c in needed_images(specs)}
    scripts = {path: file_sha256(path) for path in dict.fromkeys(s.script for s in specs)}
    return RunInputs(env_files, images, scripts)


def new_record(spec: RunSpec, jobs_file: JobsFile, inputs: RunInputs) -> RunRecord:
    """A pending record. Values from env_file and the host are only ever named, as redacted."""
    # An env_file value that a literal overrides is not in the container: the literal is shown.
    from_file = set(inputs.env_files[spec.job.env_file]) if spec.job.env_file else set()
    hidden = (from_file - set(spec.literal_env)) | set(spec.job.env_passthrough)
    return RunRecord(
        run_id=spec.run_id,
        job=spec.job.name,
        framework=spec.job.framework,
        script=str(spec.script),
        script_sha256=inputs.script_digests[spec.script],
        image=inputs.images[spec.image].tag,
        env=redact_env(spec.literal_env, hidden, jobs_file.secret_patterns),
        timeout=spec.job.timeout,
    )


def resolve_env(
    spec: RunSpec, env_files: Mapping[Path, dict[str, str]], environ: Mapping[str, str]
) -> dict[str, str]:
    """The env the container gets: env_file, then the file's env, matrix, host passthrough."""
    env = dict(env_files[spec.job.env_file]) if spec.job.env_file else {}
    env.update(spec.literal_env)
    env.update({name: environ[name] for name in spec.job.env_passthrough})
    return env


def check_passthrough(specs: list[RunSpec], environ: Mapping[str, str]) -> None:
    missing = sorted({n for s in specs for n in s.job.env_passthrough if n not in environ})
    if missing:
        raise UsageError(
            "env_passthrough names variables not set in this environment: " + ", ".join(missing)
        )


def script_dir(spec: RunSpec) -> Path:
    """The directory that ships with a run: the script's real one (a link's target dir, as
    Python itself puts the real dir first on sys.path)."""
    return real_path(spec.script).parent


@functools.cache
def real_path(path: Path) -> Path:
    """A script's resolved path, worked out once per script however many runs it has (a
    resolve is a syscall per path component: for 10,000 runs, seconds before the first start)."""
    return path.resolve()


def stage_runs_code(
    specs: list[RunSpec], batch_dir: Path, jobs_file: JobsFile, *also_hidden: Path
) -> dict[Path, StagedCode]:
    """Each distinct script directory snapshotted once into BATCH_DIR/code/<digest>/. Left out:
    the batch output dir (which often sits beside the scripts) and the tool's own inputs, the
    jobs file and its env files: they hold secret values that reach a container only as its
    environment, and a batch dir keeps none."""
    dirs: dict[Path, list[RunSpec]] = {}
    for spec in specs:
        dirs.setdefault(script_dir(spec), []).append(spec)
    # Every job's env file, not only the selected runs': one job's sits beside another's code.
    env_files = {job.env_file for job in jobs_file.jobs if job.env_file is not None}
    exclude = [batch_dir.parent, jobs_file.output_dir, jobs_file.path, *env_files, *also_hidden]
    return {
        directory: stage_code(
            directory,
            batch_dir / CODE_DIR_NAME,
            exclude=[path.resolve() for path in exclude],
            keep=list(dict.fromkeys(real_path(s.script) for s in group)),
            limit=min(s.job.max_code_size for s in group),
        )
        for directory, group in dirs.items()
    }


@dataclass(frozen=True)
class Work:
    """The selected runs with everything they need to start, prepared before anything runs."""

    specs: list[RunSpec]
    envs: dict[str, dict[str, str]] = field(repr=False)
    images: Mapping[ImageConfig, ImageSpec]
    code: dict[Path, StagedCode]
    limits: Limits = field(default_factory=Limits)


def run_limits(specs: list[RunSpec], pools: Mapping[str, int]) -> Limits:
    """Each run's limit keys: its job's `max_parallel`, its `pool`; with their capacities."""
    capacity = {f"pool:{name}": size for name, size in pools.items()}
    keys: dict[str, tuple[str, ...]] = {}
    for spec in specs:
        job = spec.job
        own: tuple[str, ...] = ()
        if job.max_parallel is not None:
            capacity[f"job:{job.name}"] = job.max_parallel
            own = (f"job:{job.name}",)
        keys[spec.run_id] = own + ((f"pool:{job.pool}",) if job.pool is not None else ())
    return Limits(capacity, lambda run_id: keys[run_id])


def prepare_work(
    selected: list[RunSpec],
    inputs: RunInputs,
    batch_dir: Path,
    jobs_file: JobsFile,
    *also_hidden: Path,
) -> Work:
    """The one preparation path of `run` and `rerun`: env checked and resolved, code staged."""
    check_passthrough(selected, os.environ)
    envs = {s.run_id: resolve_env(s, inputs.env_files, os.environ) for s in selected}
    code = stage_runs_code(selected, batch_dir, jobs_file, *also_hidden)
    return Work(selected, envs, inputs.images, code, run_limits(selected, jobs_file.pools))


def pending_images(work: Work) -> dict[str, ImageRecord]:
    """The images the work needs, as `pending` records until they are ensured."""
    needed = dict.fromkeys(s.image for s in work.specs)
    return {
        work.images[c].tag: ImageRecord(work.images[c].tag, c.framework, "pending") for c in needed
    }


def new_batch_id(name: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{name}-{stamp}-{secrets.token_hex(2)}"


def write_jobs_copies(batch_dir: Path, jobs_file: JobsFile) -> None:
    """The resolved snapshot `rerun` reads, and the file as written, into the batch dir."""
    # Both copies lose literal secret values: a batch dir is shared further than a jobs file.
    patterns = jobs_file.secret_patterns
    # Finding them parses the YAML again (a tenth of a second for a big matrix, before the
    # first container): only worth it when some env name looks secret. Every `env` name of
    # the file, `defaults:` included, is in some job's merged env.
    secret = any(is_secret_name(n, patterns) for job in jobs_file.jobs for n in job.env)

    def kept(text: str) -> str:
        return redact_yaml_text(text, patterns) if secret else text

    (batch_dir / SNAPSHOT_NAME).write_text(kept(resolved_yaml(jobs_file)), encoding="utf-8")
    (batch_dir / SOURCE_COPY_NAME).write_text(kept(jobs_file.text), encoding="utf-8")


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
    runs = {s.run_id: new_record(s, jobs_file, inputs) for s in specs}
    batch_id = new_batch_id(jobs_file.name)
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
    write_jobs_copies(batch_dir, jobs_file)
    manifest = Manifest(
        batch_id=batch_id,
        batch_dir=str(batch_dir),
        jobs_file=str(jobs_file.path),
        jobs_file_sha256=jobs_file.sha256,
        created_at=now_iso(),
        runs=runs,
        images=pending_images(work),
        backend=backend.where(),
        jobs_file_git=git_state(jobs_file.path, list(dict.fromkeys(s.script for s in specs))),
    )
    with BatchLock(batch_dir), ManifestStore(manifest, batch_dir / MANIFEST_NAME) as store:
        store.save()
        runner = BatchRunner(backend, store, batch_dir, work, reporter, options)
        return runner.execute(workers=options.workers or jobs_file.workers)


class _OncePerTag:
    """Concurrent asks for one image share one ensure; its outcome (a failure too) stands for
    the whole batch."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._outcomes: dict[str, ImageOutcome] = {}

    def get(self, tag: str, ensure: Callable[[], ImageOutcome]) -> ImageOutcome:
        with self._guard:
            lock = self._locks.setdefault(tag, threading.Lock())
        with lock:
            # Checked again under the tag's lock: the first caller may have built it meanwhile.
            if tag not in self._outcomes:
                self._outcomes[tag] = ensure()
            return self._outcomes[tag]


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
        self.images = _OncePerTag()
        self.azure_dir = Path.home() / ".azure"
        self._azure_warned = False

    def execute(self, *, workers: int) -> BatchOutcome:
        new_images = pending_images(self.work)
        if new_images.keys() - self.store.manifest.images.keys():
            self.store.add_images(list(new_images.values()))
        run_ids = [s.run_id for s in self.work.specs]
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
                self.store.finish("interrupted" if stopped else "finished")
        summary = self.store.summary()
        return BatchOutcome(self.batch_dir, summary, self.cancel.is_set(), self.gate.gone)

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
        if self.gate.wait_open():
            return True
        if cancel.is_set() and first:
            self.store.mark_not_started(spec.run_id, "cancelled", "cancelled before it started")
        return False

    def _attempt(self, spec: RunSpec, cancel: threading.Event) -> AttemptOutcome:
        """One container run, recorded as `running` before it starts and final after."""
        number = len(self.store.run(spec.run_id).attempts) + 1
        log_dir = self.batch_dir / "runs" / spec.run_id / f"attempt-{number}"
        code = self.work.code[script_dir(spec)]
        recorded = recorded_path(log_dir, self.batch_dir)
        started = Attempt(number, "running", recorded, now_iso(), code_digest=code.digest)
        self.store.record_attempt(spec.run_id, started)
        with LocalSink(log_dir, spec.job.max_artifacts_size) as sink:
            try:
                outcome = self.backend.run(self._request(spec, number, code), sink, cancel)
            except Exception as exc:  # recorded by run_one as an internal error
                sink.traceback("".join(traceback.format_exception(exc)))
                raise
        self.store.record_attempt(spec.run_id, _finished(started, outcome, sink.dropped))
        return outcome

    def _ensure_image(self, spec: RunSpec) -> ImageRecord:
        image = self.work.images[spec.image]
        outcome = self.images.get(image.tag, lambda: self._ensure_now(image))
        record = outcome.record(self.batch_dir)
        self.store.set_image(record)
        return record

    def _ensure_now(self, image: ImageSpec) -> ImageOutcome:
        try:
            outcomes = self.backend.ensure_images(
                [image], self.batch_dir / "images", rebuild=self.options.rebuild
            )
        except Exception as exc:  # remembered as the image's failure: its runs do not retry it
            error = f"image {image.tag} not available: {type(exc).__name__}: {one_line(exc)}"
            return ImageOutcome(image.tag, image.config.framework, "failed", None, None, error)
        return outcomes[image.tag]

    def _request(self, spec: RunSpec, number: int, code: StagedCode) -> AttemptRequest:
        return AttemptRequest(
            run_id=spec.run_id,
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
            read_only_rootfs=spec.job.read_only_rootfs,
            hardening=spec.job.hardening,
            artifact_limit=spec.job.max_artifacts_size,
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


def _finished(started: Attempt, outcome: AttemptOutcome, dropped: list[str]) -> Attempt:
    return Attempt(
        started.number,
        outcome.status,
        started.log_dir,
        outcome.started_at,
        outcome.ended_at,
        seconds_between(outcome.started_at, outcome.ended_at),
        outcome.exit_code,
        outcome.error,
        started.code_digest,
        tuple(dropped),
        outcome.node,
    )
