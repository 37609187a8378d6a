"""The agent board's choices (backends/ray_agents.py), without a cluster: Ray's few calls it
makes (the node listing, the actor, `ray.wait`, `ray.get`) are replaced by stand-ins that
say which agents started. The cluster tests run the real thing. Marked `ray`: they import
Ray."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
import ray
import ray.exceptions

from safeagents_batch.backends.base import CleanRequest
from safeagents_batch.backends.ray import agents as ray_agents
from safeagents_batch.backends.ray.agents import AgentBoard, ClusterUnanswered, NoAgent
from safeagents_batch.backends.ray.boot import Shipment
from safeagents_batch.core.errors import EngineUnavailable, UsageError

pytestmark = pytest.mark.ray

# What Ray hands over of an agent whose package could not be unpacked: its header, colour
# codes, the frames on the node (its cache's path of the package), the cause.
AGENT_TRACEBACK = """\x1b[36mray::BootedAgent.ready()\x1b[39m (pid=41, ip=127.0.0.1, actor_id=ab)
  File "/tmp/safeagents-batch-node-0/package/4f2e/safeagents_batch/backends/ray_boot.py", \
line 186, in ready
    raise self._failure
  File "/tmp/safeagents-batch-node-0/package/4f2e/safeagents_batch/backends/ray_boot.py", \
line 120, in unzip
    archive.extractall(staging)
OSError: [Errno 28] No space left on device"""

# Ray checks that node ids are hex, of its length.
N1, N2 = "a1" * 28, "b2" * 28


@dataclass(eq=False)  # hashable by identity, as Ray's refs are keys of a dict
class Ref:
    node_id: str
    started: bool = False
    error: str | None = None
    raised: Exception | None = None
    traceback: str = "Traceback (most recent call last): ..."


@dataclass
class Handle:
    ref: Ref

    @property
    def ready(self) -> Any:
        return self

    def remote(self) -> Ref:
        return self.ref


@dataclass
class Cluster:
    """The nodes (id -> slots) and the agents the board made there, by node id."""

    nodes: dict[str, int]
    refs: dict[str, list[Ref]] = field(default_factory=dict)
    options: list[dict[str, Any]] = field(default_factory=list)

    def listing(self) -> list[dict[str, Any]]:
        return [{"NodeID": n, "Resources": {"docker": s}} for n, s in self.nodes.items()]

    def start(self, node_id: str, error: str | None = None) -> None:
        ref = self.refs[node_id][-1]
        ref.started, ref.error = True, error


class Actor:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.pending: dict[str, Any] = {}

    def options(self, **options: Any) -> Actor:
        self.cluster.options.append(options)
        self.pending = options
        return self

    def remote(self, shipment: Shipment) -> Handle:
        node_id = self.pending["scheduling_strategy"].node_id
        ref = Ref(node_id)
        self.cluster.refs.setdefault(node_id, []).append(ref)
        return Handle(ref)


def fake_wait(refs: list[Ref], num_returns: int = 1, timeout: float | None = None) -> Any:
    done = [r for r in refs if r.started]
    return done, [r for r in refs if not r.started]


def fake_get(ref: Ref) -> dict[str, str]:
    if ref.error is not None:
        raise ray.exceptions.RayError(ref.error)
    if ref.raised is not None:  # what the agent's ready() raised, as Ray hands it over
        task_error: Any = ray.exceptions.RayTaskError  # untyped in Ray
        raise task_error("ready", ref.traceback, ref.raised)
    return {"node_id": ref.node_id}


@pytest.fixture
def stop() -> Iterator[threading.Event]:
    """The batch's cancel flag, set when a test ends: a waiter a broken board never serves
    ends with the test instead of hanging the session."""
    event = threading.Event()
    yield event
    event.set()


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Cluster:
    cluster = Cluster({N1: 2, N2: 1})
    monkeypatch.setattr(ray_agents, "docker_nodes", cluster.listing)
    monkeypatch.setattr(ray, "wait", fake_wait)
    monkeypatch.setattr(ray, "get", fake_get)
    monkeypatch.setattr(ray_agents, "LOOK_SECONDS", 0.0)  # every ask looks at the cluster
    monkeypatch.setattr(ray_agents, "WAIT_SECONDS", 0.01)
    return cluster


def eventually(condition: Callable[[], bool], what: str) -> None:
    """Polls for at most 10 s: a bound for a hang, not a timing check."""
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


def board_on(cluster: Cluster) -> AgentBoard:
    board = AgentBoard(Shipment("digest", []))
    board._actor = Actor(cluster)
    board.start()
    return board


def ready_board(cluster: Cluster, nodes: dict[str, int]) -> AgentBoard:
    """A board on `nodes` (node id -> slots) whose agents all started."""
    cluster.nodes = nodes
    board = board_on(cluster)
    for node_id in nodes:
        cluster.start(node_id)
    return board


def waiting(board: AgentBoard, cancel: threading.Event) -> tuple[threading.Thread, list[Any]]:
    """An attempt asking for a slot in its own thread; what it got lands in the list."""
    got: list[Any] = []
    thread = threading.Thread(target=lambda: got.append(board.acquire(cancel)), daemon=True)
    thread.start()
    return thread, got


def test_each_agent_holds_all_its_nodes_slots_and_the_most_free_takes_the_attempt(
    cluster: Cluster, stop: threading.Event
) -> None:
    cluster.nodes = {N1: 1, N2: 2}
    board = board_on(cluster)
    assert {o["scheduling_strategy"].node_id: o["resources"] for o in cluster.options} == {
        N1: {"docker": 1},
        N2: {"docker": 2},
    }
    cluster.start(N1)
    cluster.start(N2)
    assert board.wait_ready(0) == [N1, N2]
    taken = [board.acquire(stop) for _ in range(3)]
    nodes = [a.node_id for a in taken if a is not None]
    assert nodes[0] == N2  # 2 free against 1, though N1 comes first
    assert sorted(nodes) == sorted([N1, N2, N2])  # then every slot, none twice


def test_a_full_board_waits_until_a_slot_is_released_or_the_batch_is_cancelled(
    cluster: Cluster, stop: threading.Event
) -> None:
    board = ready_board(cluster, {N1: 1})
    first = board.acquire(stop)
    assert first is not None

    thread, got = waiting(board, stop)
    thread.join(0.2)
    assert thread.is_alive() and got == []  # still waiting: the one slot is taken
    board.release(first)
    thread.join(10)
    assert got == [first]

    board.release(first)
    again = board.acquire(stop)  # the one slot taken again
    cancel = threading.Event()
    thread, got = waiting(board, cancel)
    thread.join(0.2)
    assert thread.is_alive() and got == []
    cancel.set()  # Ctrl-C while it waits
    thread.join(10)
    assert got == [None]
    assert again is not None


def test_agents_not_started_take_nothing_and_a_failed_start_says_why(
    cluster: Cluster, stop: threading.Event
) -> None:
    cluster.nodes = {N1: 1}
    board = board_on(cluster)
    cluster.start(N1, error="runtime env setup failed")
    why = f"node {N1[:12]}: the agent could not start: RayError: runtime env setup failed"
    with pytest.raises(NoAgent, match=why):
        board.acquire(stop)


def test_an_agent_that_raised_in_ready_is_its_own_line_without_rays_traceback(
    cluster: Cluster, stop: threading.Event
) -> None:
    cluster.nodes = {N1: 1}
    board = board_on(cluster)
    ref = cluster.refs[N1][-1]
    ref.raised = OSError(28, "No space left on device")
    ref.traceback = AGENT_TRACEBACK
    cluster.start(N1)
    with pytest.raises(NoAgent) as raised:
        board.acquire(stop)
    assert str(raised.value) == (
        f"node {N1[:12]}: the agent could not start: OSError: [Errno 28] No space left on "
        "device (raised at safeagents_batch/backends/ray_boot.py:120 in unzip)"
    )


def test_a_head_that_does_not_answer_is_its_own_error(
    cluster: Cluster, stop: threading.Event, monkeypatch: pytest.MonkeyPatch
) -> None:
    board = board_on(cluster)

    def unanswered() -> list[dict[str, Any]]:
        raise ConnectionError("GCS at 127.0.0.1:6379\nunreachable")

    monkeypatch.setattr(ray_agents, "docker_nodes", unanswered)
    with pytest.raises(ClusterUnanswered, match=r"^GCS at 127\.0\.0\.1:6379 unreachable$"):
        board.acquire(stop)


def test_a_node_that_joins_gets_an_agent_and_one_that_leaves_loses_it(
    cluster: Cluster, stop: threading.Event
) -> None:
    board = ready_board(cluster, {N1: 1})
    first = board.acquire(stop)
    assert first is not None and first.node_id == N1

    cluster.nodes = {N2: 1}  # N1 left, N2 joined
    thread, got = waiting(board, stop)
    eventually(lambda: bool(cluster.refs.get(N2)), "an agent on the node that joined")
    cluster.start(N2)
    thread.join(10)
    assert [a.node_id for a in got] == [N2]
    assert board.ready_agent(N1) is None


def test_a_dropped_agent_of_a_live_node_is_replaced_at_once(
    cluster: Cluster, stop: threading.Event, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ray_agents, "LOOK_SECONDS", 3600.0)  # no look is due but the drop's
    board = ready_board(cluster, {N1: 1})
    agent = board.acquire(stop)
    assert agent is not None
    board.drop(agent)  # its call failed as dead, while the attempt still holds its slot
    board.release(agent)
    thread, got = waiting(board, stop)
    eventually(lambda: len(cluster.refs[N1]) == 2, "a second agent on the node")
    cluster.start(N1)
    thread.join(10)
    assert len(got) == 1 and got[0] is not agent and got[0].node_id == N1


def warning_backend(said: list[str]) -> Any:
    """A Ray backend only for its word on waiting nodes (no engine, no cluster); what it
    warns lands in `said`."""
    from safeagents_batch.backends.ray.backend import RayBackend, RayOptions

    return RayBackend(
        cast(Any, None), RayOptions(), "127.0.0.1:1", Shipment("digest", []), said.append
    )


def test_a_batch_whose_nodes_are_not_free_says_so_once(cluster: Cluster) -> None:
    said: list[str] = []
    backend = warning_backend(said)
    cluster.nodes = {N1: 2, N2: 1}
    backend._board = board = board_on(cluster)
    cluster.start(N1)  # N2's slots are held elsewhere: its agent does not start
    ready = board.wait_ready(0)
    assert ready == [N1] and board.starting() == 1
    backend._tell_waiting(len(ready))
    backend._tell_waiting(len(ready))  # another image of the batch: not said again
    assert len(said) == 1
    assert "1 docker node(s) not free yet" in said[0] and "held by another batch" in said[0]

    cluster.start(N2)
    board.wait_ready(0)
    assert board.starting() == 0


def test_a_batch_with_no_free_node_says_it_waits(cluster: Cluster) -> None:
    said: list[str] = []
    backend = warning_backend(said)
    cluster.nodes = {N1: 1}
    backend._board = board = board_on(cluster)
    backend._tell_waiting(len(board.wait_ready(0)))
    assert len(said) == 1 and said[0].startswith("no docker node is free yet"), said


def test_waiting_for_agents_counts_from_the_boards_start_and_never_adds_the_grace_alone(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[float | None] = []

    def recording_wait(refs: list[Ref], num_returns: int = 1, timeout: float | None = None) -> Any:
        waits.append(timeout)
        return fake_wait(refs, num_returns, timeout)

    monkeypatch.setattr(ray, "wait", recording_wait)
    cluster.nodes = {N1: 1, N2: 1}
    board = board_on(cluster)  # no agent will start: both nodes are held elsewhere
    waits.clear()
    assert board.wait_ready(10.0) == []
    [first] = [w for w in waits if w != 0]  # the settle's look costs nothing; no grace after
    assert first is not None and 0 < first <= 10.0
    monkeypatch.setattr(board, "_started_at", time.monotonic() - 60)  # a sweep waited before
    waits.clear()
    assert board.wait_ready(10.0) == []
    assert all(w == 0 for w in waits), waits  # nothing is left of the agents' time


def test_a_sweep_or_clean_a_node_failed_is_one_line_of_an_unavailable_cluster(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = warning_backend([])
    backend._board = ready_board(cluster, {N1: 1})

    def failing(function: Any, *args: Any) -> dict[str, Any]:
        raise RuntimeError("docker engine on the node: connection refused")

    monkeypatch.setattr(backend, "_on_every_node", failing)
    with pytest.raises(EngineUnavailable, match=r"^could not sweep the cluster's nodes: docker"):
        backend.sweep("batch-1")
    with pytest.raises(EngineUnavailable, match=r"^could not clean the cluster's nodes: docker"):
        backend.clean(CleanRequest(dry_run=True))
    # Images stay on the nodes: only the local engine cleans them.
    with pytest.raises(UsageError, match=r"^clean --images works on the local engine only"):
        backend.clean(CleanRequest(images=True, keep_tags=frozenset({"img:1"})))
