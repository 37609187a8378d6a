"""The private Docker engine helper: answers, runs a loaded image, survives restarts, and
leaves nothing behind; the host engine keeps working throughout."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from private_engine import (
    PrivateEngine,
    host_bridge_present,
    require_host_bridge,
)

pytestmark = pytest.mark.docker

IMAGE = "python:3.11-slim"


@pytest.fixture(scope="module")
def host() -> Iterator[docker.DockerClient]:
    client = docker.from_env(timeout=120)
    client.ping()
    yield client
    client.close()


@pytest.fixture(autouse=True)
def _host_bridge_kept() -> Iterator[None]:
    require_host_bridge("before the test")
    yield
    require_host_bridge("after the test")


def test_answers_on_its_own_socket(
    private_dockerd_module: PrivateEngine, host: docker.DockerClient
) -> None:
    engine = private_dockerd_module
    assert engine.socket_url == f"unix:///run/sab-{engine.token}.sock"
    client = engine.client()
    assert client.ping()
    info = client.info()
    assert info["DockerRootDir"] == str(engine.data_root)
    assert info["ID"] != host.info()["ID"]  # its own key, not /etc/docker/key.json
    assert engine.pid is not None
    assert os.readlink(f"/proc/{engine.pid}/ns/net") != os.readlink("/proc/self/ns/net")


def test_runs_a_loaded_image_without_network(
    private_dockerd_module: PrivateEngine, host: docker.DockerClient
) -> None:
    engine = private_dockerd_module
    engine.load_images(host, [IMAGE])
    engine.load_images(host, [IMAGE])  # already there: skipped
    client = engine.client()
    output = client.containers.run(
        IMAGE, ["python", "-c", "print(42)"], network_mode="none", remove=True
    )
    assert output == b"42\n"


def test_containers_and_images_survive_restart(
    private_dockerd_module: PrivateEngine, host: docker.DockerClient
) -> None:
    engine = private_dockerd_module
    engine.load_images(host, [IMAGE])
    client = engine.client()
    exited = client.containers.create(IMAGE, ["python", "-c", "print(7)"], network_mode="none")
    running = client.containers.run(
        IMAGE,
        ["python", "-c", "import time; time.sleep(600)"],
        network_mode="none",
        stop_signal="SIGKILL",  # dockerd's shutdown need not wait 10 s for PID 1 to ignore TERM
        detach=True,
    )
    try:
        exited.start()
        assert exited.wait(timeout=60)["StatusCode"] == 0
        old_pid = engine.pid

        engine.restart()

        assert engine.pid != old_pid
        exited.reload()  # the same client object works across the restart
        running.reload()
        assert exited.status == "exited"
        assert running.status == "exited"  # the engine stopped it
        assert client.images.get(IMAGE).tags == [IMAGE]
        exited.start()
        assert exited.wait(timeout=60)["StatusCode"] == 0
        assert exited.logs() == b"7\n7\n"
    finally:
        for container in (exited, running):
            container.remove(force=True)


def test_starts_again_after_a_crash(
    private_dockerd_module: PrivateEngine, host: docker.DockerClient
) -> None:
    """kill() leaves stale pidfiles, a shim and its container; start() copes."""
    engine = private_dockerd_module
    engine.load_images(host, [IMAGE])
    client = engine.client()
    running = client.containers.run(
        IMAGE, ["sleep", "600"], network_mode="none", stop_signal="SIGKILL", detach=True
    )
    try:
        engine.kill()
        assert engine.pid is None
        assert len(engine.processes()) >= 2  # the shim and `sleep` outlive dockerd

        engine.start()

        running.reload()
        assert running.status == "exited"  # the new dockerd stopped the orphan
        output = client.containers.run(IMAGE, ["echo", "ok"], network_mode="none", remove=True)
        assert output == b"ok\n"
    finally:
        running.remove(force=True)


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_close_leaves_nothing(
    how: str, private_dockerd: PrivateEngine, host: docker.DockerClient
) -> None:
    """`stop`: a clean SIGTERM. `kill`: dockerd SIGKILLed while a container runs, leaving its
    shim, container, mounts, cgroups and shim socket for close() to clean up."""
    engine = private_dockerd
    shim_sockets = []
    if how == "kill":
        engine.load_images(host, [IMAGE])
        container = engine.client().containers.run(
            IMAGE, ["sleep", "600"], network_mode="none", detach=True
        )
        shim_sockets.append(_shim_socket(engine, container.id))
        assert shim_sockets[0].exists()
    pids = engine.processes()
    assert len(pids) >= (4 if how == "kill" else 2)  # dockerd, containerd (+ shim, sleep)
    assert _mounts_under(engine.root)  # its data root is bind-mounted onto itself
    if how == "kill":
        engine.kill()
        assert engine.pid is None

    engine.close()

    assert [pid for pid in pids if _alive(pid)] == []
    assert engine.processes() == []
    assert not engine.root.exists()
    assert not engine.socket_path.exists()
    assert _mounts_under(engine.root) == []
    assert [path for path in shim_sockets if path.exists()] == []
    assert list(Path("/sys/fs/cgroup").glob(f"*/sab-{engine.token}")) == []
    assert host_bridge_present()
    host.containers.run(IMAGE, ["true"], name=f"sab-host-check-{engine.token}", remove=True)


def _shim_socket(engine: PrivateEngine, container_id: str) -> Path:
    """Where containerd 1.6 puts a container's shim socket: host-wide, named by a hash."""
    key = f"{engine.exec_root}/containerd/containerd.sock/moby/{container_id}"
    return Path("/run/containerd/s") / hashlib.sha256(key.encode()).hexdigest()


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def _mounts_under(root: Path) -> list[str]:
    prefix = f"{root}/"
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return [p for p in points if p == str(root) or p.startswith(prefix)]
