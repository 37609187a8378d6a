"""What runs on a Ray node: the batch's agent there (one actor per node), and each attempt on
the node's own Docker engine through the very same DockerBackend as a local run, with a sink
that hands chunks back to the driver as the items of a streaming call. Code, images and Azure
credentials arrive through Ray and are cached on the node, once per digest (or tag), under a
lock that is checked again once taken.

Nothing here reads a driver path: a node may be another machine. Env values arrive inside the
call's arguments (never in a task name, a runtime env or a log line) and go to the engine's
API as the container's environment.
"""

from __future__ import annotations

import contextlib
import io
import os
import queue
import socket
import tarfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

from safeagents_batch.backends.base import AttemptRequest, CleanRequest
from safeagents_batch.backends.docker.azure import private_copy
from safeagents_batch.backends.docker.backend import (
    ENGINE_ERRORS,
    DockerBackend,
    batch_container_ids,
    container_user,
    engine_url,
    remove_container,
)
from safeagents_batch.backends.docker.images import load_archive, stream_error
from safeagents_batch.backends.ray.boot import file_lock, node_cache, unpacked_once
from safeagents_batch.backends.ray.items import (
    Art,
    ArtDrop,
    Chunk,
    Done,
    Err,
    Item,
    NoImage,
    Out,
    Trace,
)
from safeagents_batch.backends.ray.remote import from_exception
from safeagents_batch.core.clock import now_iso
from safeagents_batch.core.errors import EngineUnavailable, one_line
from safeagents_batch.core.files import raise_open_files_limit
from safeagents_batch.core.tarsafe import extract
from safeagents_batch.records.artifacts import ArtifactSelection
from safeagents_batch.records.model import AttemptOutcome
from safeagents_batch.staging.code import StagedCode

CHUNK_BYTES = 256 * 1024  # output is coalesced up to this much per streamed item
POLL_SECONDS = 0.2
JOIN_SECONDS = 60  # for the attempt thread to kill and remove its container once cancelled

# One DockerBackend per Ray worker process: its client pool and its memory of containers the
# engine failed to remove outlive one attempt.
_backend: DockerBackend | None = None
_backend_lock = threading.Lock()


def node_backend() -> DockerBackend:
    global _backend
    with _backend_lock:
        if _backend is None:
            _backend = DockerBackend.from_env()  # DOCKER_HOST of the node, or its socket
        return _backend


def node_info() -> dict[str, str]:
    return {
        "node_id": ray.get_runtime_context().get_node_id(),
        "host": socket.gethostname(),
        "engine": engine_url(),
    }


# -- code -------------------------------------------------------------------------------


def code_dir(digest: str, tar_box: list[Any]) -> Path:
    """The node's copy of a code snapshot; unpacked from the driver's tar on first use."""
    root = node_cache() / "code"
    root.mkdir(mode=0o700, exist_ok=True)

    def untar(staging: Path) -> None:
        unpack(ray.get(tar_box[0]), staging)
        # Readable by the container's user: the snapshot is bind-mounted, and only the mount
        # itself is traversed in the container (the 0700 cache above it keeps others out).
        os.chmod(staging, 0o755)

    return unpacked_once(root, digest, untar)


def unpack(data: bytes, target: Path) -> None:
    """Regular files and directories only, nothing outside `target`, on every Python the
    package supports (tarfile's `data` filter is missing from Debian 12's 3.11.2)."""
    extract(io.BytesIO(data), target)


@contextlib.contextmanager
def azure_copy(tar_box: list[Any], request: AttemptRequest) -> Iterator[Path | None]:
    """A copy of the driver's ~/.azure for one attempt (None when none was shipped), private
    to the container's user (mode 0700, owned by that uid) and removed after it."""
    if not tar_box:
        yield None
        return
    user = container_user(request)
    with private_copy(ray.get(tar_box[0]), user, node_cache(), "azure-") as target:
        yield target


# -- images -----------------------------------------------------------------------------


def has_image(tag: str) -> bool:
    import docker.errors

    try:
        node_backend().client.api.inspect_image(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def load_image(tag: str, data: bytes) -> bool:
    """`docker load` of the driver's `docker save`, once per node; False if it was there."""
    lock = node_cache() / "images.lock"
    with file_lock(lock):
        if has_image(tag):
            return False
        load_archive(node_backend().client.api, data, tag)
    return True


def pull_image(tag: str, remote_tag: str) -> bool:
    """Pulls `remote_tag` from the registry and tags it as `tag`; False if `tag` was there."""
    import docker.errors

    with file_lock(node_cache() / "images.lock"):
        if has_image(tag):
            return False
        api = node_backend().client.api
        repository, _, version = remote_tag.rpartition(":")
        try:
            for message in api.pull(repository, tag=version, stream=True, decode=True):
                if "error" in message or "errorDetail" in message:
                    raise RuntimeError(f"docker pull of {remote_tag}: {stream_error(message)}")
        except docker.errors.APIError as exc:  # the engine refused at once (e.g. no registry)
            raise RuntimeError(f"docker pull of {remote_tag}: {exc.explanation or exc}") from None
        name, _, local_version = tag.rpartition(":")
        api.tag(remote_tag, name, local_version)
        api.remove_image(remote_tag)  # only the name; the layers stay under `tag`
    return True


# -- sweeping and cleaning --------------------------------------------------------------


def sweep(batch_id: str) -> int:
    """The batch's containers and network gone; its pipes to the driver's model gateway
    closed and their socket dir removed, as this process may be killed, not closed."""
    backend = node_backend()
    try:
        return backend.sweep(batch_id)
    finally:
        backend.models.close()


def clean_lines(dry_run: bool) -> list[str]:
    """`clean` of this node's engine: its leftover containers (images stay: nodes keep the
    ones shipped to them). A plain argument: Ray unpickles it before the package is here."""
    return node_backend().clean(CleanRequest(dry_run=dry_run))


def batch_containers(batch_id: str) -> list[str]:
    return batch_container_ids(node_backend().client, batch_id)


def remove(container_id: str) -> None:
    remove_container(node_backend().client, container_id)


# -- one attempt ------------------------------------------------------------------------


class QueueSink:
    """The Sink of a remote attempt: every call becomes an item for the driver, in order.
    The artifacts' archive is read here by the same rules as on the driver
    (records/artifacts.py): only what they keep is sent, as a tar of its own, in pieces, then
    a line for each entry not kept. So a huge file, or a flood of empty ones, costs the
    cluster's network nothing, and what comes after it still arrives."""

    def __init__(self, items: queue.Queue[Item], artifact_limit: int, file_limit: int) -> None:
        self.items = items
        self.artifact_limit = artifact_limit
        self.file_limit = file_limit

    def stdout(self, chunk: bytes) -> None:
        self.items.put(Out(chunk))

    def stderr(self, chunk: bytes) -> None:
        self.items.put(Err(chunk))

    def traceback(self, text: str) -> None:
        self.items.put(Trace(text))

    def artifacts(self, tar_chunks: Iterable[bytes], *, selected: bool = False) -> None:
        selection = ArtifactSelection(self.artifact_limit, self.file_limit)
        pieces = _ArtPieces(self.items)
        with tarfile.open(
            fileobj=pieces, mode="w|", bufsize=CHUNK_BYTES, format=tarfile.PAX_FORMAT
        ) as kept:

            def keep(tar: tarfile.TarFile, member: tarfile.TarInfo, rel: Sequence[str]) -> str:
                kept.addfile(member, tar.extractfile(member) if member.isreg() else None)
                return ""

            selection.select(tar_chunks, keep)
        for line in selection.dropped:
            self.items.put(ArtDrop(line))

    def not_kept(self, line: str) -> None:
        self.items.put(ArtDrop(line))

    def model_call(self, line: bytes) -> None:
        # A node's attempts hold passes at the driver's gateway, which records their calls
        # in the driver's sink; nothing on a node opens a pass of its own.
        raise RuntimeError("a node records no model calls: the driver's gateway does")

    def close(self) -> None:
        pass


class _ArtPieces(io.RawIOBase):
    """What tarfile writes (CHUNK_BYTES at a time), as Art items for the driver."""

    def __init__(self, items: queue.Queue[Item]) -> None:
        super().__init__()
        self.items = items

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer) -> int:
        piece = bytes(data)
        self.items.put(Art(piece))
        return len(piece)


class NodeAgent:
    """The batch's worker on one node: a threaded Ray actor that holds the node's container
    slots while the batch runs and runs each attempt as a streaming method call. One process
    per node and batch, started once: a Ray task per attempt would start a Python worker per
    slot (Ray, this package and the Docker SDK imported in each) and ask the raylet for a
    lease every attempt, and on a small node that CPU is taken from the containers."""

    def __init__(self) -> None:
        raise_open_files_limit()  # its containers' model calls are piped through here
        self._lock = threading.Lock()
        self._cancels: dict[str, threading.Event] = {}
        # Cancels that came before their attempt's call began (Ctrl-C right after it was sent).
        self._cancelled_early: set[str] = set()

    def ready(self) -> dict[str, str]:
        """Where it runs, once its engine client is made (before the first attempt needs it)."""
        node_backend()
        return node_info()

    def run_attempt(
        self, key: str, request: AttemptRequest, code_box: list[Any], azure_box: list[Any]
    ) -> Iterator[Item]:
        cancel = threading.Event()
        with self._lock:
            self._cancels[key] = cancel
            if key in self._cancelled_early:
                self._cancelled_early.discard(key)
                cancel.set()
        try:
            yield from run_attempt(request, code_box, azure_box, cancel)
        finally:
            with self._lock:
                del self._cancels[key]

    def cancel(self, key: str) -> None:
        """Ctrl-C on the driver: the attempt kills and removes its container, then ends
        `cancelled`. An explicit call, because Ray does not interrupt a threaded actor's call."""
        with self._lock:
            cancel = self._cancels.get(key)
            if cancel is None:
                self._cancelled_early.add(key)
        if cancel is not None:
            cancel.set()

    def call(self, function: Callable[..., Any], *args: Any) -> Any:
        """One of this module's node functions (an image check, a load, a sweep) in this
        process, so the batch starts no other worker on the node."""
        return function(*args)


def run_attempt(
    request: AttemptRequest, code_box: list[Any], azure_box: list[Any], cancel: threading.Event
) -> Iterator[Item]:
    """The body of an agent's streaming call: yields the output as it comes, then the
    outcome. Once `cancel` is set (Ctrl-C on the driver), or when the caller closes the
    generator, the attempt kills and removes its container before it ends. A failure before
    the container starts (code, Azure copy, image check) ends the attempt at once, with its
    cause and its traceback."""
    started = now_iso()
    with contextlib.ExitStack() as stack:
        try:
            backend = node_backend()
            code = StagedCode(request.code.digest, code_dir(request.code.digest, code_box))
            azure_dir = stack.enter_context(azure_copy(azure_box, request))
            image_here = has_image(request.image)
        except (EngineUnavailable, *ENGINE_ERRORS) as exc:
            yield Done(_error(started, f"node engine unavailable: {one_line(exc)}"))
            return
        except Exception as exc:
            yield from _failed(started, "on the node, before the container started", exc)
            return
        if not image_here:
            # The driver ships it here and submits the attempt again: this node joined, or
            # lost the image, after the batch's images went out.
            yield NoImage(request.image)
            yield Done(_error(started, f"image {request.image} is not on this node"))
            return
        local = replace(request, code=code, azure_dir=azure_dir)
        yield from _supervised(backend, local, cancel)


def _failed(started: str, context: str, exc: BaseException) -> Iterator[Item]:
    """An error raised here: its traceback for the attempt's dir, its cause in one line."""
    error = from_exception(exc)
    yield Trace(error.traceback)
    yield Done(_error(started, f"{context}: {error.line()}"))


def _supervised(
    backend: DockerBackend, request: AttemptRequest, cancel: threading.Event
) -> Iterator[Item]:
    items: queue.Queue[Item] = queue.Queue()
    sink = QueueSink(items, request.artifact_limit, request.artifact_files)

    def attempt() -> None:
        try:
            items.put(Done(backend.run(request, sink, cancel)))
        except Exception as exc:  # the driver gets it as the run's error, not a dead task
            for item in _failed(now_iso(), "node error", exc):
                items.put(item)

    thread = threading.Thread(target=attempt, name="attempt", daemon=True)
    thread.start()
    try:
        yield from _drain(items)
    finally:
        cancel.set()  # a no-op once the outcome is in; otherwise: kill, remove, then end
        thread.join(JOIN_SECONDS)


def _drain(items: queue.Queue[Item]) -> Iterator[Item]:
    """Items in order until the outcome; consecutive chunks of one stream are coalesced, so a
    chatty script costs a few objects per second, not one per line."""
    held: Item | None = None
    while True:
        try:
            # Never an unbounded wait: a generator the driver closed must reach its `finally`.
            item = items.get(timeout=POLL_SECONDS if held is None else 0)
        except queue.Empty:
            if held is not None:
                yield held
                held = None
            continue
        joined = _joined(held, item)
        if joined is not None:
            held = joined
            continue
        if held is not None:
            yield held
        if isinstance(item, Done):
            yield item
            return
        held = item


def _joined(held: Item | None, item: Item) -> Chunk | None:
    """`held` and `item` as one chunk, when both are output of one stream and fit in one."""
    if not isinstance(held, Out | Err) or type(item) is not type(held):
        return None
    assert isinstance(item, Out | Err)
    if len(held.chunk) + len(item.chunk) > CHUNK_BYTES:
        return None
    return type(held)(held.chunk + item.chunk)


def _error(started: str, reason: str) -> AttemptOutcome:
    return AttemptOutcome(status="error", started_at=started, ended_at=now_iso(), error=reason)
