"""The Ray backend: each attempt is a streaming call on the batch's agent on a node that offers
the custom resource `docker` (backends/ray/agents.py), run there by the node's own
DockerBackend (backends/ray/node.py).

Images are built once, on the driver's engine, and reach the nodes that lack them through Ray
(`docker save`, put in the object store once, `docker load` once per node) or, with a
registry, by one push and a pull per node. Code goes as one tar per digest, put once; each
node unpacks it once into its cache. This package itself reaches the nodes the same way, as
one zip per batch (backends/ray/boot.py): a node needs this package's dependencies (the
`[ray]` extra installed), not the package itself, and so never runs a stale copy of it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import ray
import ray.cloudpickle
import ray.exceptions
import ray.util
from msgspec import structs
from ray._private.services import canonicalize_bootstrap_address_or_die

from safeagents_batch.backends.base import (
    QUIET_BUILD,
    AttemptRequest,
    BuildProgress,
    CleanRequest,
    Sink,
)
from safeagents_batch.backends.docker.backend import ENGINE_ERRORS, DockerBackend, through_gateway
from safeagents_batch.backends.docker.images import stream_error
from safeagents_batch.backends.ray import boot as ray_boot
from safeagents_batch.backends.ray import node as ray_node
from safeagents_batch.backends.ray.agents import (
    RESOURCE,
    Agent,
    AgentBoard,
    ClusterUnanswered,
    NoAgent,
    described,
    docker_nodes,
    live_nodes,
    on_node,
)
from safeagents_batch.backends.ray.auth import require_token_auth
from safeagents_batch.backends.ray.boot import Shipment
from safeagents_batch.backends.ray.items import (
    Art,
    ArtDrop,
    Done,
    Err,
    Item,
    NoImage,
    Out,
    Trace,
)
from safeagents_batch.backends.ray.remote import RemoteError
from safeagents_batch.core.clock import now_iso
from safeagents_batch.core.errors import EngineUnavailable, UsageError, one_line
from safeagents_batch.core.files import open_log
from safeagents_batch.core.once import OncePerKey
from safeagents_batch.core.tarsafe import tar_tree
from safeagents_batch.records.model import AttemptOutcome, ImageRecord
from safeagents_batch.staging.code import StagedCode
from safeagents_batch.staging.images import ImageSpec

# For a first agent before the images go out (Python, Ray and this package start on the
# node); one that starts later gets the image when its first attempt arrives.
AGENT_START_SECONDS = 10.0
SPOOL_IN_MEMORY = 8 << 20  # an attempt's artifacts beyond this wait on disk, not in memory
SPOOL_READ = 1 << 20
CONNECT_SECONDS = 10.0
NODE_DEATH_SECONDS = 60.0  # the GCS declares a node dead some seconds after its raylet died
NAMESPACE = "safeagents-batch"
AZURE_NEEDS_OPT_IN = (
    "bind_azure_folder on a Ray cluster ships the driver's ~/.azure to the node only with "
    "--ship-azure; run not started"
)
T = TypeVar("T")
PACKAGE_DIR = Path(__file__).resolve().parents[2]  # safeagents_batch/: what the nodes get
# A node function as a task: the package is installed in the task's worker first.
_NODE_TASK: Any = ray.remote(num_cpus=0, max_retries=0)(ray_boot.call_function)


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # None: RAY_ADDRESS
    ship_azure: bool = False
    registry: str | None = None  # HOST:PORT of a registry the nodes can pull from
    insecure: bool = False  # join a cluster that asks for no token


def connect(options: RayOptions) -> str:
    """Joins the cluster as a driver; returns the address. No address is bad input (exit 2):
    never Ray's "auto", which would pick whichever cluster this machine last started, nor a
    new local instance. A named cluster that does not answer is unavailable (exit 3)."""
    address = options.address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise UsageError(
            "--backend ray needs the cluster's address: --ray-address HOST:PORT or RAY_ADDRESS "
            "(start a cluster with `ray start`, see docs/ray.md)"
        )
    if address == "auto":  # the cluster this machine started last, as Ray finds it
        address = str(canonicalize_bootstrap_address_or_die(address))
    require_answer(address)
    if not options.insecure:
        require_token_auth(address)
    # What the nodes get whole: the node cannot import it before it has the package.
    by_value: Callable[[ModuleType], None] = ray.cloudpickle.register_pickle_by_value
    by_value(ray_boot)
    # Task events feed Ray's dashboard; flushing them makes the driver's exit wait a quarter
    # of a second. The user's own setting wins.
    os.environ.setdefault("RAY_task_events_report_interval_ms", "0")
    try:
        ray.init(
            address=address,
            namespace=NAMESPACE,
            log_to_driver=False,  # task output is the runs' output: it goes to their sinks
            logging_level=logging.WARNING,
            configure_logging=False,
        )
    except ConnectionError as exc:
        raise EngineUnavailable(
            f"the Ray cluster at {address} does not answer: {one_line(exc)}"
        ) from None
    if not docker_nodes():
        ray.shutdown()
        raise EngineUnavailable(
            f"the Ray cluster at {address} has no live node with the `{RESOURCE}` "
            f"resource (ray start ... --resources '{{\"{RESOURCE}\": N}}')"
        )
    return address


def require_answer(address: str, timeout: float = CONNECT_SECONDS) -> None:
    """A TCP connect to the head's GCS first: ray.init retries a silent address for minutes."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as exc:
        raise EngineUnavailable(
            f"the Ray cluster at {address} does not answer: {one_line(exc)}"
        ) from None


def node_gone(node_id: str, wait: float = NODE_DEATH_SECONDS) -> bool:
    """Whether the cluster declares the node dead within `wait`: a task's failure can reach
    us before the GCS has noticed the node's end."""
    deadline = time.monotonic() + wait
    while node_id in {n["NodeID"] for n in live_nodes()}:
        if time.monotonic() >= deadline:
            return False
        time.sleep(1.0)
    return True


class RayBackend:
    """The Backend of a Ray cluster; `local` is the driver's engine, where images are built."""

    name = "ray"

    def __init__(
        self,
        local: DockerBackend,
        options: RayOptions,
        address: str,
        package: Shipment,
        warn: Callable[[str], None] = lambda text: None,
    ) -> None:
        self.local = local
        self.options = options
        self.address = address
        self._package = package
        self._warn = warn
        self._told_lock = threading.Lock()
        self._told_waiting = False
        # In Ray's object store once per code digest (and the Azure folder once per batch).
        self._stored: OncePerKey[str, ray.ObjectRef[Any]] = OncePerKey()
        # Shipped late once per (image tag, node id): why it failed, or None.
        self._shipped: OncePerKey[tuple[str, str], str | None] = OncePerKey()
        self._pushed: OncePerKey[str, str] = OncePerKey()  # image tag -> its registry name
        self._board = AgentBoard(package)

    @classmethod
    def connect(
        cls,
        local: DockerBackend,
        options: RayOptions,
        warn: Callable[[str], None] = lambda text: None,
    ) -> RayBackend:
        address = connect(options)
        return cls(local, options, address, ray_boot.ship(PACKAGE_DIR), warn)

    def close(self) -> None:
        ray.shutdown()

    # -- Backend -------------------------------------------------------------------------

    def ensure_images(
        self,
        specs: Sequence[ImageSpec],
        build_logs: Path,
        *,
        rebuild: bool = False,
        progress: BuildProgress = QUIET_BUILD,
    ) -> dict[str, ImageRecord]:
        self._board.start()  # the agents start while the driver's engine builds
        outcomes = self.local.ensure_images(specs, build_logs, rebuild=rebuild, progress=progress)
        ready = self._board.wait_ready(AGENT_START_SECONDS)
        self._tell_waiting(len(ready))
        return {
            tag: self._distribute(outcome, ready, build_logs) for tag, outcome in outcomes.items()
        }

    def _tell_waiting(self, ready: int) -> None:
        """Once per batch, why runs do not start on every node: without it a batch whose
        nodes another batch holds would wait without a word."""
        waiting = self._board.starting()
        with self._told_lock:
            if not waiting or self._told_waiting:
                return
            self._told_waiting = True
        why = "their slots are held by another batch, or their agent is slow to start"
        if ready:
            self._warn(
                f"{waiting} docker node(s) not free yet ({why}): runs start on the other "
                f"{ready}, and on those once they are free"
            )
        else:
            self._warn(f"no docker node is free yet ({why}): the batch waits for one")

    def run(self, request: AttemptRequest, sink: Sink, cancel: threading.Event) -> AttemptOutcome:
        started = now_iso()
        if request.azure_dir is not None and not self.options.ship_azure:
            return AttemptOutcome(
                status="error", started_at=started, ended_at=now_iso(), error=AZURE_NEEDS_OPT_IN
            )
        code = request.code
        code_ref = self._stored.get(code.digest, lambda: ray.put(tar_tree(code.path)))
        azure = request.azure_dir
        azure_box = [self._stored.get("azure", lambda: ray.put(tar_tree(azure)))] if azure else []
        # No driver path travels: the node puts its own cache path in.
        remote = replace(request, code=StagedCode(code.digest, Path(code.digest)), azure_dir=None)
        boxes = ([code_ref], azure_box)  # refs inside lists: the node gets them unresolved
        if not request.models:
            return self._on_cluster(remote, boxes, sink, cancel, started)
        return self._with_models(remote, boxes, sink, cancel, started)

    def _with_models(
        self,
        request: AttemptRequest,
        boxes: tuple[list[Any], list[Any]],
        sink: Sink,
        cancel: threading.Event,
        started: str,
    ) -> AttemptOutcome:
        """The attempt with a pass at the driver's model gateway (through_gateway)."""
        return through_gateway(
            self.local.models,
            request,
            sink,
            self._gateway_host(),
            lambda passed: self._on_cluster(passed, boxes, sink, cancel, started),
        )

    def _gateway_host(self) -> str:
        """The driver's address as the cluster knows it: the one its nodes reach it by."""
        # Through a typed name: Ray's function is untyped.
        address: Callable[[], str] = ray.util.get_node_ip_address
        return address()

    def _on_cluster(
        self,
        request: AttemptRequest,
        boxes: tuple[list[Any], list[Any]],
        sink: Sink,
        cancel: threading.Event,
        started: str,
    ) -> AttemptOutcome:
        """The attempt on a free slot of the batch's agents (waiting for one)."""
        try:
            agent = self._board.acquire(cancel)
        except NoAgent as exc:
            error = f"no node agent: {one_line(exc, 2000)}"
            return AttemptOutcome(
                status="error", started_at=started, ended_at=now_iso(), error=error
            )
        except ClusterUnanswered as exc:
            reason = f"cluster lost: the head does not answer ({exc})"
            return AttemptOutcome(
                status="error",
                started_at=started,
                ended_at=now_iso(),
                error=reason,
                engine_lost=True,
            )
        if agent is None:
            return AttemptOutcome(
                status="cancelled",
                started_at=started,
                ended_at=now_iso(),
                error="cancelled by the user",
            )
        try:
            for _ in range(2):  # again only once the image was shipped to the node
                outcome = self._on_agent(agent, request, boxes, sink, cancel, started)
                if outcome is not None:
                    return outcome
        finally:
            self._board.release(agent)
        error = f"image {request.image} is still not on node {agent.node_id[:12]} once shipped"
        return AttemptOutcome(status="error", started_at=started, ended_at=now_iso(), error=error)

    def _on_agent(
        self,
        agent: Agent,
        request: AttemptRequest,
        boxes: tuple[list[Any], list[Any]],
        sink: Sink,
        cancel: threading.Event,
        started: str,
    ) -> AttemptOutcome | None:
        """One attempt on `agent`; None when the node lacked the image and it was shipped
        there (a node that joined after the images went out, or lost them)."""
        key = uuid.uuid4().hex
        stream = agent.handle.run_attempt.options(num_returns="streaming").remote(
            key, request, *boxes
        )
        attempt = RemoteAttempt(
            stream, sink, cancel, started, lambda: agent.handle.cancel.remote(key), agent.info
        )
        outcome = attempt.follow()
        if attempt.agent_lost:
            self._board.drop(agent)
        if not attempt.image_missing or cancel.is_set():
            return outcome
        shipped = self._ship_late(request.image, agent.node_id)
        return structs.replace(outcome, error=shipped) if shipped is not None else None

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
        if not self._board.started:
            # A rerun sweeps before it needs an image: its agents start now and sweep, rather
            # than a task worker started on each node for this one call.
            self._board.start()
            self._tell_waiting(len(self._board.wait_ready(AGENT_START_SECONDS)))
        try:
            return sum(self._on_every_node(ray_node.sweep, batch_id).values())
        except RuntimeError as exc:  # a node's engine, or the node, failed it
            raise EngineUnavailable(f"could not sweep the cluster's nodes: {exc}") from None

    def available(self) -> bool:
        try:
            return bool(docker_nodes())
        except Exception:  # the GCS does not answer: the cluster is away
            return False

    def where(self) -> dict[str, str]:
        nodes = docker_nodes()
        return {
            "backend": self.name,
            "address": self.address,
            "host": socket.gethostname(),
            "nodes": ",".join(sorted(n["NodeManagerHostname"] for n in nodes)),
            "docker_slots": str(int(sum(n["Resources"][RESOURCE] for n in nodes))),
        }

    def clean(self, request: CleanRequest) -> list[str]:
        """`clean` on every live docker node's engine; each line names its node. Images stay:
        nodes keep the ones shipped to them, and which a node needs is the driver's to say."""
        if request.images:
            raise UsageError("clean --images works on the local engine only; drop --backend ray")
        try:
            found = self._on_every_node(ray_node.clean_lines, request.dry_run)
        except RuntimeError as exc:
            raise EngineUnavailable(f"could not clean the cluster's nodes: {exc}") from None
        return [
            f"node {node_id[:12]}: {line}" for node_id, lines in found.items() for line in lines
        ]

    # -- node functions ------------------------------------------------------------------

    def _on_every_node(self, function: Callable[..., T], *args: Any) -> dict[str, T]:
        """`function(*args)` on each live docker node at once; by node id."""
        return self._on_nodes([n["NodeID"] for n in docker_nodes()], function, *args)

    def _on_nodes(
        self, node_ids: Sequence[str], function: Callable[..., T], *args: Any
    ) -> dict[str, T]:
        """`function(*args)` (one of ray_node's, with plain arguments) on each of `node_ids`
        at once; by node id. On a node where the batch's agent runs, in the agent; elsewhere
        as a task (a command without a batch, a node whose agent has not started). A failure
        raised on a node is re-raised here as its own one line, without the node's
        traceback."""
        refs = {}
        for node_id in node_ids:
            agent = self._board.ready_agent(node_id)
            if agent is not None:
                refs[node_id] = agent.handle.call.remote(function, *args)
            else:
                refs[node_id] = _NODE_TASK.options(scheduling_strategy=on_node(node_id)).remote(
                    self._package, function.__module__, function.__name__, *args
                )
        try:
            return {node_id: ray.get(ref) for node_id, ref in refs.items()}
        except ray.exceptions.RayError as exc:  # raised there, or the node or agent died
            raise NodeFailure(described(exc)) from None

    # -- images --------------------------------------------------------------------------

    def _distribute(
        self, outcome: ImageRecord, node_ids: list[str], build_logs: Path
    ) -> ImageRecord:
        """The image on each of the nodes that lacks it; a failure fails the image (a node's
        traceback beside its build log). A node whose agent starts later gets it when its
        first attempt arrives."""
        if not outcome.ok:
            return outcome
        try:
            present = self._on_nodes(node_ids, ray_node.has_image, outcome.tag)
            missing = [node_id for node_id, has in present.items() if not has]
            if missing:
                self._ship(outcome.tag, missing)
        except Exception as exc:
            error = f"image {outcome.tag} not shipped to the nodes: {one_line(exc, 600)}"
            if isinstance(exc, NodeFailure):
                name = outcome.tag.replace("/", "_").replace(":", "_")
                trace = build_logs / f"{name}.shipping-traceback.log"
                with open_log(trace) as handle:
                    handle.write(exc.remote.traceback)
                error = f"{error} (the node's traceback: {trace.name}, beside the build logs)"
            return structs.replace(outcome, status="failed", error=error)
        return outcome

    def _ship(self, tag: str, node_ids: list[str]) -> None:
        function: Callable[..., bool]
        args: tuple[Any, ...]
        if self.options.registry is not None:
            function, args = ray_node.pull_image, (tag, self._push(tag, self.options.registry))
        else:
            api = self.local.client.api
            # One object for all nodes; each node's load task fetches it once.
            image = ray.put(b"".join(api.get_image(tag, chunk_size=1 << 20)))
            function, args = ray_node.load_image, (tag, image)
        self._on_nodes(node_ids, function, *args)

    def _ship_late(self, tag: str, node_id: str) -> str | None:
        """The image to one node that lacked it when an attempt arrived (a node that joined
        after the images went out): once per node and tag, whichever attempts ask at once.
        Returns why it could not be shipped; a failure is remembered, not tried per run."""
        return self._shipped.get((tag, node_id), lambda: self._ship_to(tag, node_id))

    def _ship_to(self, tag: str, node_id: str) -> str | None:
        try:
            if not self._on_nodes([node_id], ray_node.has_image, tag)[node_id]:
                self._ship(tag, [node_id])
        except Exception as exc:
            return f"image {tag} not shipped to node {node_id[:12]}: {one_line(exc, 600)}"
        return None

    def _push(self, tag: str, registry: str) -> str:
        """Pushes the driver's image to the registry once (a node that joins later pulls what
        went up before); returns its name there."""
        return self._pushed.get(tag, lambda: self._push_now(tag, registry))

    def _push_now(self, tag: str, registry: str) -> str:
        """That name is on the driver's engine only while it pushes: a pushed batch leaves no
        tag there."""
        api = self.local.client.api
        repository, _, version = tag.rpartition(":")
        remote_repository = f"{registry}/{repository}"
        remote_tag = f"{remote_repository}:{version}"
        api.tag(tag, remote_repository, version)
        try:
            for message in api.push(remote_repository, tag=version, stream=True, decode=True):
                if "error" in message or "errorDetail" in message:
                    error = stream_error(message)
                    raise RuntimeError(f"docker push of {remote_tag}: {error}")
        finally:
            with contextlib.suppress(*ENGINE_ERRORS):  # only the name: `tag` keeps the image
                api.remove_image(remote_tag)
        return remote_tag


class NodeFailure(RuntimeError):
    """A node function failed on its node: the message is its cause in one line; `remote`
    has its traceback."""

    def __init__(self, remote: RemoteError) -> None:
        super().__init__(remote.line())
        self.remote = remote


class RemoteAttempt:
    """Follows one attempt's streaming call: output into the sink as it arrives, artifacts at
    the end, the node's outcome (with where it ran); Ctrl-C asks the node to cancel it."""

    def __init__(
        self,
        stream: ray.ObjectRefGenerator,
        sink: Sink,
        cancel: threading.Event,
        started: str,
        ask_cancel: Callable[[], object] = lambda: None,
        node: dict[str, str] | None = None,
    ) -> None:
        self.stream = stream
        self.sink = sink
        self.cancel = cancel
        self.started = started
        self.ask_cancel = ask_cancel
        self.node = node  # where it runs: its agent's node id, host name and engine
        self.agent_lost = False
        # The archive of /safeagents/logs as it arrives, kept until the outcome says the run
        # ended: in memory up to a few MB, on the driver's disk beyond (it may be GBs).
        self.spool: tempfile.SpooledTemporaryFile[bytes] | None = None
        self.image_missing = False
        self.finished = threading.Event()

    def follow(self) -> AttemptOutcome:
        watcher = threading.Thread(target=self._cancel_when_asked, daemon=True, name="cancel")
        watcher.start()
        try:
            outcome = self._consume()
        except ray.exceptions.RayError as exc:
            outcome = self._lost(exc)
        except BaseException:
            # The driver cannot take the attempt's output (a full disk, ...): its container
            # must not run on in a slot the batch is about to give to another attempt.
            self._stop_remote()
            raise
        finally:
            self.finished.set()
        try:
            return structs.replace(self._with_artifacts(outcome), node=self.node)
        finally:
            self._drop_spool()

    def _stop_remote(self) -> None:
        """Asks the agent to cancel an attempt this driver gives up on. Its own failure is
        not the error: the agent is gone, and with it what it ran, or the error that made us
        give up goes up instead."""
        with contextlib.suppress(Exception):
            self.ask_cancel()

    def _cancel_when_asked(self) -> None:
        while not self.finished.wait(0.25):
            if self.cancel.is_set():
                # The node kills and removes the container; the outcome then says `cancelled`.
                self.ask_cancel()
                return

    def _consume(self) -> AttemptOutcome:
        for ref in self.stream:
            item: Item = ray.get(ref)
            if isinstance(item, Done):
                return item.outcome
            self._take(item)
        return self._ended("the node's call ended without an outcome")

    def _take(self, item: Item) -> None:
        match item:
            case Out(chunk):
                self.sink.stdout(chunk)
            case Err(chunk):
                self.sink.stderr(chunk)
            case Trace(text):
                self.sink.traceback(text)
            case Art(chunk):
                if self.spool is None:
                    # Closed by _drop_spool, in follow()'s finally.
                    self.spool = tempfile.SpooledTemporaryFile(SPOOL_IN_MEMORY, prefix="sab-art-")  # noqa: SIM115
                self.spool.write(chunk)
            case ArtDrop(line):
                self.sink.not_kept(line)
            case NoImage():
                self.image_missing = True

    def _with_artifacts(self, outcome: AttemptOutcome) -> AttemptOutcome:
        if self.spool is not None:
            spool = self.spool
            spool.seek(0)
            # What the node's artifact rules kept, in a tar the node wrote: its headers may
            # differ in size from the engine's, so the caps are not counted again.
            self.sink.artifacts(iter(lambda: spool.read(SPOOL_READ), b""), selected=True)
        return outcome

    def _drop_spool(self) -> None:
        if self.spool is not None:
            self.spool.close()
            self.spool = None

    def _lost(self, exc: ray.exceptions.RayError) -> AttemptOutcome:
        """A call that died with its node (raylet gone) is `node lost`; the run may retry on
        another node. One that failed while the node lives is the agent's failure; the agent
        is asked to cancel it, in case its container still runs there. An error the agent's
        code raised says so at once: its node lives, and its cause and traceback come along."""
        if isinstance(exc, ray.exceptions.RayTaskError):
            return self._raised(described(exc))
        node_id = (self.node or {}).get("node_id")
        try:
            gone = node_id is None or node_gone(node_id)
        except Exception as unanswered:  # the head does not answer: no node can be reached
            reason = f"cluster lost: the head does not answer ({one_line(unanswered, 200)})"
            return structs.replace(self._ended(reason), engine_lost=True)
        # The agent is of no more use when its node is gone or it died; a call it could not
        # answer for a moment (ActorUnavailableError) leaves it, as its container may run on.
        transient = isinstance(exc, ray.exceptions.ActorUnavailableError)
        self.agent_lost = gone or (isinstance(exc, ray.exceptions.RayActorError) and not transient)
        error = described(exc)
        if gone:
            where = f" ({(self.node or {}).get('host', '?')} {node_id or '?'})"
            return self._ended(f"node lost{where}: {error.line(200)}")
        self._stop_remote()
        return self._ended(f"ray call failed: {error.line(300)}")

    def _raised(self, error: RemoteError) -> AttemptOutcome:
        self._stop_remote()
        self.sink.traceback(error.traceback)
        return self._ended(f"ray call failed on the node: {error.line()}")

    def _ended(self, reason: str) -> AttemptOutcome:
        return AttemptOutcome(
            status="error", started_at=self.started, ended_at=now_iso(), error=reason
        )
