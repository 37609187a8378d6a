"""A real Ray cluster on this machine for the cluster tests (marked `ray`): a head with no
container slots and two worker nodes that have them.

* ``host``: runs on the host's Docker engine (``DOCKER_HOST`` named explicitly).
* ``private``: its own Docker engine (:class:`private_engine.PrivateEngine`, in its own network
  namespace, so the host's ``docker0`` survives) and its own mount namespace, where tmpfs hides
  ``/work`` and pytest's temp root: it sees none of the driver's files (the venv
  alone is bound back in, so it has Python, Ray and the Docker SDK; the CLI ships this
  package to it through Ray, as on a real cluster, and the test driver's own probes get it
  through Ray's ``py_modules``).

Every Ray process of a node descends from one ``ray start --block`` in a session of its own,
so killing that session's process group ends the node; :meth:`LocalRayCluster.close` does
that and checks nothing of the cluster is left. Nothing is ever stopped by name.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import pytest
from engine_cli import SessionImage, session_image
from private_engine import PrivateEngine, require_host_bridge

from safeagents_batch.backends.ray.auth import reread_ray_config, use_token_mode

VENV_BIN = Path(sys.executable).parent
RAY = VENV_BIN / "ray"
START_TIMEOUT = 120.0  # an upper bound for a hung start, not a timing assertion
STOP_TIMEOUT = 30.0
TERM_GRACE = 5.0  # Ray's workers may linger after SIGTERM; nothing of a test node needs saving
POLL = 0.2
OBJECT_STORE_BYTES = 1 << 30  # an image of a few hundred MB must fit, with room to spare
HOST_ENGINE = "unix:///var/run/docker.sock"
NODE_MARK = "sab-node-"  # a custom resource naming each worker node, to find its node id


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def processes_naming(path: Path) -> list[int]:
    mark = str(path).encode()
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if mark in Path(f"/proc/{entry.name}/cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class RayNode:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    engine_url: str | None = None  # None for the head (no container slots)
    cache: Path | None = None
    node_id: str | None = None

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def descendants(self) -> list[int]:
        """Every live process of the node (its session: `ray start` and what it started)."""
        found = []
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = Path(f"/proc/{entry.name}/stat").read_text()
                fields = stat[stat.rindex(")") + 2 :].split()
                if fields[0] not in ("Z", "X") and int(fields[3]) == self.proc.pid:  # session
                    found.append(int(entry.name))
        return found

    def raylet_pid(self) -> int:
        for pid in self.descendants():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == "raylet":
                    return pid
        raise AssertionError(f"node {self.name} has no raylet")

    def stop(self) -> None:
        """SIGTERM to the node's session, then SIGKILL to whatever stays; waits for all."""
        for sig, grace in ((signal.SIGTERM, TERM_GRACE), (signal.SIGKILL, STOP_TIMEOUT)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            deadline = time.monotonic() + grace
            while (self.descendants() or self.alive) and time.monotonic() < deadline:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(POLL)
            if not self.descendants() and not self.alive:
                return
        raise AssertionError(f"node {self.name} left processes: {self.descendants()}")


@dataclass
class LocalRayCluster:
    root: Path
    private_engine: PrivateEngine
    hidden: list[Path]
    port: int = field(default_factory=free_port)
    # Token authentication, as a cluster should run: every node and driver has the token.
    # None: an open cluster, as Ray starts one by default (the tests that it is refused).
    token: str | None = field(default_factory=lambda: secrets.token_hex(16))
    nodes: dict[str, RayNode] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def temp_dir(self) -> Path:
        return self.root / "ray"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "RAY_"))}
        env.update(PATH=f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}")
        env.update(RAY_USAGE_STATS_ENABLED="0", **self.auth_env(), **extra)
        return env

    def auth_env(self) -> dict[str, str]:
        if self.token is None:
            return {}
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token}

    def _common_args(self) -> list[str]:
        return [
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--temp-dir={self.temp_dir}",
            f"--object-store-memory={OBJECT_STORE_BYTES}",
            # Defaults that are fixed ports would clash between nodes on one machine.
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            "--disable-usage-stats",
        ]

    def _popen(self, name: str, argv: list[str], env: dict[str, str]) -> RayNode:
        log = self.root / f"{name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group: a Ctrl-C for pytest skips it
            )
        node = RayNode(name, proc, log)
        self.nodes[name] = node
        return node

    def start_head(self) -> RayNode:
        argv = [
            str(RAY),
            "start",
            "--head",
            f"--port={self.port}",
            f"--ray-client-server-port={free_port()}",
            "--include-dashboard=false",
            "--num-cpus=0",  # the driver's node runs no attempt and no helper task
            *self._common_args(),
        ]
        return self._popen("head", argv, self.env())

    def start_worker(self, name: str, *, slots: int, engine_url: str, isolated: bool) -> RayNode:
        cache = self.root / f"cache-{name}"
        env = self.env(DOCKER_HOST=engine_url, SAFEAGENTS_NODE_CACHE=str(cache))
        resources = json.dumps({"docker": slots, f"{NODE_MARK}{name}": 1})
        argv = [
            str(RAY),
            "start",
            f"--address={self.address}",
            # Ray's default CPU count, as README starts a node: a raylet starts at most that
            # many worker processes at once, and a node's slots each need one.
            f"--resources={resources}",
            *self._common_args(),
        ]
        if isolated:
            argv = self._in_own_mount_namespace(argv)
        node = self._popen(name, argv, env)
        node.engine_url, node.cache = engine_url, cache
        return node

    def _in_own_mount_namespace(self, argv: list[str]) -> list[str]:
        """`argv` run where tmpfs hides the driver's files; the venv is bound back in."""
        keep = self.root / "venv"
        keep.mkdir(exist_ok=True)
        venv = VENV_BIN.parent
        steps = [f"mount --bind {venv} {keep}"]
        steps += [f"mount -t tmpfs -o size=16m,mode=755 sab-hidden {path}" for path in self.hidden]
        steps += [f"mkdir -p {venv}", f"mount --bind {keep} {venv}", 'exec "$@"']
        script = "set -e; " + "; ".join(steps)
        unshare = ["unshare", "--mount", "--propagation", "private", "--"]
        return [*unshare, "sh", "-c", script, "sh", *argv]

    def wait_for_nodes(self) -> None:
        """Until every started worker is alive in the cluster with its slots; learns node ids."""
        import ray

        wanted = {name for name, node in self.nodes.items() if node.engine_url and node.alive}
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            seen = {}
            listing: Callable[[], list[dict[str, Any]]] = ray.nodes  # untyped in Ray
            for info in listing():
                for key in info["Resources"] if info.get("Alive") else ():
                    if key.startswith(NODE_MARK):
                        seen[key.removeprefix(NODE_MARK)] = info["NodeID"]
            if wanted <= set(seen):
                for name in wanted:
                    self.nodes[name].node_id = seen[name]
                return
            for name in wanted:
                if not self.nodes[name].alive:
                    raise AssertionError(f"node {name} exited:\n{self.log_tail(name)}")
            if time.monotonic() >= deadline:
                raise AssertionError(f"nodes {wanted - set(seen)} did not join")
            time.sleep(POLL)

    def log_tail(self, name: str, lines: int = 30) -> str:
        text = self.nodes[name].log.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def restart_worker(self, name: str) -> RayNode:
        """The node again (same engine, same cache), e.g. after its raylet was killed."""
        old = self.nodes[name]
        old.stop()
        assert old.engine_url is not None
        isolated = old.engine_url != HOST_ENGINE
        node = self.start_worker(name, slots=2, engine_url=old.engine_url, isolated=isolated)
        self.wait_for_nodes()
        return node

    def close(self) -> None:
        for node in reversed(list(self.nodes.values())):
            node.stop()
        if os.environ.get("SAB_KEEP_RAY") is None:
            shutil.rmtree(self.root, ignore_errors=True)


def wait_head(cluster: LocalRayCluster) -> None:
    """Connects this process as a driver once the head answers."""
    import ray

    deadline = time.monotonic() + START_TIMEOUT
    # ray.init waits long for a GCS that is not there yet: first the port must answer.
    while not port_open(cluster.port):
        if not cluster.nodes["head"].alive or time.monotonic() >= deadline:
            raise AssertionError(f"the head did not start:\n{cluster.log_tail('head')}")
        time.sleep(POLL)
    while True:
        try:
            ray.init(
                address=cluster.address,
                namespace="sab-tests",
                log_to_driver=False,
                logging_level=logging.WARNING,
                configure_logging=False,
                runtime_env=driver_runtime_env(),
            )
            return
        except ConnectionError as exc:
            if not cluster.nodes["head"].alive or time.monotonic() >= deadline:
                raise AssertionError(
                    f"the head did not start:\n{cluster.log_tail('head')}"
                ) from exc
            time.sleep(POLL)


def driver_runtime_env() -> dict[str, Any]:
    """What the test driver's own tasks need on an isolated node: this package and tests/."""
    import safeagents_batch

    package = Path(safeagents_batch.__file__).resolve().parent
    return {"py_modules": [str(package)], "excludes": ["__pycache__"]}


@contextlib.contextmanager
def open_ray_head() -> Iterator[LocalRayCluster]:
    """A head alone that asks for no token (Ray's default), no driver connected to it."""
    root = Path("/tmp") / f"sab-ray-open-{secrets.token_hex(3)}"
    root.mkdir(mode=0o755)
    cluster = LocalRayCluster(root, PrivateEngine(), hidden=[], token=None)
    try:
        head = cluster.start_head()
        deadline = time.monotonic() + START_TIMEOUT
        while not port_open(cluster.port):
            if not head.alive or time.monotonic() >= deadline:
                raise AssertionError(f"the head did not start:\n{cluster.log_tail('head')}")
            time.sleep(POLL)
        yield cluster
    finally:
        cluster.close()
    assert processes_naming(root) == [], processes_naming(root)


@contextlib.contextmanager
def local_ray_cluster(hidden: list[Path]) -> Iterator[LocalRayCluster]:
    import ray

    require_host_bridge("before the Ray cluster starts")
    root = Path("/tmp") / f"sab-ray-{secrets.token_hex(3)}"
    root.mkdir(mode=0o755)
    engine = PrivateEngine()
    cluster = LocalRayCluster(root, engine, hidden)
    # This process and the CLI processes the tests start are drivers: they hold the token.
    before = {name: os.environ.get(name) for name in cluster.auth_env()}
    os.environ.update(cluster.auth_env())
    use_token_mode()
    try:
        engine.start()
        cluster.start_head()
        wait_head(cluster)
        cluster.start_worker("host", slots=2, engine_url=HOST_ENGINE, isolated=False)
        # One at a time: nodes of one session on one machine pick their socket names by
        # index, and two starting at once bind the same one.
        cluster.wait_for_nodes()
        cluster.start_worker("private", slots=2, engine_url=engine.socket_url, isolated=True)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()
        cluster.close()
        engine.close()
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        reread_ray_config()
        require_host_bridge("after the Ray cluster stopped")
    # Nothing of it is left: no process names its root (the isolated node's mount namespace
    # lived only as long as its processes), and the root itself is gone.
    assert processes_naming(root) == [], processes_naming(root)
    assert os.environ.get("SAB_KEEP_RAY") is not None or not root.exists()


@pytest.fixture(scope="session")
def ray_image(
    docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SessionImage]:
    """The session's image, built on the driver's (host) engine only: the nodes that lack it
    get it from the backend."""
    yield from session_image(docker_client, tmp_path_factory.mktemp("ray-image"))


@pytest.fixture(name="ray_cluster", scope="session")
def ray_cluster_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRayCluster]:
    """The session's cluster; the isolated node sees neither pytest's temp root (where every
    batch dir and code snapshot of the tests lives) nor /work (the checkout). Python itself
    (under /root here) stays visible: a real node has its own."""
    pytest_root = tmp_path_factory.getbasetemp().parent
    with local_ray_cluster([Path("/work"), pytest_root]) as cluster:
        yield cluster
