"""The Docker backend: one attempt in one container through the SDK. Created with labels, the
staged code mounted read-only, output streamed to the sink while it runs, the timeout enforced
by killing the container, what the script left in /safeagents/logs handed to the sink at the
end, and the container always removed (later, if the engine is away at that moment)."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import secrets
import socket
import tarfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests
from docker.models.containers import Container
from docker.types import CancellableStream, LogConfig, Mount
from msgspec import structs

from safeagents_batch.backends.base import (
    QUIET_BUILD,
    AttemptRequest,
    BuildProgress,
    CleanRequest,
    Sink,
)
from safeagents_batch.backends.docker.azure import (
    AzurePlan,
    Copied,
    azure_env,
    azure_plan,
    copy_azure_dir,
    write_back_azure_dir,
)
from safeagents_batch.backends.docker.images import DockerImages
from safeagents_batch.backends.docker.models import ModelAccess, ModelPass, ModelSetupError
from safeagents_batch.backends.docker.relay import NO_IPV6
from safeagents_batch.core import labels
from safeagents_batch.core.clock import now_iso
from safeagents_batch.core.errors import EngineUnavailable, one_line
from safeagents_batch.core.names import safe_name
from safeagents_batch.gateway.passes import AttemptCalls
from safeagents_batch.jobs.model import Resources
from safeagents_batch.records.model import AttemptOutcome, ImageRecord
from safeagents_batch.staging.images import CODE_DIR, CONTAINER_UID, LOGS_DIR, ImageSpec

POLL_SECONDS = 0.2
DRAIN_SECONDS = 30
PING_SECONDS = 5
DEFAULT_ENGINE = "unix:///var/run/docker.sock"
# What the SDK raises when the engine fails or does not answer (RequestException: timeouts,
# refused connections, a socket that vanished with the daemon).
ENGINE_ERRORS = (docker.errors.DockerException, requests.RequestException)


def engine_url() -> str:
    return os.environ.get("DOCKER_HOST") or DEFAULT_ENGINE


def connect(timeout: int = 120) -> docker.DockerClient:
    """A client that has answered a ping, or EngineUnavailable naming where we looked."""
    try:
        _check_local_socket()
        client = docker.from_env(timeout=timeout)  # asks the engine for its API version
    except (*ENGINE_ERRORS, OSError) as exc:
        raise EngineUnavailable(
            f"cannot reach the Docker engine at {engine_url()}: {one_line(exc)} "
            "(start dockerd, or run scripts/provision-docker)"
        ) from None
    if client.api.base_url.startswith("http+docker://"):
        # A local socket, where no proxy can apply: without this, requests scans the whole
        # environment for proxy settings on every call, a third of its CPU per request.
        client.api.trust_env = False
    return client


def _check_local_socket() -> None:
    """Whether a local socket takes connections, asked before any client exists: the SDK's
    unix transport leaves its socket open when the connect fails, and `from_env` connects
    in its constructor (to learn the API version), out of reach of a `close`."""
    url = engine_url()
    if not url.startswith("unix://"):
        return  # other transports are asked by the client itself
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(PING_SECONDS)
        probe.connect(url.removeprefix("unix://"))


class DockerBackend:
    """The Backend of one engine. Safe to call from many worker threads at once."""

    name = "docker"

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client
        self._unremoved: set[str] = set()  # containers whose removal the engine missed
        self._lock = threading.Lock()
        self.models = ModelAccess(client)

    @classmethod
    def from_env(cls) -> DockerBackend:
        return cls(connect())

    def close(self) -> None:
        try:
            self.models.close()
        finally:
            self.client.close()

    # -- Backend -------------------------------------------------------------------------

    def ensure_images(
        self,
        specs: Sequence[ImageSpec],
        build_logs: Path,
        *,
        rebuild: bool = False,
        progress: BuildProgress = QUIET_BUILD,
    ) -> dict[str, ImageRecord]:
        images = DockerImages(self.client, build_logs, rebuild=rebuild, progress=progress)
        return {spec.tag: images.ensure(spec) for spec in specs}

    def run(self, request: AttemptRequest, sink: Sink, cancel: threading.Event) -> AttemptOutcome:
        started = now_iso()
        self._remove_unremoved()
        try:
            azure = _azure(request)
        except OSError as exc:
            return AttemptOutcome(
                status="error", started_at=started, ended_at=now_iso(), error=_azure_error(exc)
            )
        try:
            models = self.models.open(request, sink) if request.models else None
        except ModelSetupError as exc:
            return AttemptOutcome(
                status="error", started_at=started, ended_at=now_iso(), error=str(exc)
            )
        except ENGINE_ERRORS as exc:
            return self._engine_failure("model network", exc, started)
        try:
            return self._run_with_models(request, sink, cancel, started, azure, models)
        finally:
            if models is not None:  # the token dies with the attempt, however it ended
                self.models.close_attempt(models)

    def _run_with_models(
        self,
        request: AttemptRequest,
        sink: Sink,
        cancel: threading.Event,
        started: str,
        azure: AzurePlan | None,
        models: ModelPass | None,
    ) -> AttemptOutcome:
        try:
            container = self._create(request, azure, models)
        except ENGINE_ERRORS as exc:
            return self._engine_failure("create", exc, started)
        dropped = dropped_limits(container.attrs, request.resources)
        if dropped and request.enforce_limits:
            self._remove(container.id)
            return AttemptOutcome(
                status="error",
                started_at=started,
                ended_at=now_iso(),
                error=limits_refusal(request.job, dropped),
                dropped_limits=dropped,
            )
        try:
            outcome = self._supervise(container, request, sink, cancel, started, azure)
            # The container has ended: its calls are all counted (by the gateway that holds
            # its pass: elsewhere, its backend adds them).
            calls = self.models.close_attempt(models) if models is not None else None
            if calls is not None:
                outcome = with_calls(outcome, calls)
            outcome = structs.replace(
                outcome, runtime=applied_runtime(container), dropped_limits=dropped
            )
        finally:
            removal_error = self._remove(container.id)
        if removal_error is not None and not outcome.engine_lost:
            # The run's outcome stands; the container is removed once the engine answers.
            note = f"container {container.short_id} not removed yet: {removal_error}"
            outcome = structs.replace(
                outcome, error=f"{outcome.error}; {note}" if outcome.error else note
            )
        return outcome

    def reattach(
        self,
        batch_dir: Path,
        run_id: str,
        attempt: int,
        open_sink: Callable[[], Sink],
        cancel: threading.Event,
    ) -> AttemptOutcome | None:
        """Its containers do not outlive the driver's process (the sweep removes them)."""
        return None

    def sweep(self, batch_id: str) -> int:
        removed = batch_container_ids(self.client, batch_id)
        for container_id in removed:
            remove_container(self.client, container_id)
        with self._lock:
            self._unremoved.difference_update(removed)
        self.models.remove_network(batch_id)
        return len(removed)

    def clean(self, request: CleanRequest) -> list[str]:
        # Imported here: `clean` is a command of its own, never part of a batch.
        from safeagents_batch.backends.docker.clean import clean_engine

        return clean_engine(self.client, request)

    def available(self) -> bool:
        """Asked over a new connection: while dockerd shuts down, its socket is gone for new
        clients but pooled keep-alive connections still get answers, for seconds."""
        try:
            probe = docker.from_env(version=self.client.api.api_version, timeout=PING_SECONDS)
        except (*ENGINE_ERRORS, OSError):
            return False
        try:
            probe.api.ping()
        except (*ENGINE_ERRORS, OSError):
            return False
        finally:
            probe.close()
        self._remove_unremoved()
        return True

    def where(self) -> dict[str, str]:
        where = {"backend": self.name, "host": socket.gethostname(), "engine": engine_url()}
        try:  # which engine answers there: Podman's says so among its components
            components = self.client.version().get("Components") or []
        except ENGINE_ERRORS:
            return where
        names = " ".join(str(c.get("Name", "")) for c in components)
        where["engine_kind"] = "podman" if "Podman" in names else "docker"
        return where

    # -- one attempt ---------------------------------------------------------------------

    def _create(
        self, request: AttemptRequest, azure: AzurePlan | None, models: ModelPass | None = None
    ) -> Container:
        resources = request.resources
        env = azure_env(request.env) if azure else request.env
        if models is not None:
            env = {**env, **models.env}
        container: Container = self.client.containers.create(
            image=request.image,
            command=["python", f"{CODE_DIR}/{request.script}"],
            name=f"sab-{safe_name(request.run_id, 80)}-{secrets.token_hex(3)}",
            working_dir=CODE_DIR,
            environment=env,
            user=container_user(request),
            labels=container_labels(request),
            mounts=[
                *_mounts(request),
                *(azure.mounts if azure else ()),
                *(models.mounts if models else ()),
            ],
            network_mode=models.network if models is not None else request.network,
            runtime=request.runtime,
            init=request.hardening.init,
            cap_drop=["ALL"] if request.hardening.drop_capabilities else None,
            security_opt=["no-new-privileges:true"]
            if request.hardening.no_new_privileges
            else None,
            pids_limit=resources.pids,
            mem_limit=resources.memory,
            memswap_limit=resources.memory,  # no swap beyond the memory limit
            nano_cpus=int(resources.cpus * 1e9) if resources.cpus else None,
            read_only=request.read_only_rootfs,
            sysctls=NO_IPV6 if models is not None and models.isolated else None,
            tmpfs={"/tmp": "rw,nosuid,nodev,size=512m"} if request.read_only_rootfs else None,
            # The sink keeps the real logs; the engine's copy is only a bounded safety net.
            log_config=LogConfig(type="json-file", config={"max-size": "20m", "max-file": "1"}),
        )
        return container

    def _supervise(
        self,
        container: Container,
        request: AttemptRequest,
        sink: Sink,
        cancel: threading.Event,
        started: str,
        azure: AzurePlan | None = None,
    ) -> AttemptOutcome:
        written_back: str | None = None
        try:
            copied = self._copy_azure(container, request, azure)
        except ENGINE_ERRORS as exc:
            return self._engine_failure("copying ~/.azure", exc, started)
        except OSError as exc:  # the host's ~/.azure could not be read
            return AttemptOutcome(
                status="error", started_at=started, ended_at=now_iso(), error=_azure_error(exc)
            )
        try:
            stream = AttachedOutput(self.client.api, container.id)
            pump = OutputPump(stream, sink, name=f"out-{request.run_id[:40]}")
            pump.start()
            container.start()
            stopped_by = self._watch(container, pump, request.timeout, cancel)
            pump.join(DRAIN_SECONDS)
            if not pump.is_alive():  # closing under a reading thread would raise in it
                stream.close()  # free the socket now, not at garbage collection
            state = self._final_state(container)
            if state is not None and azure is not None and azure.write_back:
                written_back = _write_back(self.client, container.id, azure.folder, copied)
            if state is not None and self._wrote_artifacts(container):
                self._collect_artifacts(container, sink)
        except ENGINE_ERRORS as exc:
            return self._engine_failure("engine", exc, started)
        if isinstance(pump.failure, ENGINE_ERRORS):  # the stream broke, not our side of it
            return self._engine_failure("log stream", pump.failure, started)
        outcome = _outcome(state, stopped_by, pump.error, started)
        if written_back is not None:  # the run stands; the tokens it refreshed did not persist
            error = f"{outcome.error}; {written_back}" if outcome.error else written_back
            outcome = structs.replace(outcome, error=error)
        return outcome

    def _copy_azure(
        self, container: Container, request: AttemptRequest, azure: AzurePlan | None
    ) -> Copied:
        """The host's ~/.azure into the created container, when its plan says so."""
        if azure is None or not azure.copy_in:
            return {}
        uid, gid = (int(n) for n in container_user(request).split(":"))
        return copy_azure_dir(self.client, container.id, azure.folder, uid, gid)

    def _watch(
        self,
        container: Container,
        pump: OutputPump,
        timeout: int | None,
        cancel: threading.Event,
    ) -> str | None:
        """Waits while output flows; kills the container on timeout or cancellation."""
        deadline = time.monotonic() + timeout if timeout else None
        while pump.is_alive():
            pump.join(POLL_SECONDS)
            if cancel.is_set():
                kill_container(self.client, container.id)
                return "cancelled"
            if deadline is not None and time.monotonic() >= deadline:
                kill_container(self.client, container.id)
                return "timed_out"
        if pump.error is not None:
            # Its output can no longer be recorded (disk full, ...) and nothing would watch the
            # timeout any more: the run is an error either way, so it must not go on unseen.
            kill_container(self.client, container.id)
        return None

    def _final_state(self, container: Container) -> dict[str, Any] | None:
        """How the container ended; None when someone else removed it (`docker rm -f`, which
        kills it first: its exit code says nothing about the script)."""
        try:
            waited = self.client.api.wait(container.id, timeout=DRAIN_SECONDS)
            if waited.get("StatusCode") == 0:
                # A clean exit: neither the OOM killer nor a forced removal (both kill) ended
                # it, so the state needs no second request (one less call per trivial run).
                return {"ExitCode": 0, "OOMKilled": False}
            state: dict[str, Any] = self.client.api.inspect_container(container.id)["State"]
        except docker.errors.NotFound:
            return None
        return None if state.get("Status") in ("removing", "dead") else state

    def _wrote_artifacts(self, container: Container) -> bool:
        """Whether the script created anything in /safeagents/logs: the volume starts as a copy
        of the image's empty dir, whose mtime is the build's, and creating an entry there moves
        it past the container's creation. (Not its start: the engine records StartedAt only
        after the process runs, and a quick script has written by then.) A stat costs a few ms;
        the archive of even an empty dir costs tens, which would be a tenth of a trivial run."""
        try:
            response = self.client.api.head(
                self.client.api._url("/containers/{0}/archive", container.id),
                params={"path": LOGS_DIR},
            )
            self.client.api._raise_for_status(response)
            stat = json.loads(base64.b64decode(response.headers["X-Docker-Container-Path-Stat"]))
            return bool(go_time(stat["mtime"]) > go_time(container.attrs["Created"]))
        except (KeyError, ValueError):
            return True  # an engine that does not say: collect, to be safe

    def _collect_artifacts(self, container: Container, sink: Sink) -> None:
        try:
            chunks, _ = self.client.api.get_archive(container.id, LOGS_DIR)
        except docker.errors.NotFound:
            return  # removed meanwhile by someone else: nothing to collect
        sink.artifacts(chunks)

    def _engine_failure(self, stage: str, exc: BaseException, started: str) -> AttemptOutcome:
        """An engine error, told apart from a lost engine: one that did not answer (refused,
        reset, no socket) or that does not answer a ping now is lost. A restart can be over by
        the time of the ping, so the first reason alone suffices."""
        detail = one_line(exc, 500)
        if not isinstance(exc, requests.ConnectionError) and self.available():
            return AttemptOutcome(
                status="error",
                started_at=started,
                ended_at=now_iso(),
                error=f"engine error ({stage}): {detail}",
            )
        return AttemptOutcome(
            status="error",
            started_at=started,
            ended_at=now_iso(),
            error=f"engine lost: {detail}",
            engine_lost=True,
        )

    # -- removal -------------------------------------------------------------------------

    def _remove(self, container_id: str) -> str | None:
        """Removes now, or remembers it for when the engine answers again; returns why not."""
        try:
            remove_container(self.client, container_id)
        except (*ENGINE_ERRORS, OSError) as exc:
            with self._lock:
                self._unremoved.add(container_id)
            return one_line(exc)
        return None

    def _remove_unremoved(self) -> None:
        with self._lock:
            pending = list(self._unremoved)
        for container_id in pending:
            if self._remove(container_id) is None:
                with self._lock:
                    self._unremoved.discard(container_id)


def go_time(text: str) -> float:
    """Seconds since the epoch of an engine timestamp (RFC 3339, up to nanoseconds, which
    `datetime` does not take on every Python this supports)."""
    whole, _, rest = text.rstrip("Z").partition(".")
    fraction = rest.split("+")[0].split("-")[0]
    moment = datetime.fromisoformat(whole).replace(tzinfo=UTC)
    return moment.timestamp() + (float(f"0.{fraction}") if fraction else 0.0)


def _outcome(
    state: dict[str, Any] | None, stopped_by: str | None, pump_error: str | None, started: str
) -> AttemptOutcome:
    ended = now_iso()
    if stopped_by == "timed_out":
        return AttemptOutcome(
            status="timed_out", started_at=started, ended_at=ended, error="killed after the timeout"
        )
    if stopped_by == "cancelled":
        return AttemptOutcome(
            status="cancelled", started_at=started, ended_at=ended, error="cancelled by the user"
        )
    if state is None:
        return AttemptOutcome(
            status="error",
            started_at=started,
            ended_at=ended,
            error="the container was removed by someone else while it ran",
        )
    exit_code = int(state.get("ExitCode", -1))
    if state.get("OOMKilled"):
        return AttemptOutcome(
            status="failed",
            exit_code=exit_code,
            started_at=started,
            ended_at=ended,
            error="oom_killed",
        )
    if pump_error is not None:
        return AttemptOutcome(
            status="error",
            exit_code=exit_code,
            started_at=started,
            ended_at=ended,
            error=f"log stream broke: {pump_error}",
        )
    if exit_code == 0:
        return AttemptOutcome(status="succeeded", exit_code=0, started_at=started, ended_at=ended)
    return AttemptOutcome(
        status="failed",
        exit_code=exit_code,
        started_at=started,
        ended_at=ended,
        error=f"script exited with code {exit_code}",
    )


class OutputPump(threading.Thread):
    """Hands the container's demultiplexed output to the sink chunk by chunk, in arrival
    order: nothing is held whole in memory."""

    def __init__(
        self, stream: Iterable[tuple[bytes | None, bytes | None]], sink: Sink, name: str
    ) -> None:
        super().__init__(daemon=True, name=name)
        self.stream = stream
        self.sink = sink
        self.failure: Exception | None = None

    @property
    def error(self) -> str | None:
        return f"{type(self.failure).__name__}: {self.failure}" if self.failure else None

    def run(self) -> None:
        try:
            for stdout_chunk, stderr_chunk in self.stream:
                if stdout_chunk:
                    self.sink.stdout(stdout_chunk)
                if stderr_chunk:
                    self.sink.stderr(stderr_chunk)
        except Exception as exc:  # reported as the run's error; the thread must not die silently
            self.failure = exc


class AttachedOutput:
    """The container's output from its start, as (stdout, stderr) chunks: the SDK's `attach`
    less the inspect it makes to learn whether the container has a TTY (ours never have
    one), a request less per run."""

    def __init__(self, api: docker.APIClient, container_id: str) -> None:
        self._response = api._post(
            api._url("/containers/{0}/attach", container_id),
            headers={"Connection": "Upgrade", "Upgrade": "tcp"},
            # Live output only, attached before the start (as `docker run` does): with
            # `logs=1` the engine also replays its log file, and output written while that
            # replay runs arrives twice.
            params={"logs": 0, "stdout": 1, "stderr": 1, "stream": 1},
            stream=True,
        )
        chunks = api._read_from_socket(self._response, stream=True, tty=False, demux=True)
        self._stream = CancellableStream(chunks, self._response)

    def __iter__(self) -> Iterator[tuple[bytes | None, bytes | None]]:
        return iter(self._stream)

    def close(self) -> None:
        """The SDK's close shuts the socket but leaves the file the response reads it
        through open, and with it the descriptor, until garbage collection."""
        self._stream.close()
        self._response.close()


# Each `resources` limit and the HostConfig field that holds it once the engine applied it.
LIMIT_FIELDS = (("memory", "Memory"), ("pids", "PidsLimit"), ("cpus", "NanoCpus"))


def dropped_limits(attrs: dict[str, Any], resources: Resources) -> tuple[str, ...]:
    """The limits asked for that the created container does not have, as the engine's
    inspection says: rootless Podman on cgroup v1 accepts them and applies none."""
    host = attrs.get("HostConfig") or {}
    return tuple(
        f"resources.{name}"
        for name, field in LIMIT_FIELDS
        if getattr(resources, name) is not None and not host.get(field)
    )


def limits_refusal(job: str, dropped: tuple[str, ...]) -> str:
    return (
        f"job '{job}': {', '.join(dropped)}: the engine dropped this limit (rootless Podman "
        "on cgroup v1 applies none): not run; `enforce_limits: false` runs without it"
    )


def applied_runtime(container: Container) -> str | None:
    """The runtime the engine made the container with, as its inspection says."""
    runtime = (container.attrs.get("HostConfig") or {}).get("Runtime")
    return str(runtime) if runtime else None


def container_user(request: AttemptRequest) -> str:
    """The invoking user's uid:gid, so files are theirs; a fixed non-root uid when that is root;
    root itself only when the job turns `hardening.non_root` off."""
    if not request.hardening.non_root:
        return "0:0"
    if os.getuid() == 0:
        return f"{CONTAINER_UID}:{CONTAINER_UID}"
    return f"{os.getuid()}:{os.getgid()}"


def _azure(request: AttemptRequest) -> AzurePlan | None:
    if request.azure_dir is None:
        return None
    uid = int(container_user(request).split(":")[0])
    return azure_plan(request.azure_dir, request.azure_mode, uid)


def _azure_error(exc: OSError) -> str:
    return f"cannot copy ~/.azure into the container: {one_line(exc)}"


def _write_back(
    client: docker.DockerClient, container_id: str, folder: Path, copied: Copied
) -> str | None:
    """Writes the CLI's changes back to the host folder; returns why that failed, if it did."""
    try:
        write_back_azure_dir(client, container_id, folder, copied)
    except docker.errors.NotFound:
        return None  # removed by someone else meanwhile: that is the run's error already
    except (OSError, tarfile.TarError) as exc:
        return f"could not write ~/.azure back to {folder}: {one_line(exc)}"
    return None


def _mounts(request: AttemptRequest) -> list[Mount]:
    mounts = [
        Mount(CODE_DIR, str(request.code.path.resolve()), type="bind", read_only=True),
        # An anonymous volume, removed with the container: the script's files reach the host
        # only through the sink, which keeps regular files and directories alone.
        Mount(LOGS_DIR, None, type="volume"),
    ]
    return mounts


def through_gateway(
    models: ModelAccess,
    request: AttemptRequest,
    sink: Sink,
    host: str,
    attempt: Callable[[AttemptRequest], AttemptOutcome],
) -> AttemptOutcome:
    """`attempt` of a request whose container runs on another machine (a Ray or Slurm node),
    with a pass at this machine's model gateway on `host`: the gateway holds the credentials
    and paces each pool for the whole cluster; the node pipes its container's calls here
    (gateway/forward.py). The calls are counted here, wherever the attempt ends."""
    try:
        ticket = models.open_ticket(request, sink, host)
    except ModelSetupError as exc:
        return AttemptOutcome(
            status="error", started_at=now_iso(), ended_at=now_iso(), error=str(exc)
        )
    try:
        outcome = attempt(dataclasses.replace(request, gateway=ticket))
    finally:
        calls = models.close_token(ticket.token)  # the token dies with the attempt
    return with_calls(outcome, calls)


def with_calls(outcome: AttemptOutcome, calls: AttemptCalls) -> AttemptOutcome:
    """The outcome with its model usage; a run its cost limit stopped has `failed`, whatever
    its script made of the refusals."""
    if calls.stopped is None or outcome.status in ("timed_out", "cancelled", "error"):
        return structs.replace(outcome, usage=calls.usage)
    return structs.replace(outcome, usage=calls.usage, status="failed", error=calls.stopped)


def container_labels(request: AttemptRequest) -> dict[str, str]:
    return {
        **labels.owned(request.batch_id),
        labels.RUN: request.run_id,
        labels.ATTEMPT: str(request.attempt),
    }


def batch_container_infos(
    client: docker.DockerClient, batch_id: str | None = None
) -> list[dict[str, Any]]:
    """The engine's listing of containers the tool created (of one batch, when given)."""
    found: list[dict[str, Any]] = client.api.containers(
        all=True, filters={"label": labels.batch_filter(batch_id)}
    )
    return found


def batch_container_ids(client: docker.DockerClient, batch_id: str | None = None) -> list[str]:
    return [c["Id"] for c in batch_container_infos(client, batch_id)]


def kill_container(client: docker.DockerClient, container_id: str) -> None:
    try:
        client.api.kill(container_id)
    except docker.errors.NotFound:
        pass  # already gone: nothing to kill
    except docker.errors.APIError as exc:
        if exc.status_code != 409:  # 409: not running any more, which is what we wanted
            raise


def remove_container(client: docker.DockerClient, container_id: str) -> None:
    """Force-remove with its anonymous volumes; a container that is already gone is fine."""
    try:
        client.api.remove_container(container_id, force=True, v=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        if exc.status_code != 409 or "already in progress" not in str(exc):
            raise
