"""What a Slurm job runs on its node: one attempt through the very same DockerBackend as a local
run, on the node's own engine, its output written to the attempt's spool (backends/slurm/wire.py)
as it comes; also the per-node commands the driver runs with `srun` (sweep, clean).

The node reads nothing of the driver's but the batch dir on the shared filesystem: the order,
the code snapshot, the image archive. Its environment is its own (the job is submitted with
`--export=NONE`): its engine is the default socket or the node's DOCKER_HOST, or its Podman
service when the driver runs with `--engine podman`.

Called as `python -c ... main(argv)` with this package first on `sys.path`, the copy the
driver put in the batch dir for this batch (no stale package on a node).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import sys
import tarfile
import threading
import traceback
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from msgspec import structs

from safeagents_batch.backends.base import AttemptRequest, CleanRequest
from safeagents_batch.backends.slurm import wire
from safeagents_batch.core.clock import now_iso
from safeagents_batch.core.errors import one_line
from safeagents_batch.core.files import read_regular
from safeagents_batch.records.artifacts import ArtifactSelection
from safeagents_batch.records.model import AttemptOutcome

if TYPE_CHECKING:
    from safeagents_batch.backends.docker.backend import DockerBackend

ENGINE_ENV = "SAFEAGENTS_ENGINE"
CANCEL_POLL_SECONDS = 1.0
CHUNK_BYTES = 1 << 20


def main(argv: Sequence[str]) -> int:
    command, *rest = argv
    if command == "run":
        return run_spool(Path(rest[0]))
    if command == "sweep":
        print(_backend().sweep(rest[0]))
        return 0
    if command == "clean":
        for line in _backend().clean(CleanRequest(dry_run=rest[0] == "dry-run")):
            print(line)
        return 0
    print(f"unknown node command {command!r}", file=sys.stderr)
    return 2


def _backend() -> DockerBackend:
    """The node's engine (its Docker SDK imported only here)."""
    if os.environ.get(ENGINE_ENV) == "podman":
        from safeagents_batch.backends.docker.podman import use_podman

        use_podman()
    from safeagents_batch.backends.docker.backend import DockerBackend

    return DockerBackend.from_env()


# -- one attempt ------------------------------------------------------------------------


def run_spool(spool: Path) -> int:
    """The attempt of `spool` to its end; its outcome file is the last thing written. A
    SIGTERM (scancel), or a `cancel` file from the driver, stops it: the container is killed
    and removed. The outcome says `cancelled` when the driver asked (its cancel file), and
    `error` when Slurm alone stopped the job (its time limit, a preemption). A spool the
    driver gave up on (its cancel file says `abandoned`) is removed once the attempt ended."""
    started = now_iso()
    directory = wire.open_spool(spool)
    cancel = threading.Event()
    _cancel_on_signals(cancel)
    watcher = threading.Thread(
        target=_watch_cancel_file, args=(directory, cancel), daemon=True, name="cancel-file"
    )
    watcher.start()
    try:
        result = _attempt(directory, spool, cancel, started)
    except BaseException as exc:  # whatever it was, the driver gets it as the run's error
        _write(directory, wire.TRACEBACK, "".join(traceback.format_exception(exc)).encode())
        result = wire.NodeOutcome(outcome=_error(started, f"node error: {one_line(exc)}"))
    info = {
        "host": socket.gethostname(),
        "slurm_node": os.environ.get("SLURMD_NODENAME", ""),
        "slurm_job": os.environ.get("SLURM_JOB_ID", ""),
    }
    asked = _read_cancel(directory)
    outcome = final_outcome(result.outcome, asked is not None)
    outcome = structs.replace(outcome, node={**(outcome.node or {}), **info})
    wire.write_private(directory, wire.OUTCOME, wire.encode_outcome(
        structs.replace(result, outcome=outcome)
    ))  # fmt: skip
    os.close(directory)
    if asked == wire.ABANDONED:  # the driver recorded the attempt already; nobody reads this
        shutil.rmtree(spool, ignore_errors=True)
    return 0


def final_outcome(outcome: AttemptOutcome, driver_asked: bool) -> AttemptOutcome:
    """A `cancelled` the driver did not ask for is Slurm's doing: an `error` (retried as the
    job's `retry_on` says), never the user's Ctrl-C."""
    if outcome.status != "cancelled" or driver_asked:
        return outcome
    reason = (
        "stopped by Slurm before the attempt ended (a SIGTERM: the job's time limit, a "
        "preemption, or an scancel from outside this batch)"
    )
    return structs.replace(outcome, status="error", error=reason)


def _read_cancel(directory: int) -> bytes | None:
    """What the driver's cancel file says; None when there is none."""
    try:
        return read_regular(Path(wire.CANCEL), 64, dir_fd=directory)
    except OSError:
        return None


def _cancel_on_signals(cancel: threading.Event) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        cancel.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
        signal.signal(sig, handler)


def _watch_cancel_file(directory: int, cancel: threading.Event) -> None:
    """The driver's cancel file, or the spool itself gone (removed: no one follows it)."""
    while not cancel.wait(CANCEL_POLL_SECONDS):
        with contextlib.suppress(OSError):
            if os.fstat(directory).st_nlink == 0:
                cancel.set()
            os.stat(wire.CANCEL, dir_fd=directory)
            cancel.set()


def _attempt(
    directory: int, spool: Path, cancel: threading.Event, started: str
) -> wire.NodeOutcome:
    order = _take_order(directory, spool)
    request = order.request
    backend = _backend()
    try:
        if not _has_image(backend, request.image):
            if order.image_archive is None:
                error = f"image {request.image} is not on this node"
                return wire.NodeOutcome(outcome=_error(started, error), image_missing=True)
            _load_once(backend, request.image, Path(order.image_archive))
        with _azure_copy(directory, order, request) as azure_dir:
            local = replace(request, azure_dir=azure_dir)
            sink = SpoolSink(directory, request.artifact_limit, request.artifact_files)
            try:
                return wire.NodeOutcome(outcome=_run(backend, local, sink, cancel))
            finally:
                sink.close()
    finally:
        backend.close()


@contextlib.contextmanager
def _azure_copy(
    directory: int, order: wire.Order, request: AttemptRequest
) -> Iterator[Path | None]:
    """The driver's ~/.azure for this attempt, in a directory of this node's own (mode 0700,
    owned by the container's user), removed after it; the spool's copy is removed at once."""
    if not order.azure:
        yield None
        return
    from safeagents_batch.backends.docker.azure import private_copy
    from safeagents_batch.backends.docker.backend import container_user

    data = read_regular(Path(wire.AZURE), wire.MAX_ORDER_BYTES, dir_fd=directory)
    os.unlink(wire.AZURE, dir_fd=directory)
    with private_copy(data, container_user(request), None, "sab-azure-") as target:
        yield target


def _take_order(directory: int, spool: Path) -> wire.Order:
    """The order, read once and removed: the env values in it live on no disk longer than it
    takes the node to read them."""
    data = read_regular(Path(wire.ORDER), wire.MAX_ORDER_BYTES, dir_fd=directory)
    os.unlink(wire.ORDER, dir_fd=directory)
    return wire.decode_order(data)


def _run(
    backend: DockerBackend, request: AttemptRequest, sink: SpoolSink, cancel: threading.Event
) -> AttemptOutcome:
    """The attempt in a thread of its own: the main thread stays free for the signals that
    cancel it (a handler runs only between the main thread's bytecodes)."""
    box: list[AttemptOutcome] = []
    failure: list[BaseException] = []

    def work() -> None:
        try:
            box.append(backend.run(request, sink, cancel))
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=work, name="attempt")
    thread.start()
    while thread.is_alive():
        thread.join(0.2)
    if failure:
        raise failure[0]
    return box[0]


# -- images -----------------------------------------------------------------------------


def _has_image(backend: DockerBackend, tag: str) -> bool:
    import docker.errors

    try:
        backend.client.api.inspect_image(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


@contextlib.contextmanager
def shared_lock(path: Path) -> Iterator[None]:
    """An exclusive POSIX record lock (fcntl.lockf), which NFS carries between machines
    (flock may be local to each client there)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _load_once(backend: DockerBackend, tag: str, archive: Path) -> None:
    """`docker load` of the archive, once per node: under a lock per node on the shared
    filesystem, the image checked again once it is taken (another job of this node may have
    loaded it meanwhile)."""
    from safeagents_batch.backends.docker.images import load_archive

    lock = archive.parent / f"load-{socket.gethostname()}.lock"
    with shared_lock(lock):
        if _has_image(backend, tag):
            return
        with archive.open("rb") as data:
            load_archive(backend.client.api, data, tag)
    if not _has_image(backend, tag):
        raise RuntimeError(f"docker load of {archive.name} did not give {tag}")


# -- the sink ---------------------------------------------------------------------------


class SpoolSink:
    """The Sink of an attempt on a node: output appended to the spool's `output` as frames,
    written to the kernel at once (the driver tails it); the artifacts' archive read here by
    the same rules as on the driver (records/artifacts.py), only what they keep written to
    `artifacts.tar`, the rest listed in `dropped`."""

    def __init__(self, directory: int, artifact_limit: int, file_limit: int) -> None:
        self.directory = directory
        self.artifact_limit = artifact_limit
        self.file_limit = file_limit
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
        self._output = os.open(wire.OUTPUT, flags, 0o600, dir_fd=directory)
        self._dropped: list[str] = []

    def stdout(self, chunk: bytes) -> None:
        self._frame(wire.STDOUT, chunk)

    def stderr(self, chunk: bytes) -> None:
        self._frame(wire.STDERR, chunk)

    def _frame(self, stream: int, chunk: bytes) -> None:
        for start in range(0, len(chunk), CHUNK_BYTES):
            data = wire.frame(stream, chunk[start : start + CHUNK_BYTES])
            view = memoryview(data)
            while view:
                view = view[os.write(self._output, view) :]

    def traceback(self, text: str) -> None:
        _write(self.directory, wire.TRACEBACK, text.encode(errors="replace"))

    def artifacts(self, tar_chunks: Iterable[bytes], *, selected: bool = False) -> None:
        selection = ArtifactSelection(self.artifact_limit, self.file_limit)
        temp = f".{wire.ARTIFACTS}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(temp, flags, 0o600, dir_fd=self.directory)
        with (
            os.fdopen(fd, "wb") as out,
            tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as kept,
        ):

            def keep(tar: tarfile.TarFile, member: tarfile.TarInfo, rel: Sequence[str]) -> str:
                kept.addfile(member, tar.extractfile(member) if member.isreg() else None)
                return ""

            selection.select(tar_chunks, keep)
        os.rename(temp, wire.ARTIFACTS, src_dir_fd=self.directory, dst_dir_fd=self.directory)
        self._dropped += selection.dropped

    def not_kept(self, line: str) -> None:
        self._dropped.append(line)

    def model_call(self, line: bytes) -> None:
        raise RuntimeError("a Slurm node records no model calls: the driver's gateway does")

    def close(self) -> None:
        if self._dropped:
            _write(self.directory, wire.DROPPED, "\n".join(self._dropped).encode())
        if self._output >= 0:
            os.close(self._output)
            self._output = -1


def _write(directory: int, name: str, data: bytes) -> None:
    wire.write_private(directory, name, data)


def _error(started: str, reason: str) -> AttemptOutcome:
    return AttemptOutcome(status="error", started_at=started, ended_at=now_iso(), error=reason)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
