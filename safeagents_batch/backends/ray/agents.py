"""The batch's node agents (backends/ray/node.NodeAgent, started through boot.BootedAgent,
which gives the node this package first): one Ray actor per docker node, made
when the batch needs its nodes, holding all of that node's `docker` slots while it lives, so a
node never runs more containers than it offers, whichever batches share the cluster. The
board hands out slots: an attempt takes one on the ready agent with the most free slots (the
batch spreads over its nodes), waiting while every slot is taken.

The board follows the cluster: a node that joins gets an agent on the next look (about once
a second while an attempt waits for a slot), an agent whose node is gone leaves, and
one that died on a live node is replaced. The agents die with the driver (they are its
actors, not detached): nothing of a batch outlives it on the cluster.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray
import ray.exceptions
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from safeagents_batch.backends.ray import boot as ray_boot
from safeagents_batch.backends.ray.boot import Shipment
from safeagents_batch.backends.ray.remote import RemoteError, from_text, strip_escapes
from safeagents_batch.core.errors import one_line

RESOURCE = "docker"
LOOK_SECONDS = 1.0  # how often the board asks the cluster for its nodes
WAIT_SECONDS = 0.5  # how often an attempt that waits for a slot looks again
GRACE_SECONDS = 5.0  # for the other agents once one is ready: the rest join when they start
HELPER_THREADS = 4  # an agent's calls beside its attempts: image checks, loads, a sweep
# "Never looked": not 0.0, as the monotonic clock starts near zero at boot (a fresh CI
# machine) and a look at 0.0 would seem recent.
NEVER = float("-inf")


def live_nodes() -> list[dict[str, Any]]:
    # Through a typed name: `ray.nodes` is untyped, and the type check runs with and without Ray.
    listing: Callable[[], list[dict[str, Any]]] = ray.nodes
    return [n for n in listing() if n.get("Alive")]


def docker_nodes() -> list[dict[str, Any]]:
    """Live nodes that offer container slots."""
    return [n for n in live_nodes() if n["Resources"].get(RESOURCE, 0) > 0]


def described(exc: BaseException) -> RemoteError:
    """A failed Ray call as the user should read it. An error raised on the node (a task's,
    an actor method's) is its cause: type, message, where it was raised, and its traceback;
    Ray's header before it (task, pid, ip, actor id and repr, colour codes) is left out."""
    if isinstance(exc, ray.exceptions.RayTaskError):
        cause = exc.cause
        return from_text(str(exc), type(cause).__name__, str(cause))
    text = strip_escapes(str(exc))
    return RemoteError(type(exc).__name__, " ".join(text.split())[:300], None, text)


def on_node(node_id: str) -> NodeAffinitySchedulingStrategy:
    return NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)


@dataclass
class Agent:
    node_id: str
    slots: int
    handle: Any  # the actor handle (Ray's handles are untyped)
    ready_ref: ray.ObjectRef[Any]
    ready: bool = False
    busy: int = 0
    info: dict[str, str] | None = None  # where it runs: node id, host name, engine

    @property
    def free(self) -> int:
        return self.slots - self.busy if self.ready else 0


class NoAgent(Exception):
    """No node can take an attempt: every agent failed to start, or the cluster has none."""


class ClusterUnanswered(Exception):
    """The head did not answer the board's look at the cluster."""


class AgentBoard:
    def __init__(self, shipment: Shipment) -> None:
        self._shipment = shipment  # the package, for each agent's worker
        self._cond = threading.Condition()
        self._agents: dict[str, Agent] = {}
        self._failed: dict[str, str] = {}  # node id -> why its agent did not start
        self._looked = NEVER  # monotonic time of the last look
        self._started_at: float | None = None  # the first start(): agents' time runs from it
        self._actor: Any = ray.remote(ray_boot.BootedAgent)

    def start(self) -> None:
        """Agents on every docker node, started at once; returns without waiting for them."""
        if self._started_at is None:
            self._started_at = time.monotonic()
        self._look()

    @property
    def started(self) -> bool:
        return self._started_at is not None

    def wait_ready(self, timeout: float) -> list[str]:
        """The nodes whose agent is ready. While none is, waits for the first one, until
        `timeout` seconds after the board started (a later call waits only for what is left),
        then a little longer for the others. An agent that is not ready by then (its node
        held by another batch, a slow start) joins when it starts."""
        with self._cond:
            self._settle()
            pending = [a.ready_ref for a in self._agents.values() if not a.ready]
            anyone = any(a.ready for a in self._agents.values())
        if pending and not anyone:  # pending agents: the board started
            left = max(0.0, (self._started_at or 0.0) + timeout - time.monotonic())
            first, rest = ray.wait(pending, num_returns=1, timeout=left)
            if first and rest:
                ray.wait(rest, num_returns=len(rest), timeout=GRACE_SECONDS)
        with self._cond:
            self._settle()
            return [a.node_id for a in self._agents.values() if a.ready]

    def acquire(self, cancel: threading.Event) -> Agent | None:
        """A slot on the ready agent with the most free; None once `cancel` is set. Only an
        attempt that finds no free slot looks at the cluster (at most once a second): a node
        that joined may take it."""
        while not cancel.is_set():
            with self._cond:
                self._settle()
                best = max(self._agents.values(), key=lambda a: a.free, default=None)
                if best is not None and best.free > 0:
                    best.busy += 1
                    return best
                if not self._agents and self._failed:
                    raise NoAgent("; ".join(sorted(set(self._failed.values()))))
                if time.monotonic() - self._looked < LOOK_SECONDS:
                    self._cond.wait(WAIT_SECONDS)
                    continue
            self._look()
        return None

    def release(self, agent: Agent) -> None:
        with self._cond:
            agent.busy -= 1
            self._cond.notify_all()

    def drop(self, agent: Agent) -> None:
        """An agent whose calls failed as dead: its node gets a new one if it is still live."""
        with self._cond:
            if self._agents.get(agent.node_id) is agent:
                del self._agents[agent.node_id]
            self._looked = NEVER

    def starting(self) -> int:
        """How many agents have not started yet (their node's slots held, or slow)."""
        with self._cond:
            return sum(not a.ready for a in self._agents.values())

    def ready_agent(self, node_id: str) -> Agent | None:
        with self._cond:
            agent = self._agents.get(node_id)
            return agent if agent is not None and agent.ready else None

    def _look(self) -> None:
        """Agents for docker nodes that have none; those of nodes that left, dropped. The
        cluster is asked outside the lock: a head that does not answer must not hold up the
        attempts that release slots meanwhile."""
        self._looked = time.monotonic()
        try:
            listed = docker_nodes()
        except Exception as exc:
            raise ClusterUnanswered(one_line(exc, 200)) from None
        with self._cond:
            self._apply(listed)

    # -- under the lock --------------------------------------------------------------------

    def _apply(self, listed: list[dict[str, Any]]) -> None:
        nodes = {n["NodeID"]: int(n["Resources"][RESOURCE]) for n in listed}
        for node_id in list(self._agents):
            if node_id not in nodes:
                del self._agents[node_id]
        for node_id, slots in nodes.items():
            if node_id not in self._agents and node_id not in self._failed and slots > 0:
                self._agents[node_id] = self._make(node_id, slots)

    def _make(self, node_id: str, slots: int) -> Agent:
        handle = self._actor.options(
            num_cpus=0,
            resources={RESOURCE: slots},
            max_concurrency=slots + HELPER_THREADS,
            max_restarts=0,
            max_task_retries=0,
            scheduling_strategy=on_node(node_id),
        ).remote(self._shipment)
        return Agent(node_id, slots, handle, handle.ready.remote())

    def _settle(self) -> None:
        """Marks the agents that started; an agent that failed to start leaves the board."""
        pending = {a.ready_ref: a for a in self._agents.values() if not a.ready}
        if not pending:
            return
        done, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)
        for ref in done:
            agent = pending[ref]
            try:
                agent.info = ray.get(ref)
            except ray.exceptions.RayError as exc:
                # A failure the agent raised (its package could not be installed, no engine)
                # is its own line; Ray's wrapping of it would cut the cause off.
                del self._agents[agent.node_id]
                why = f"the agent could not start: {described(exc).line()}"
                self._failed[agent.node_id] = f"node {agent.node_id[:12]}: {why}"
                continue
            agent.ready = True
            self._cond.notify_all()
