"""A real two-node Slurm cluster on this machine for the cluster tests (marked `slurm`).

* munge on a socket of its own, with a key of its own; `slurmctld` on free ports.
* ``nodea``: a `slurmd` in the host's namespaces, on 127.0.0.1; its jobs use the host's
  Docker engine (the default socket).
* ``nodeb``: a `slurmd` in a network namespace of its own (a veth pair to the host, as a second
  machine on a LAN) and a mount namespace of its own, where tmpfs hides ``/work`` and pytest's
  temp root (the driver's projects, jobs files and checkout): it sees the cluster's shared
  directory (where the tests put their batch dirs) and the venv the tests run from (a real
  node has its own Python and this package's dependencies). Its jobs reach a private Docker
  engine (:class:`private_engine.PrivateEngine`) at the default socket path, bound over it in
  that mount namespace: a Slurm job inherits no environment from its `slurmd`.

Daemons are started by pid, each in a session of its own, and stopped by pid; nothing is
stopped by name (another cluster on the machine is not ours). Teardown leaves no process
naming the cluster's root, no namespace, no veth and no files.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import pytest
from engine_cli import SessionImage, session_image
from private_engine import PrivateEngine, require_host_bridge
from ray_cluster import free_port, processes_naming

VENV = Path(sys.executable).parent.parent
START_TIMEOUT = 60.0  # an upper bound for a hung start, not a timing assertion
STOP_TIMEOUT = 30.0
POLL = 0.2
HOST_SOCKET = Path("/run/docker.sock")  # /var/run is a link to /run on Debian
MUNGE_USER = "munge"

SLURM_CONF = """\
ClusterName=sabtest
SlurmctldHost={host}({ctld_addr})
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.sock
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/%n
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd-%n.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={root}/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
SlurmctldTimeout=30
SlurmdTimeout=10
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
NodeName=nodea NodeAddr=127.0.0.1 CPUs=2 RealMemory=16000 State=UNKNOWN
NodeName=nodeb NodeAddr={nodeb_addr} CPUs=2 RealMemory=16000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def run(*argv: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60, env=env)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: {result.stderr.strip() or result.stdout}")
    return result.stdout


@dataclass
class Daemon:
    name: str
    proc: subprocess.Popen[bytes]

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """`sig` to the daemon's session, then SIGKILL to what stays; waits for it."""
        for each, grace in ((sig, STOP_TIMEOUT), (signal.SIGKILL, STOP_TIMEOUT)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, each)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace)
                return


@dataclass
class LocalSlurmCluster:
    root: Path
    engine: PrivateEngine  # node B's
    hidden: list[Path]
    netns: str = field(default_factory=lambda: f"sab-slurm-{secrets.token_hex(3)}")
    subnet: int = field(default_factory=lambda: 100 + secrets.randbelow(100))
    ctld_port: int = field(default_factory=free_port)
    slurmd_port: int = field(default_factory=free_port)
    daemons: dict[str, Daemon] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def shared(self) -> Path:
        """Where the tests put batch dirs: both nodes see it (a cluster's shared filesystem)."""
        return self.root / "shared"

    @property
    def host_addr(self) -> str:
        return f"10.251.{self.subnet}.1"

    @property
    def nodeb_addr(self) -> str:
        return f"10.251.{self.subnet}.2"

    @property
    def veth(self) -> str:
        return f"sabs{self.netns[-6:]}"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "SLURM_"))}
        env.update(SLURM_CONF=str(self.conf), **extra)
        return env

    # -- start ---------------------------------------------------------------------------

    def start(self) -> None:
        for sub in ("munge", "state", "spool", "log", "shared"):
            (self.root / sub).mkdir(mode=0o755)
        self.shared.chmod(0o777 | 0o1000)  # any user's batch dirs, as a scratch filesystem
        self._start_munge()
        self._make_network()
        self.conf.write_text(
            SLURM_CONF.format(
                host=socket.gethostname(),
                ctld_addr=self.host_addr,
                ctld_port=self.ctld_port,
                slurmd_port=self.slurmd_port,
                root=self.root,
                nodeb_addr=self.nodeb_addr,
            )
        )
        self.engine.start()
        self._spawn("slurmctld", ["slurmctld", "-D", "-f", str(self.conf)])
        self._wait_port(self.ctld_port, "slurmctld")
        self.start_node("nodea")
        self.start_node("nodeb")
        self.wait_idle(["nodea", "nodeb"])

    def _start_munge(self) -> None:
        munge = self.root / "munge"
        key = munge / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o400)
        shutil.chown(munge, MUNGE_USER, MUNGE_USER)
        shutil.chown(key, MUNGE_USER, MUNGE_USER)
        argv = [
            "runuser", "-u", MUNGE_USER, "--", "munged", "-F",
            f"--socket={munge}/munge.sock", f"--key-file={key}",
            f"--pid-file={munge}/munged.pid", f"--log-file={munge}/munged.log",
            f"--seed-file={munge}/munged.seed",
        ]  # fmt: skip
        self._spawn("munged", argv)
        deadline = time.monotonic() + START_TIMEOUT
        while not (munge / "munge.sock").exists():
            if not self.daemons["munged"].alive or time.monotonic() > deadline:
                raise AssertionError(f"munged did not start: {self.log('munge/munged.log')}")
            time.sleep(POLL)

    def _make_network(self) -> None:
        """Node B's network namespace and a veth pair to it (the host end keeps its address
        in the host's namespace, where slurmctld listens)."""
        inner = f"{self.veth}b"
        run("ip", "netns", "add", self.netns)
        run("ip", "link", "add", self.veth, "type", "veth", "peer", "name", inner)
        run("ip", "link", "set", inner, "netns", self.netns)
        run("ip", "addr", "add", f"{self.host_addr}/24", "dev", self.veth)
        run("ip", "link", "set", self.veth, "up")
        inside = ["ip", "netns", "exec", self.netns]  # `ip` itself needs no cgroups
        run(*inside, "ip", "addr", "add", f"{self.nodeb_addr}/24", "dev", inner)
        run(*inside, "ip", "link", "set", inner, "up")
        run(*inside, "ip", "link", "set", "lo", "up")

    def start_node(self, name: str) -> None:
        argv = ["slurmd", "-D", "-N", name, "-f", str(self.conf)]
        if name == "nodeb":
            argv = self._isolated(argv)
        self._spawn(f"slurmd-{name}", argv)

    def _isolated(self, argv: list[str]) -> list[str]:
        """`argv` in node B's network namespace (nsenter: `ip netns exec` remounts /sys and
        hides cgroup v1) and a mount namespace of its own: tmpfs over the driver's files,
        the venv and the shared dir bound back, its engine at the default socket."""
        keep = {self.root / "keep-venv": VENV}
        steps = []
        for path in self.hidden:
            for kept, original in keep.items():
                if original.is_relative_to(path):
                    kept.mkdir(exist_ok=True)
                    steps.append(f"mount --bind {original} {kept}")
            steps.append(f"mount -t tmpfs -o size=16m,mode=755 sab-hidden {path}")
        for kept, original in keep.items():
            if kept.exists():
                steps += [f"mkdir -p {original}", f"mount --bind {kept} {original}"]
        steps += [f"mount --bind {self.engine.socket_path} {HOST_SOCKET}", 'exec "$@"']
        script = "set -e; " + "; ".join(steps)
        nsenter = ["nsenter", f"--net=/run/netns/{self.netns}"]
        unshare = ["unshare", "--mount", "--propagation", "private", "--"]
        return [*nsenter, *unshare, "sh", "-c", script, "sh", *argv]

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = self.root / "log" / f"{name}.out"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env(),
                start_new_session=True,  # a Ctrl-C meant for pytest does not reach it
            )
        self.daemons[name] = Daemon(name, proc)

    def _wait_port(self, port: int, name: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            with socket.socket() as sock:
                sock.settimeout(1.0)
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return
            if not self.daemons[name].alive or time.monotonic() > deadline:
                raise AssertionError(f"{name} did not start: {self.log(f'log/{name}.out')}")
            time.sleep(POLL)

    def node_state(self, name: str) -> str:
        out = run("sinfo", "-h", "-N", "-n", name, "-o", "%T", env=self.env())
        return out.strip().rstrip("*")

    def wait_idle(self, names: list[str]) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            states = {name: self.node_state(name) for name in names}
            if all(state == "idle" for state in states.values()):
                return
            if time.monotonic() > deadline:
                logs = "\n".join(self.log(f"log/slurmd-{n}.log") for n in names)
                raise AssertionError(f"nodes not idle: {states}\n{logs}")
            time.sleep(POLL)

    def log(self, relative: str, lines: int = 30) -> str:
        path = self.root / relative
        if not path.exists():
            return f"({relative} missing)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    # -- faults --------------------------------------------------------------------------

    def kill_node(self, name: str) -> None:
        """SIGKILL to a node's slurmd (its running jobs' slurmstepd live on, as on a machine
        whose daemon crashed)."""
        daemon = self.daemons.pop(f"slurmd-{name}")
        pid = int((self.root / f"slurmd-{name}.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        daemon.stop(signal.SIGKILL)

    def jobs(self) -> list[str]:
        """Every job the controller still lists as pending or running: `id state name`."""
        out = run("squeue", "-h", "-t", "PD,R,CG", "-o", "%i %T %j", env=self.env())
        return out.splitlines()

    # -- stop ----------------------------------------------------------------------------

    def close(self) -> None:
        with contextlib.suppress(Exception):
            run("scancel", "--full", "-u", "root", env=self.env())
        for name in reversed(list(self.daemons)):
            self.daemons[name].stop()
        # slurmstepd of jobs still running (a killed node's) and anything else naming us.
        for pid in processes_naming(self.root):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.engine.close()
        with contextlib.suppress(AssertionError):
            run("ip", "link", "del", self.veth)
        with contextlib.suppress(AssertionError):
            run("ip", "netns", "del", self.netns)
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def local_slurm_cluster(hidden: list[Path]) -> Iterator[LocalSlurmCluster]:
    require_host_bridge("before the Slurm cluster starts")
    root = Path("/tmp") / f"sab-slurm-{secrets.token_hex(3)}"
    root.mkdir(mode=0o755)
    cluster = LocalSlurmCluster(root, PrivateEngine(), hidden)
    before = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)  # the CLI processes the tests start too
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()
        if before is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = before
        require_host_bridge("after the Slurm cluster stopped")
    assert processes_naming(root) == [], processes_naming(root)
    assert not root.exists()
    assert not Path(f"/run/netns/{cluster.netns}").exists()


@pytest.fixture(name="slurm_cluster", scope="session")
def slurm_cluster_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSlurmCluster]:
    """The session's cluster; node B sees neither pytest's temp root nor /work."""
    pytest_root = tmp_path_factory.getbasetemp().parent
    with local_slurm_cluster([Path("/work"), pytest_root]) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def slurm_image(
    docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SessionImage]:
    """The image, built on the driver's (host) engine only: node B's engine gets it from the
    backend, through the batch dir."""
    yield from session_image(docker_client, tmp_path_factory.mktemp("slurm-image"))


@pytest.fixture
def out_dir(slurm_cluster: LocalSlurmCluster, request: pytest.FixtureRequest) -> Iterator[Path]:
    path = slurm_cluster.shared / request.node.name
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def node_b(slurm_cluster: LocalSlurmCluster) -> Iterator[docker.DockerClient]:
    client = slurm_cluster.engine.client()
    yield client
    client.close()
