"""A private Docker engine for tests: its own dockerd (and managed containerd), started and
restarted at will, removed without a trace.

Isolation from the host engine, each point learned on this machine:

* dockerd runs in its own network namespace (``unshare --net``). A second dockerd in the
  host's namespace deletes the host's ``docker0`` bridge even with ``--bridge=none``, after
  which no host container starts. The helper refuses to start when ``docker0`` is missing and
  raises :class:`HostBridgeMissing` whenever it finds it gone.
* Everything it writes lives under one short root, ``/tmp/sab-eng-<token>``; the API socket is
  ``/run/sab-<token>.sock`` (short: unix socket paths are limited to 107 bytes). The unix socket
  is on the shared filesystem, so host-side clients reach it although dockerd's network
  namespace is private.
* A private ``--config-file`` keeps ``/etc/docker/daemon.json`` out. Its one setting,
  ``deprecated-key-path`` (dockerd 20.10 has no flag for it), keeps dockerd from using
  ``/etc/docker/key.json``: with the host engine's key it would have the host engine's ID.
* Its containerd is its own (dockerd starts it under the exec root); the helper refuses to
  start if a system containerd socket exists, which dockerd 20.10 would use instead.
* ``--exec-opt native.cgroupdriver=cgroupfs --cgroup-parent=/sab-<token>`` put its containers
  in cgroups that name the engine, so their processes can be found and the cgroups removed.

dockerd bind-mounts its data root onto itself (and makes it shared) and mounts container
layers, shm and network-namespace files under its roots. A clean SIGTERM undoes all of that;
after a SIGKILL :meth:`PrivateEngine.close` kills what is left of the engine (found by network
namespace, cgroup and command line in /proc) and lazily unmounts leftovers, deepest first,
before deleting anything.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import docker
import docker.errors
import pytest

READY_TIMEOUT = 60.0  # seconds for dockerd to answer a ping; it takes ~0.2 s here
STOP_TIMEOUT = 60.0  # dockerd's own shutdown timeout for containers is 15 s
REAP_TIMEOUT = 10.0  # for processes to vanish after SIGTERM/SIGKILL
POLL = 0.05
LOG_TAIL_LINES = 40
SOCKET_PATH_MAX = 107  # sun_path is 108 bytes including the NUL
HOST_BRIDGE = "docker0"
# containerd >= 1.5 puts every shim's socket here, whatever its own state directory.
SHIM_SOCKET_DIR = Path("/run/containerd/s")
SYSTEM_CONTAINERD_SOCKET = Path("/run/containerd/containerd.sock")


class HostBridgeMissing(RuntimeError):
    """The host engine's bridge is gone: host containers cannot start. Do not paper over it."""


class PrivateEngineError(RuntimeError):
    """The private engine failed to start, stop or clean up."""


def host_bridge_present() -> bool:
    """True while the host engine's bridge (``docker0``) exists in the host's namespace."""
    result = subprocess.run(
        ["ip", "link", "show", HOST_BRIDGE], capture_output=True, check=False, timeout=30
    )
    return result.returncode == 0


def require_host_bridge(when: str) -> None:
    """Raises :class:`HostBridgeMissing` (naming `when`) if ``docker0`` does not exist."""
    if not host_bridge_present():
        raise HostBridgeMissing(
            f"the host's {HOST_BRIDGE} bridge is missing {when}; host containers cannot start. "
            "Stop and investigate; do not restart the host engine from a test."
        )


class PrivateEngine:
    """A dockerd of its own, in its own network namespace, with all state under `root`.

    Not started by the constructor: call :meth:`start` (or use :func:`private_engine`).
    `root` must not exist or be empty; the engine owns it and :meth:`close` deletes it.
    """

    def __init__(
        self,
        root: Path | None = None,
        *,
        ready_timeout: float = READY_TIMEOUT,
        runtimes: dict[str, dict[str, object]] | None = None,
    ) -> None:
        self.token = secrets.token_hex(4)
        self.runtimes = runtimes or {}  # daemon.json's `runtimes` (gVisor's runsc, say)
        self.root = Path(root) if root is not None else Path("/tmp") / f"sab-eng-{self.token}"
        self.data_root = self.root / "d"
        self.exec_root = self.root / "x"
        self.pidfile = self.root / "dockerd.pid"
        self.log_path = self.root / "dockerd.log"
        self.config_file = self.root / "daemon.json"
        self.key_file = self.root / "key.json"
        self.socket_path = Path("/run") / f"sab-{self.token}.sock"
        self.socket_url = f"unix://{self.socket_path}"
        self.cgroup_parent = f"/sab-{self.token}"
        self.ready_timeout = ready_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._netns: set[str] = set()  # every network namespace a dockerd of ours ran in
        self._clients: list[docker.DockerClient] = []
        self._prepared = False
        self._closed = False
        longest = self.exec_root / "containerd" / "containerd.sock.ttrpc"
        if len(str(longest)) > SOCKET_PATH_MAX or len(str(self.socket_path)) > SOCKET_PATH_MAX:
            raise ValueError(f"engine root {self.root} is too long for containerd's sockets")

    # -- life cycle ----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """dockerd's pid while it runs (``unshare`` execs dockerd, so it is the Popen pid)."""
        return self._proc.pid if self.running and self._proc is not None else None

    def start(self) -> None:
        """Starts dockerd and waits until it answers a ping; same data root every time."""
        if self._closed:
            raise PrivateEngineError("engine is closed")
        if self.running:
            raise PrivateEngineError("engine is already running")
        require_host_bridge("before starting a private dockerd")
        if SYSTEM_CONTAINERD_SOCKET.exists():
            # dockerd 20.10 would use that containerd instead of starting its own.
            raise PrivateEngineError(f"{SYSTEM_CONTAINERD_SOCKET} exists: a system containerd")
        self._prepare_root()
        self._remove_stale_socket()
        self._remove_stale_pidfiles()
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        with self.log_path.open("ab") as log:
            # unshare without --fork execs dockerd: the Popen pid is dockerd's.
            # A session of its own: a Ctrl-C meant for pytest does not reach it.
            self._proc = subprocess.Popen(
                ["unshare", "--net", "--", "dockerd", *self._dockerd_args()],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        try:
            self._wait_ready()
        except BaseException:
            self._kill_everything()
            raise
        require_host_bridge("right after a private dockerd started")

    def stop(self) -> None:
        """SIGTERMs dockerd (it stops its containers and containerd) and waits for all of it.

        If dockerd had already died (crashed, or :meth:`kill`), whatever it left running
        (shims, containers) is killed without complaint.
        """
        self._stop()
        require_host_bridge("after a private dockerd stopped")

    def kill(self) -> None:
        """SIGKILLs dockerd alone, like a crash: its containerd dies with it (dockerd starts it
        with a parent-death signal), but shims and containers keep running until
        :meth:`stop`, :meth:`close` or the next dockerd's start-up deals with them."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is not None:
            self._kill_everything(proc)
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._kill_everything(proc)
            raise PrivateEngineError(
                f"dockerd ignored SIGTERM for {STOP_TIMEOUT:.0f} s; killed\n{self.log_tail()}"
            ) from None
        leftover = self._wait_gone(self._engine_pids, REAP_TIMEOUT)
        if leftover:
            self._kill_everything(proc)
            raise PrivateEngineError(
                f"processes of the engine outlived dockerd (killed): {leftover}\n{self.log_tail()}"
            )

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        """Stops the engine, then removes everything it made. Idempotent."""
        if self._closed:
            return
        self._closed = True
        errors: list[str] = []
        for client in self._clients:
            with contextlib.suppress(Exception):
                client.close()
        self._clients.clear()
        try:
            self._stop()
        except PrivateEngineError as exc:
            errors.append(str(exc))
        self._kill_everything()
        errors += self._remove_shim_sockets()
        errors += self._unmount_leftovers()
        errors += self._remove_cgroups()
        if not self._prepared:
            pass  # never started: the root (perhaps the caller's) is not ours to delete
        elif self._mounts_under_root():
            errors.append(f"mounts remain under {self.root}; not deleting it")
        else:
            shutil.rmtree(self.root, ignore_errors=True)
            if self.root.exists():
                errors.append(f"could not delete {self.root}")
        self._remove_stale_socket()
        if self.socket_path.exists():
            errors.append(f"could not delete {self.socket_path}")
        require_host_bridge("after a private dockerd was closed")
        if errors:
            raise PrivateEngineError("private engine cleanup: " + "; ".join(errors))

    def __enter__(self) -> PrivateEngine:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- use -----------------------------------------------------------------------------

    def client(self, timeout: int = 120) -> docker.DockerClient:
        """A client of this engine (closed by :meth:`close`). It keeps working across restarts."""
        client = docker.DockerClient(base_url=self.socket_url, timeout=timeout)
        self._clients.append(client)
        return client

    def load_images(self, host: docker.DockerClient, tags: Sequence[str]) -> None:
        """Copies images from `host` (``docker save`` | ``docker load``), streamed in chunks.

        Tags already present here are skipped.
        """
        api = docker.APIClient(base_url=self.socket_url, timeout=600)
        try:
            for tag in tags:
                if _has_image(api, tag):
                    continue
                # get_image yields the tar in chunks; requests sends a generator chunked.
                tar_stream = host.api.get_image(tag, chunk_size=1 << 20)
                for message in api.load_image(tar_stream):
                    if "error" in message or "errorDetail" in message:
                        raise PrivateEngineError(f"loading {tag}: {message}")
                if not _has_image(api, tag):
                    raise PrivateEngineError(f"{tag} is not present after loading it")
        finally:
            api.close()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no dockerd log)"
        return "--- dockerd log (tail) ---\n" + "\n".join(text.splitlines()[-lines:])

    def processes(self) -> list[int]:
        """Pids of everything of this engine still alive: dockerd, containerd, shims, containers."""
        return self._engine_pids()

    # -- internals -----------------------------------------------------------------------

    def _dockerd_args(self) -> list[str]:
        return [
            f"--data-root={self.data_root}",
            f"--exec-root={self.exec_root}",
            f"--pidfile={self.pidfile}",
            f"--host={self.socket_url}",
            f"--config-file={self.config_file}",
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
            "--ip-masq=false",
            "--ip-forward=false",
            "--exec-opt=native.cgroupdriver=cgroupfs",
            f"--cgroup-parent={self.cgroup_parent}",
            "--log-level=warn",
        ]

    def _prepare_root(self) -> None:
        if self._prepared:  # a restart: same root, same data
            return
        if self.root.exists() and any(self.root.iterdir()):
            raise PrivateEngineError(f"engine root {self.root} exists and is not empty")
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Not /etc/docker/daemon.json, and not /etc/docker/key.json (the host engine's ID).
        config: dict[str, object] = {"deprecated-key-path": str(self.key_file)}
        if self.runtimes:
            config["runtimes"] = self.runtimes
        self.config_file.write_text(json.dumps(config) + "\n", encoding="utf-8")
        self._prepared = True

    def _remove_stale_socket(self) -> None:
        if not self.running:
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()

    def _remove_stale_pidfiles(self) -> None:
        """After a crash dockerd's and containerd's pidfiles stay. dockerd refuses to start if
        the pid in its file exists; it waits (and fails) for a containerd whose pid "is alive"
        by kill(pid, 0), which a not yet reaped zombie or an unrelated process also passes."""
        for pidfile in (self.pidfile, self.exec_root / "containerd" / "containerd.pid"):
            try:
                pid = int(pidfile.read_text().strip() or "0")
            except (OSError, ValueError):
                pid = 0
            if pid not in self._engine_pids():
                with contextlib.suppress(FileNotFoundError):
                    pidfile.unlink()

    def _wait_ready(self) -> None:
        proc = self._proc
        assert proc is not None
        host_netns = os.readlink("/proc/self/ns/net")
        deadline = time.monotonic() + self.ready_timeout
        while True:
            if proc.poll() is not None:
                raise PrivateEngineError(
                    f"dockerd exited with {proc.returncode} while starting\n{self.log_tail()}"
                )
            netns = _dockerd_netns(proc.pid)
            if netns is not None:
                if netns == host_netns:
                    raise PrivateEngineError("dockerd runs in the host's network namespace")
                self._netns.add(netns)
            if netns is not None and _ping(self.socket_path, deadline - time.monotonic()):
                return
            if time.monotonic() >= deadline:
                raise PrivateEngineError(
                    f"dockerd did not answer on {self.socket_url} within "
                    f"{self.ready_timeout:.0f} s\n{self.log_tail()}"
                )
            time.sleep(POLL)

    def _engine_pids(self) -> list[int]:
        """Live processes of this engine: in its cgroups (containers), or in one of its network
        namespaces and naming its root (dockerd, containerd, shims, runc, hooks). Both are
        needed: a freed namespace's inode number can be reused for a host container's."""
        me = os.getpid()
        cgroup_mark = re.compile(rf":{re.escape(self.cgroup_parent)}(/|$)", re.M)
        root_mark = str(self.root).encode() + b"/"
        found = []
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) == me:
                continue
            pid = int(entry.name)
            try:
                if _is_zombie(pid):
                    continue
                if cgroup_mark.search(Path(f"/proc/{pid}/cgroup").read_text()) or (
                    os.readlink(f"/proc/{pid}/ns/net") in self._netns
                    and root_mark in Path(f"/proc/{pid}/cmdline").read_bytes()
                ):
                    found.append(pid)
            except OSError:  # gone meanwhile, or a kernel thread
                continue
        return found

    def _kill_everything(self, proc: subprocess.Popen[bytes] | None = None) -> None:
        """SIGKILLs dockerd and every process of the engine, and waits for them to vanish."""
        if proc is None:
            proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
        if proc is not None:
            proc.wait()
        for _ in range(3):  # a shim may be forking a process while we look
            pids = self._engine_pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self._wait_gone(self._engine_pids, REAP_TIMEOUT)

    @staticmethod
    def _wait_gone(probe: Callable[[], list[int]], timeout: float) -> list[int]:
        deadline = time.monotonic() + timeout
        while True:
            left = probe()
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(POLL)

    def _mounts_under_root(self) -> list[Path]:
        points = map(Path, _mount_points())
        return [p for p in points if p == self.root or self.root in p.parents]

    def _unmount_leftovers(self) -> list[str]:
        errors = []
        for _ in range(3):  # lazy unmounts of nested mounts may expose others
            leftovers = self._mounts_under_root()
            if not leftovers:
                return []
            for point in sorted(leftovers, key=lambda p: len(p.parts), reverse=True):
                result = subprocess.run(
                    ["umount", "-l", str(point)], capture_output=True, text=True, check=False
                )
                if result.returncode != 0 and point in self._mounts_under_root():
                    errors.append(f"umount -l {point}: {result.stderr.strip()}")
        left = self._mounts_under_root()
        return errors + ([f"mounts remain: {left}"] if left else [])

    def _remove_shim_sockets(self) -> list[str]:
        """A shim killed with SIGKILL leaves its socket in /run/containerd/s (host-wide)."""
        sockets = set()
        tasks = self.exec_root / "containerd" / "daemon" / "io.containerd.runtime.v2.task"
        for address_file in tasks.glob("*/*/address"):
            with contextlib.suppress(OSError):
                sockets.add(address_file.read_text().strip().removeprefix("unix://"))
        containerd_socket = self.exec_root / "containerd" / "containerd.sock"
        containers = self.data_root / "containers"
        if containers.is_dir():
            for container in containers.iterdir():
                key = f"{containerd_socket}/moby/{container.name}".encode()
                sockets.add(str(SHIM_SOCKET_DIR / hashlib.sha256(key).hexdigest()))
        errors = []
        for path in map(Path, sockets):
            if path.parent != SHIM_SOCKET_DIR:
                continue
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                errors.append(f"{path}: {exc}")
        return errors

    def _cgroup_dirs(self) -> list[Path]:
        relative = self.cgroup_parent.lstrip("/")
        return [p / relative for p in _cgroup_mounts() if (p / relative).is_dir()]

    def _remove_cgroups(self) -> list[str]:
        deadline = time.monotonic() + REAP_TIMEOUT
        while True:
            errors = []
            for top in self._cgroup_dirs():
                for dirpath, _dirs, _files in sorted(
                    os.walk(top), key=lambda walked: len(walked[0]), reverse=True
                ):
                    try:
                        os.rmdir(dirpath)
                    except OSError as exc:  # EBUSY while the kernel finishes an exit
                        errors.append(f"rmdir {dirpath}: {exc}")
            if not errors or time.monotonic() >= deadline:
                return errors
            time.sleep(POLL)


def _has_image(api: docker.APIClient, tag: str) -> bool:
    try:
        api.inspect_image(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def _ping(path: Path, timeout: float) -> bool:
    """True if an engine answers GET /_ping on the unix socket at `path`."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(max(0.1, min(timeout, 5.0)))
            sock.connect(str(path))
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            reply = b""
            while chunk := sock.recv(4096):
                reply += chunk
    except OSError:
        return False
    return reply.startswith(b"HTTP/1.") and b" 200 " in reply.split(b"\r\n", 1)[0]


def _dockerd_netns(pid: int) -> str | None:
    """The network namespace of `pid` once unshare has exec'd dockerd (None before)."""
    try:
        if os.path.basename(os.readlink(f"/proc/{pid}/exe")) == "unshare":
            return None
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


def _is_zombie(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2 :].startswith(("Z", "X"))


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _mountinfo() -> list[list[str]]:
    return [line.split() for line in Path("/proc/self/mountinfo").read_text().splitlines()]


def _mount_points() -> list[str]:
    return [_unescape(fields[4]) for fields in _mountinfo()]


def _cgroup_mounts() -> list[Path]:
    points = []
    for fields in _mountinfo():
        fstype = fields[fields.index("-") + 1]
        if fstype in ("cgroup", "cgroup2") and fields[3] == "/":
            points.append(Path(_unescape(fields[4])))
    return points


@contextmanager
def private_engine(
    root: Path | None = None, runtimes: dict[str, dict[str, object]] | None = None
) -> Iterator[PrivateEngine]:
    """A started private engine, closed (everything removed) on exit, even after a failure."""
    engine = PrivateEngine(root, runtimes=runtimes)
    try:
        engine.start()
        yield engine
    finally:
        engine.close()


# Fixtures. Registered under these names; a test module imports the functions (their own
# names differ, so the import is not shadowed by the test's parameter), or a conftest lists
# "private_engine" in pytest_plugins.


@pytest.fixture(name="private_dockerd")
def private_dockerd_fixture() -> Iterator[PrivateEngine]:
    """A private engine for one test; checks the host bridge before and after."""
    with private_engine() as engine:
        yield engine


@pytest.fixture(name="private_dockerd_module", scope="module")
def private_dockerd_module_fixture() -> Iterator[PrivateEngine]:
    """A private engine shared by the tests of a module (load images once)."""
    with private_engine() as engine:
        yield engine
