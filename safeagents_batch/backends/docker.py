"""Run one request in a Docker container through the SDK: create with labels, stream logs to
files while it runs, enforce the timeout by killing the container, always remove it."""

from __future__ import annotations

import os
import secrets
import socket
import stat
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO

import docker
import docker.errors
import requests
from docker.models.containers import Container
from docker.types import LogConfig, Mount

from safeagents_batch.backends import RunRequest, RunResult
from safeagents_batch.errors import one_line
from safeagents_batch.image_store import LABEL_PREFIX
from safeagents_batch.images import CODE_DIR, CONTAINER_HOME, CONTAINER_UID, LOGS_DIR
from safeagents_batch.manifest import now_iso

POLL_SECONDS = 0.2
DRAIN_SECONDS = 30
_SET_ID = stat.S_ISUID | stat.S_ISGID


class DockerBackend:
    """Stateless apart from the client; safe to call from many worker threads at once."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client

    def run(self, request: RunRequest, cancel: threading.Event) -> RunResult:
        started = now_iso()
        request.log_dir.mkdir(parents=True, exist_ok=True)
        unreadable = unreadable_by_container(request)
        if unreadable is not None:
            return RunResult("error", None, started, now_iso(), unreadable)
        with _log_dir_open_to_container(request):
            try:
                container = self._create(request)
            except docker.errors.DockerException as exc:
                return RunResult("error", None, started, now_iso(), _reason("create", exc))
            result = self._supervise(container, request, cancel, started)
            try:
                remove_container(self.client, container.id)
            except docker.errors.DockerException as exc:
                # The run's outcome stands; the leftover is reported and `clean` can remove it.
                note = f"container {container.short_id} not removed: {_reason('remove', exc)}"
                result = replace(result, error=f"{result.error}; {note}" if result.error else note)
            return result

    def _create(self, request: RunRequest) -> Container:
        resources = request.resources
        container: Container = self.client.containers.create(
            image=request.image,
            command=["python", f"{CODE_DIR}/{real_script(request).name}"],
            name=f"sab-{request.run_id[:80]}-{secrets.token_hex(3)}",
            working_dir=CODE_DIR,
            environment=request.env,
            user=container_user(request),
            labels=container_labels(request),
            mounts=_mounts(request),
            network_mode=request.network,
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
            tmpfs={"/tmp": "rw,nosuid,nodev,size=512m"} if request.read_only_rootfs else None,
            # We keep our own log files; the engine's copy is only a bounded safety net.
            log_config=LogConfig(type="json-file", config={"max-size": "20m", "max-file": "1"}),
        )
        return container

    def _supervise(
        self, container: Container, request: RunRequest, cancel: threading.Event, started: str
    ) -> RunResult:
        try:
            stream = self.client.api.attach(
                container.id, stdout=True, stderr=True, stream=True, logs=True, demux=True
            )
            pump = LogPump(stream, request.log_dir)
            pump.start()
            container.start()
            stopped_by = self._watch(container, pump, request.timeout, cancel)
            pump.join(DRAIN_SECONDS)
            if not pump.is_alive():  # closing under a reading thread would raise in it
                stream.close()  # free the socket now, not at garbage collection
            state = self._final_state(container)
        except (docker.errors.DockerException, requests.RequestException) as exc:
            # RequestException: the engine did not answer in time (e.g. the wait above).
            return RunResult("error", None, started, now_iso(), _reason("engine", exc))
        return _result(state, stopped_by, pump.error, started)

    def _watch(
        self, container: Container, pump: LogPump, timeout: int | None, cancel: threading.Event
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
            self.client.api.wait(container.id, timeout=DRAIN_SECONDS)
            state: dict[str, Any] = self.client.api.inspect_container(container.id)["State"]
        except docker.errors.NotFound:
            return None
        return None if state.get("Status") in ("removing", "dead") else state


def _result(
    state: dict[str, Any] | None, stopped_by: str | None, pump_error: str | None, started: str
) -> RunResult:
    ended = now_iso()
    if stopped_by == "timed_out":
        return RunResult("timed_out", None, started, ended, "killed after the timeout")
    if stopped_by == "cancelled":
        return RunResult("cancelled", None, started, ended, "cancelled by the user")
    if state is None:
        return RunResult(
            "error", None, started, ended, "the container was removed by someone else while it ran"
        )
    exit_code = int(state.get("ExitCode", -1))
    if state.get("OOMKilled"):
        return RunResult("failed", exit_code, started, ended, "oom_killed")
    if pump_error is not None:
        return RunResult("error", exit_code, started, ended, f"log stream broke: {pump_error}")
    if exit_code == 0:
        return RunResult("succeeded", 0, started, ended)
    return RunResult("failed", exit_code, started, ended, f"script exited with code {exit_code}")


class LogPump(threading.Thread):
    """Copies the container's demultiplexed output to stdout.log, stderr.log and console.log
    (both, in arrival order) chunk by chunk: nothing is held whole in memory."""

    def __init__(self, stream: Iterable[tuple[bytes | None, bytes | None]], log_dir: Path) -> None:
        super().__init__(daemon=True, name=f"logs-{log_dir.name}")
        self.stream = stream
        self.log_dir = log_dir
        self.error: str | None = None

    def run(self) -> None:
        try:
            with _log_files(self.log_dir) as (out, err, console):
                for stdout_chunk, stderr_chunk in self.stream:
                    for chunk, target in ((stdout_chunk, out), (stderr_chunk, err)):
                        if chunk:
                            target.write(chunk)
                            console.write(chunk)
                            # Now, not later: the next chunk may be minutes away, and until
                            # then the files must show what the script said (tail -f, a crash).
                            target.flush()
                            console.flush()
        except Exception as exc:  # reported as the run's error; the thread must not die silently
            self.error = f"{type(exc).__name__}: {exc}"


@contextmanager
def _log_files(log_dir: Path) -> Iterator[tuple[Any, Any, Any]]:
    with (
        _open_no_link(log_dir / "stdout.log") as out,
        _open_no_link(log_dir / "stderr.log") as err,
        _open_no_link(log_dir / "console.log") as console,
    ):
        yield out, err, console


def _open_no_link(path: Path) -> BinaryIO:
    """For writing, never through a symlink: the script (and others, while the dir is open to
    the container) can plant one in the log dir, aimed at a host file we would then overwrite."""
    return os.fdopen(
        os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o666), "wb"
    )


def container_user(request: RunRequest) -> str:
    """The invoking user's uid:gid, so files are theirs; a fixed non-root uid when that is root;
    root itself only when the job turns `hardening.non_root` off."""
    if not request.hardening.non_root:
        return "0:0"
    if os.getuid() == 0:
        return f"{CONTAINER_UID}:{CONTAINER_UID}"
    return f"{os.getuid()}:{os.getgid()}"


def _runs_as_other_uid(request: RunRequest) -> bool:
    """Only root runs the container as a uid other than its own (see container_user)."""
    return os.getuid() == 0 and container_user(request) != "0:0"


def unreadable_by_container(request: RunRequest) -> str | None:
    """As root we run the container as another uid, which sees the script through its
    permission bits for "others" only: say so plainly instead of a Python traceback."""
    script = real_script(request)
    if _runs_as_other_uid(request) and not readable_by_others(script):
        return (
            f"{script} is not readable by the container user (uid {CONTAINER_UID}): "
            f"chmod o+r it and o+rx its directory, or set hardening.non_root: false"
        )
    return None


def readable_by_others(script: Path) -> bool:
    """What a uid other than the owner's needs: o+r on the file, o+rx on its directory."""
    return bool(script.stat().st_mode & 0o004) and script.parent.stat().st_mode & 0o005 == 0o005


@contextmanager
def _log_dir_open_to_container(request: RunRequest) -> Iterator[None]:
    """When we run as root the container's uid differs from ours: open the log dir to it with
    the sticky bit (it can add files but not delete ours), then hand everything back to us."""
    opened = _runs_as_other_uid(request)
    if opened:
        request.log_dir.chmod(0o1777)
    try:
        yield
    finally:
        defuse(request.log_dir)
        if opened:
            request.log_dir.chmod(0o755)
            give_back_to_invoker(request.log_dir)


def defuse(directory: Path) -> None:
    """The log dir is a host path the script writes: root in a relaxed container can leave a
    setuid-root executable or a device node there, real on the host. Clear set-id bits and
    remove device nodes once the container is gone; what cannot be changed is removed."""
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = os.path.join(root, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISBLK(mode) or stat.S_ISCHR(mode):
                os.unlink(path)
            elif mode & _SET_ID and not stat.S_ISLNK(mode):
                try:
                    os.chmod(path, stat.S_IMODE(mode) & ~_SET_ID)
                except PermissionError:  # another owner's file (root's, when we are not root)
                    os.unlink(path)


def give_back_to_invoker(directory: Path) -> None:
    uid, gid = os.getuid(), os.getgid()
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            os.lchown(os.path.join(root, name), uid, gid)


def real_script(request: RunRequest) -> Path:
    """The script with symlinks resolved: a link's target is outside the mounted dir of the
    link. Its dir is mounted, as Python itself puts the real dir first on sys.path."""
    return request.script.resolve()


def _mounts(request: RunRequest) -> list[Mount]:
    mounts = [
        Mount(CODE_DIR, str(real_script(request).parent), type="bind", read_only=True),
        Mount(LOGS_DIR, str(request.log_dir.resolve()), type="bind", read_only=False),
    ]
    if request.azure_dir is not None:
        mounts.append(
            Mount(
                f"{CONTAINER_HOME}/.azure",
                str(request.azure_dir.resolve()),
                type="bind",
                read_only=request.azure_mode != "rw",
            )
        )
    return mounts


def container_labels(request: RunRequest) -> dict[str, str]:
    return {
        f"{LABEL_PREFIX}.managed": "true",
        f"{LABEL_PREFIX}.batch": request.batch_id,
        f"{LABEL_PREFIX}.run": request.run_id,
        f"{LABEL_PREFIX}.attempt": str(request.attempt),
        # Lets `clean` tell a leftover from a container of a batch that is still running.
        f"{LABEL_PREFIX}.host": socket.gethostname(),
        f"{LABEL_PREFIX}.pid": str(os.getpid()),
    }


def kill_container(client: docker.DockerClient, container_id: str) -> None:
    try:
        client.api.kill(container_id)
    except docker.errors.NotFound:
        pass  # already gone: nothing to kill
    except docker.errors.APIError as exc:
        if exc.status_code != 409:  # 409: not running any more, which is what we wanted
            raise


def remove_container(client: docker.DockerClient, container_id: str) -> None:
    """Force-remove; a container that is already gone is fine."""
    try:
        client.api.remove_container(container_id, force=True, v=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        if exc.status_code != 409 or "already in progress" not in str(exc):
            raise


def _reason(stage: str, exc: Exception) -> str:
    return f"engine error ({stage}): {one_line(exc, 500)}"
