"""`DockerRunner`: the single-run Python API of the original SafeAgents Docker helper.

It is a thin shell over the batch runner's pieces (ImageConfig -> image_spec -> the backend's
images; the script's directory staged like a batch's code; DockerBackend with a LocalSink for
the run), so one script run here behaves exactly like one run of a batch: same image tag, same
mounts, same hardening, same streamed log files.
"""

from __future__ import annotations

import importlib.util
import logging
import secrets
import threading
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from safeagents_batch.backends.base import AttemptRequest
from safeagents_batch.core.errors import BatchError, EngineUnavailable, one_line
from safeagents_batch.core.names import safe_name
from safeagents_batch.execution.sink import LocalSink
from safeagents_batch.jobs.frameworks import builtin_frameworks, framework_packages
from safeagents_batch.jobs.model import DEFAULT_IMAGE_NAME, DEFAULT_PYTHON_VERSION, ImageConfig
from safeagents_batch.records.layout import make_output_dir
from safeagents_batch.records.model import AttemptOutcome
from safeagents_batch.staging.code import StagedCode, stage_code
from safeagents_batch.staging.images import (
    ImageSpec,
    copy_selected,
    image_spec,
    write_build_context,
)

if TYPE_CHECKING:
    from safeagents_batch.backends.docker.backend import DockerBackend

logger = logging.getLogger(__name__)

# The batch label every container of this API carries, so `safeagents-batch clean` finds
# leftovers of single runs as well.
RUNNER_BATCH_ID = "docker-runner"
SOURCE_PACKAGE = "safeagents"
BUILD_LOGS = "build-logs"
CODE_DIR_NAME = "code"


class ScriptResult(TypedDict):
    """What `run_script` returns: the original's keys plus `status` and `error`."""

    success: bool
    exit_code: int | None
    stdout: str
    stderr: str
    log_dir: str
    run_id: str
    status: str  # succeeded | failed | timed_out | cancelled | error
    error: str | None


class DockerRunner:
    """Prepare, build and run agent scripts for one framework in Docker containers."""

    def __init__(
        self,
        framework: str,
        build_folder: Path | str | None = None,
        log_output_dir: Path | str | None = None,
        image_name: str = DEFAULT_IMAGE_NAME,
        python_version: str = DEFAULT_PYTHON_VERSION,
        additional_packages: list[str] | None = None,
        azure_cli: bool = True,
        requirements: Path | str | None = None,
        source_dirs: Sequence[Path | str] = (),
    ) -> None:
        """`requirements` (a pip requirements file) and `source_dirs` (copied into the image,
        on PYTHONPATH) as a jobs file's framework takes them, resolved against the cwd now."""
        supported = builtin_frameworks()
        if framework not in supported:
            raise ValueError(f"unknown framework {framework!r}; supported: {', '.join(supported)}")
        self.framework = framework
        # Resolved now, so a later chdir of the caller does not move the folders.
        self.build_folder = Path(build_folder or "build_folder").resolve()
        self.log_output_dir = Path(log_output_dir or "logs").resolve()
        self.image_name = image_name
        self.python_version = python_version
        self.additional_packages = tuple(additional_packages or ())
        # On by default, as in the original image: run_script binds ~/.azure by default, and
        # AzureCliCredential needs `az`. Off saves about 650 MB per base image.
        self.azure_cli = azure_cli
        self.requirements = Path(requirements).resolve() if requirements is not None else None
        self.source_dirs = tuple(Path(d).resolve() for d in source_dirs)
        self.build_log: Path | None = None
        self.image_tag: str | None = None
        self._spec: ImageSpec | None = None

    # -- prepare -----------------------------------------------------------------------------

    def prepare_environment(self) -> bool:
        """Copy the safeagents source (when importable here) to build_folder/code/safeagents,
        write the generated build context into build_folder and create the log dir."""
        try:
            source = _copy_safeagents_source(self.build_folder / "code" / SOURCE_PACKAGE)
            # Hashed once here, not on every run: the source is fixed until the next prepare.
            spec = image_spec(self._image_config(source))
            write_build_context(spec, self.build_folder)
            make_output_dir(self.log_output_dir)
        except (OSError, BatchError) as exc:
            logger.error("prepare_environment failed: %s", exc)
            return False
        self._spec = spec
        self.image_tag = None  # the source may have changed, and with it the tag
        return True

    def _image_config(self, source: Path | None) -> ImageConfig:
        return ImageConfig(
            framework=self.framework,
            packages=framework_packages(self.framework),
            python_version=self.python_version,
            additional_packages=self.additional_packages,
            requirements=self.requirements,
            source_dirs=((source,) if source is not None else ()) + self.source_dirs,
            image_name=self.image_name,
            azure_cli=self.azure_cli,
        )

    # -- build -------------------------------------------------------------------------------

    def build_image(self, no_cache: bool = False) -> bool:
        """Build the image, or find it already built under its content-addressed tag."""
        return self._ensure_image(no_cache) is None

    def _ensure_image(self, no_cache: bool = False) -> str | None:
        """Makes `self.image_tag` usable; returns why not, or None when it is."""
        if self._spec is None and not self.prepare_environment():
            return "preparing the build folder failed (see the log)"
        assert self._spec is not None  # set by a successful prepare_environment
        spec = self._spec
        try:
            with _engine() as backend:
                # Asked anew each time: a failure is not remembered, so a retry retries.
                outcomes = backend.ensure_images(
                    [spec], self.build_folder / BUILD_LOGS, rebuild=no_cache
                )
        except (BatchError, OSError) as exc:
            return _log_failure(_engine_failure(exc))
        outcome = outcomes[spec.tag]
        if outcome.build_log is not None:  # a cached image has none: keep the last build's
            self.build_log = Path(outcome.build_log)
        self.image_tag = outcome.tag if outcome.ok else None
        if not outcome.ok:
            return _log_failure(outcome.error or "image build failed")
        logger.info("image %s %s", outcome.tag, outcome.status)
        return None

    # -- run ---------------------------------------------------------------------------------

    def run_script(
        self,
        script_path: Path | str,
        environment_vars: dict[str, str] | None = None,
        timeout: int | None = None,
        bind_azure_folder: bool = True,
    ) -> ScriptResult:
        """Run one script in a fresh container; logs go to log_output_dir/<run_id>/."""
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout}")
        script = Path(script_path).resolve()
        run_id = new_run_id(script)
        log_dir = self.log_output_dir / run_id
        if not script.is_file():
            return _not_run(run_id, log_dir, f"script not found: {script}")
        # Ensured on every run, not only once: a found tag costs one API call, and the image
        # may have been removed since (`safeagents-batch clean --images`).
        reason = self._ensure_image()
        if reason is not None:
            return _not_run(run_id, log_dir, reason)
        try:
            code = self._stage(script)
        except (BatchError, OSError) as exc:
            return _not_run(run_id, log_dir, f"cannot stage the script: {one_line(exc)}")
        request = self._request(
            run_id, code, script.name, dict(environment_vars or {}), timeout, bind_azure_folder
        )
        try:
            with _engine() as backend, LocalSink(log_dir) as sink:
                outcome = _run_interruptibly(backend, request, sink)
        except (BatchError, OSError) as exc:
            return _not_run(run_id, log_dir, _engine_failure(exc))
        return _script_result(run_id, log_dir, outcome)

    def _stage(self, script: Path) -> StagedCode:
        """The script's directory, snapshotted into build_folder/code/<digest>/ as a batch
        stages its code (the seed: "copies your script to the build folder"), without the
        runner's own folders when they sit beside the script."""
        return stage_code(
            script.parent,
            self.build_folder / CODE_DIR_NAME,
            exclude=[self.build_folder, self.log_output_dir],
            keep=[script],
        )

    def _request(
        self,
        run_id: str,
        code: StagedCode,
        script: str,
        env: dict[str, str],
        timeout: int | None,
        bind_azure_folder: bool,
    ) -> AttemptRequest:
        assert self.image_tag is not None  # run_script ensured the image first
        return AttemptRequest(
            run_id=run_id,
            batch_id=RUNNER_BATCH_ID,
            attempt=1,
            image=self.image_tag,
            code=code,
            script=script,
            env=env,
            timeout=timeout,
            azure_dir=_azure_dir() if bind_azure_folder else None,
        )


@contextmanager
def _engine() -> Iterator[DockerBackend]:
    """A backend per operation: a runner holds no connection between calls (and constructing
    one works without an engine), so there is nothing for the user to close."""
    # The API edge builds the backend; imported here so that importing the package is cheap.
    from safeagents_batch.backends.docker.backend import ENGINE_ERRORS, DockerBackend

    backend = DockerBackend.from_env()
    try:
        yield backend
    except ENGINE_ERRORS as exc:
        raise EngineUnavailable(f"Docker engine unavailable: {one_line(exc)}") from None
    finally:
        backend.close()


def new_run_id(script: Path) -> str:
    """`run_<stem>_<8 hex>`; the stem is reduced to characters valid in directory and
    container names."""
    return f"run_{safe_name(script.stem, 60, 'script')}_{secrets.token_hex(4)}"


def _copy_safeagents_source(target: Path) -> Path | None:
    """Copies the host's safeagents package to `target`; None when it is not importable."""
    source = _safeagents_source()
    if source is None:
        logger.info(
            "package %r not importable here; the image gets no SafeAgents source", SOURCE_PACKAGE
        )
        return None
    if source.resolve() != target.resolve():
        # The copy is ours, made afresh so files deleted upstream do not linger in the image;
        # the file selector leaves out what never ships (caches, venvs, dotenv files, ...).
        copy_selected(source, target)
    return target


def _safeagents_source() -> Path | None:
    """The directory of the importable safeagents package, found without importing it (its
    import may be slow or need credentials)."""
    try:
        spec = importlib.util.find_spec(SOURCE_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None  # absent, or a single module rather than a package
    return Path(next(iter(spec.submodule_search_locations)))


def _azure_dir() -> Path | None:
    azure = Path.home() / ".azure"
    if azure.is_dir():
        return azure
    warnings.warn(
        f"bind_azure_folder is set but {azure} does not exist; running without it", stacklevel=3
    )
    return None


def _run_interruptibly(
    backend: DockerBackend, request: AttemptRequest, sink: LocalSink
) -> AttemptOutcome:
    """Runs in a worker thread so that Ctrl-C here becomes the backend's cancellation: the
    container is killed and removed before the KeyboardInterrupt goes on."""
    cancel = threading.Event()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="docker-runner") as pool:
        future = pool.submit(backend.run, request, sink, cancel)
        try:
            return future.result()
        except KeyboardInterrupt:
            cancel.set()
            future.result()
            raise


def _script_result(run_id: str, log_dir: Path, outcome: AttemptOutcome) -> ScriptResult:
    # The files were streamed during the run; the dict reads them back, as the API promises.
    return ScriptResult(
        success=outcome.status == "succeeded",
        exit_code=outcome.exit_code,
        stdout=_read_log(log_dir / "stdout.log"),
        stderr=_read_log(log_dir / "stderr.log"),
        log_dir=str(log_dir),
        run_id=run_id,
        status=outcome.status,
        error=outcome.error,
    )


def _not_run(run_id: str, log_dir: Path, reason: str) -> ScriptResult:
    """The result of a run that never started a container (its log dir is not created)."""
    logger.error("run %s not started: %s", run_id, reason)
    return ScriptResult(
        success=False,
        exit_code=None,
        stdout="",
        stderr="",
        log_dir=str(log_dir),
        run_id=run_id,
        status="error",
        error=reason,
    )


def _read_log(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def _log_failure(reason: str) -> str:
    logger.error("%s", reason)
    return reason


def _engine_failure(exc: BatchError | OSError) -> str:
    if isinstance(exc, OSError):
        return f"cannot prepare the run: {one_line(exc)}"  # a local file system problem
    return str(exc)  # EngineUnavailable: it names the engine and what to do
