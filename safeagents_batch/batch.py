"""Library entry points: run a batch (and, in rerun.py, run one again) on a Docker engine."""

from __future__ import annotations

import fnmatch
import os
import secrets
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import docker

from safeagents_batch.backends import RunRequest
from safeagents_batch.backends.docker import DockerBackend
from safeagents_batch.batchdir import BatchLock, remove_batch_containers
from safeagents_batch.dotenv import read_dotenv
from safeagents_batch.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_RUNS_FAILED, UsageError
from safeagents_batch.executor import interrupt_handling, make_progress, run_pool
from safeagents_batch.image_store import ImageStore
from safeagents_batch.images import ImageSpec, file_sha256, image_spec
from safeagents_batch.manifest import (
    MANIFEST_NAME,
    Attempt,
    ImageRecord,
    Manifest,
    ManifestStore,
    RunRecord,
    now_iso,
    seconds_between,
)
from safeagents_batch.model import ImageConfig, JobsFile
from safeagents_batch.plan import RunSpec, needed_images
from safeagents_batch.redaction import redact_env, redact_yaml_text
from safeagents_batch.snapshot import resolved_yaml

SNAPSHOT_NAME = "jobs.yaml"
SOURCE_COPY_NAME = "jobs.source.yaml"
MAX_BACKOFF_SECONDS = 30.0


@dataclass(frozen=True)
class BatchOptions:
    workers: int | None = None
    output_dir: Path | None = None
    only: str | None = None
    rebuild: bool = False
    progress_bar: bool | None = None


@dataclass(frozen=True)
class BatchOutcome:
    batch_dir: Path
    summary: dict[str, int]
    interrupted: bool

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_OK if self.summary["succeeded"] == self.summary["total"] else EXIT_RUNS_FAILED


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


def read_env_files(specs: list[RunSpec]) -> dict[Path, dict[str, str]]:
    """Every env file the runs name, each read once: a job's runs share one file."""
    paths = dict.fromkeys(s.job.env_file for s in specs if s.job.env_file is not None)
    return {path: read_dotenv(path) for path in paths}


def image_specs(specs: list[RunSpec]) -> dict[ImageConfig, ImageSpec]:
    """The spec of every image the runs need, computed once: image_spec hashes the
    requirements file and source dirs, and a batch asks for each image's tag many times."""
    return {config: image_spec(config) for config in needed_images(specs)}


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


def new_batch_id(name: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{name}-{stamp}-{secrets.token_hex(2)}"


def run_batch(
    jobs_file: JobsFile,
    specs: list[RunSpec],
    client: docker.DockerClient,
    options: BatchOptions = BatchOptions(),
) -> BatchOutcome:
    """Creates the batch dir, then runs every spec; nothing is written if the input is bad."""
    specs = select_runs(specs, options.only)
    check_passthrough(specs, os.environ)
    env_files = read_env_files(specs)  # bad env files fail here
    envs = {s.run_id: resolve_env(s, env_files, os.environ) for s in specs}
    images = image_specs(specs)
    runs = {s.run_id: new_record(s, jobs_file, env_files, images) for s in specs}
    batch_id = new_batch_id(jobs_file.name)
    batch_dir = (options.output_dir or jobs_file.output_dir).absolute() / batch_id
    batch_dir.mkdir(parents=True)
    write_jobs_copies(batch_dir, jobs_file)
    manifest = Manifest(
        batch_id=batch_id,
        batch_dir=str(batch_dir),
        jobs_file=str(jobs_file.path),
        jobs_file_sha256=jobs_file.sha256,
        created_at=now_iso(),
        runs=runs,
    )
    with BatchLock(batch_dir):
        store = ManifestStore(manifest, batch_dir / MANIFEST_NAME)
        store.save()
        runner = BatchRunner(client, store, batch_dir, specs, envs, images, options)
        return runner.execute(
            [s.run_id for s in specs], workers=options.workers or jobs_file.workers
        )


def write_jobs_copies(batch_dir: Path, jobs_file: JobsFile) -> None:
    """The resolved snapshot `rerun` reads, and the file as written, into the batch dir."""
    # Both copies lose literal secret values: a batch dir is shared further than a jobs file.
    patterns = jobs_file.secret_patterns
    (batch_dir / SNAPSHOT_NAME).write_text(
        redact_yaml_text(resolved_yaml(jobs_file), patterns), encoding="utf-8"
    )
    (batch_dir / SOURCE_COPY_NAME).write_text(
        redact_yaml_text(jobs_file.text, patterns), encoding="utf-8"
    )


def new_record(
    spec: RunSpec,
    jobs_file: JobsFile,
    env_files: Mapping[Path, dict[str, str]],
    images: Mapping[ImageConfig, ImageSpec],
) -> RunRecord:
    """A pending record. Values from env_file and the host are only ever named, as redacted."""
    # An env_file value that a literal overrides is not in the container: the literal is shown.
    from_file = set(env_files[spec.job.env_file]) if spec.job.env_file else set()
    hidden = (from_file - set(spec.literal_env)) | set(spec.job.env_passthrough)
    return RunRecord(
        run_id=spec.run_id,
        job=spec.job.name,
        framework=spec.job.framework,
        script=str(spec.script),
        script_sha256=file_sha256(spec.script),
        image=images[spec.image].tag,
        env=redact_env(spec.literal_env, hidden, jobs_file.secret_patterns),
        timeout=spec.job.timeout,
    )


@dataclass
class BatchRunner:
    """Runs a set of run ids of one batch dir; shared by `run` and `rerun`."""

    client: docker.DockerClient
    store: ManifestStore
    batch_dir: Path
    specs: list[RunSpec]
    envs: dict[str, dict[str, str]] = field(repr=False)
    image_specs: Mapping[ImageConfig, ImageSpec]
    options: BatchOptions = BatchOptions()

    def __post_init__(self) -> None:
        self.by_id = {s.run_id: s for s in self.specs}
        self.images = ImageStore(
            self.client, self.batch_dir / "images", rebuild=self.options.rebuild
        )
        self.backend = DockerBackend(self.client)
        self.cancel = threading.Event()
        self.azure_dir = Path.home() / ".azure"
        self._azure_warned = False

    def execute(self, run_ids: list[str], *, workers: int) -> BatchOutcome:
        for config in needed_images(self.specs):
            tag = self.image_specs[config].tag
            if tag not in self.store.manifest.images:
                self.store.set_image(ImageRecord(tag, config.framework, "pending"))
        progress = make_progress(len(run_ids), bar=self.options.progress_bar)
        # The handlers stay until the manifest is final: a second Ctrl-C during cleanup must
        # not turn into a KeyboardInterrupt that leaves the batch `running` with no hint.
        with interrupt_handling(self.cancel, self._say_interrupted):
            try:
                run_pool(
                    run_ids, self.run_one, workers=workers, progress=progress, cancel=self.cancel
                )
            finally:
                # Whatever happened, no container of this batch outlives us.
                remove_batch_containers(self.client, self.store.manifest.batch_id)
            interrupted = self.cancel.is_set()
            self.store.finish("interrupted" if interrupted else "finished")
            if interrupted:
                print(
                    f"safeagents-batch: interrupted; resume with: safeagents-batch rerun "
                    f"{self.batch_dir}",
                    file=sys.stderr,
                )
        return BatchOutcome(self.batch_dir, self.store.manifest.summary(), interrupted)

    def _say_interrupted(self) -> None:
        print(
            "\nsafeagents-batch: stopping: killing running containers...",
            file=sys.stderr,
            flush=True,
        )

    def run_one(self, run_id: str, cancel: threading.Event) -> RunRecord:
        """One run to its final state; an unexpected failure is the run's `error`, not a crash."""
        try:
            return self._run_one(self.by_id[run_id], cancel)
        except Exception as exc:
            self._record_internal_error(run_id, f"internal error: {type(exc).__name__}: {exc}")
            return self.store.run(run_id)

    def _record_internal_error(self, run_id: str, reason: str) -> None:
        """Closes the attempt left `running` (or adds one), so no attempt stays running."""
        record = self.store.run(run_id)
        last = record.attempts[-1] if record.attempts else None
        ended = now_iso()
        if last is not None and last.status == "running":
            attempt = replace(
                last,
                status="error",
                ended_at=ended,
                error=reason,
                duration_seconds=seconds_between(last.started_at, ended),
            )
        else:
            attempt = Attempt(
                len(record.attempts) + 1,
                "error",
                record.log_dir or "",
                ended,
                ended,
                0.0,
                None,
                reason,
            )
        self.store.record_attempt(run_id, attempt)

    def _run_one(self, spec: RunSpec, cancel: threading.Event) -> RunRecord:
        if cancel.is_set():
            return self._mark_not_started(spec.run_id, "cancelled", "cancelled before it started")
        image = self._ensure_image(spec)
        if image.error is not None:
            return self._mark_not_started(spec.run_id, "error", image.error)
        if cancel.is_set():  # interrupted while the image was being built
            return self._mark_not_started(spec.run_id, "cancelled", "cancelled before it started")
        for retry in range(spec.job.retries + 1):
            if retry and cancel.wait(min(MAX_BACKOFF_SECONDS, 2.0**retry)):
                break  # interrupted while backing off
            status = self._attempt(spec, cancel)
            if status not in spec.job.retry_on or cancel.is_set():
                break
        return self.store.run(spec.run_id)

    def _attempt(self, spec: RunSpec, cancel: threading.Event) -> str:
        """One container run, recorded as `running` before it starts and final after."""
        number = len(self.store.run(spec.run_id).attempts) + 1
        log_dir = self.batch_dir / "runs" / spec.run_id / f"attempt-{number}"
        self.store.record_attempt(spec.run_id, Attempt(number, "running", str(log_dir), now_iso()))
        result = self.backend.run(self._request(spec, number, log_dir), cancel)
        self.store.record_attempt(
            spec.run_id,
            Attempt(
                number,
                result.status,
                str(log_dir),
                result.started_at,
                result.ended_at,
                seconds_between(result.started_at, result.ended_at),
                result.exit_code,
                result.error,
            ),
        )
        return result.status

    def _ensure_image(self, spec: RunSpec) -> ImageRecord:
        outcome = self.images.ensure(self.image_specs[spec.image])
        record = ImageRecord(
            outcome.tag,
            outcome.framework,
            outcome.status,
            outcome.build_seconds,
            str(outcome.build_log) if outcome.build_log else None,
            outcome.error,
        )
        if self.store.manifest.images.get(outcome.tag) != record:
            self.store.set_image(record)
        return record

    def _mark_not_started(self, run_id: str, status: str, reason: str) -> RunRecord:
        record = self.store.run(run_id)
        self.store.set_run(replace(record, status=status, error=reason, exit_code=None))
        return self.store.run(run_id)

    def _request(self, spec: RunSpec, number: int, log_dir: Path) -> RunRequest:
        return RunRequest(
            run_id=spec.run_id,
            batch_id=self.store.manifest.batch_id,
            attempt=number,
            image=self.image_specs[spec.image].tag,
            script=spec.script,
            log_dir=log_dir,
            env=self.envs[spec.run_id],
            timeout=spec.job.timeout,
            azure_dir=self._azure_dir() if spec.job.bind_azure_folder else None,
            azure_mode=spec.job.azure_mount,
            resources=spec.job.resources,
            network=spec.job.network,
            read_only_rootfs=spec.job.read_only_rootfs,
            hardening=spec.job.hardening,
        )

    def _azure_dir(self) -> Path | None:
        if self.azure_dir.is_dir():
            return self.azure_dir
        if not self._azure_warned:
            self._azure_warned = True
            print(
                f"safeagents-batch: warning: bind_azure_folder is set but {self.azure_dir} "
                "does not exist; running without it",
                file=sys.stderr,
            )
        return None
