"""Faults on the real local cluster: a timeout kills the remote container, Ctrl-C cancels every
task and leaves no container on any engine, a node lost mid-run ends its attempts `error`
(`node lost`), `clean --backend ray` removes what it left once it is back and `rerun`
completes the batch; and env values reach no file of Ray's. Marked `ray` and `docker`."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from engine_cli import (
    CLI,
    EXIT_TIMEOUT,
    SessionImage,
    containers_of,
    finish,
    runs_by_id,
    valid_manifest,
    wait_for,
    wait_for_batch,
)
from private_engine import host_bridge_present
from ray_cluster import LocalRayCluster
from records import outcome_of
from test_ray_backend import only_batch, ray_cli

pytestmark = [pytest.mark.ray, pytest.mark.docker]

SLEEPER = "import time\nprint('sleeping', flush=True)\ntime.sleep(600)\n"
NAPPER = "import time\nprint('napping', flush=True)\ntime.sleep(6)\nprint('up')\n"


def start_ray_cli(cluster: LocalRayCluster, args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLI, *args, "--backend", "ray", "--ray-address", cluster.address],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a signal the test sends reaches the orchestrator alone
    )


def labelled(client: docker.DockerClient) -> list[str]:
    """Containers of any batch on an engine (the private one serves this session alone)."""
    found = client.api.containers(all=True, filters={"label": "safeagents-batch.batch"})
    return [c["Id"] for c in found]


def test_a_timeout_kills_the_remote_container(
    ray_cluster: LocalRayCluster,
    ray_image: SessionImage,
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    jobs = ray_image.project(
        tmp_path / "p",
        "timeout",
        "  - {name: s, framework: plain, scripts: s.py, repeat: 4, timeout: 2, network: none}\n",
        {"s.py": SLEEPER},
    )
    done = ray_cli(ray_cluster, ["run", str(jobs), "-o", str(tmp_path / "out"), "--no-progress"])
    assert done.returncode == 1, done.stdout + done.stderr
    batch_dir = only_batch(tmp_path / "out")
    runs = runs_by_id(valid_manifest(batch_dir)).values()
    assert {(r["status"], r["error"]) for r in runs} == {("timed_out", "killed after the timeout")}
    nodes = {outcome_of(r["attempts"][0])["node"]["node_id"] for r in runs}
    assert nodes == {ray_cluster.nodes["host"].node_id, ray_cluster.nodes["private"].node_id}
    for run in runs:
        assert (batch_dir / run["log_dir"] / "stdout.log").read_text() == "sleeping\n"
    assert containers_of(docker_client, batch_dir) == []
    assert containers_of(ray_cluster.private_engine.client(), batch_dir) == []


def test_ctrl_c_cancels_every_task_and_leaves_no_container_on_any_node(
    ray_cluster: LocalRayCluster,
    ray_image: SessionImage,
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    jobs = ray_image.project(
        tmp_path / "p",
        "ctrlc",
        "  - {name: s, framework: plain, scripts: s.py, repeat: 6, network: none}\n",
        {"s.py": SLEEPER},
    )
    private = ray_cluster.private_engine.client()
    output = tmp_path / "out"
    proc = start_ray_cli(ray_cluster, ["run", str(jobs), "-o", str(output), "-j", "4"])
    batch_dir = wait_for_batch(output, proc, running=4)
    # Containers on both engines, so that the cancellation reaches both nodes.
    wait_for(lambda: bool(containers_of(private, batch_dir)), "a container on the private node")
    wait_for(lambda: bool(containers_of(docker_client, batch_dir)), "a container on the host")

    proc.send_signal(signal.SIGINT)
    code, _, stderr = finish(proc)

    assert code == 130, stderr
    runs = runs_by_id(valid_manifest(batch_dir)).values()
    assert sorted(r["status"] for r in runs) == ["cancelled"] * 6
    assert containers_of(private, batch_dir) == []
    assert containers_of(docker_client, batch_dir) == []


def test_a_lost_node_ends_its_attempts_node_lost_clean_removes_its_leftovers_rerun_completes(
    ray_cluster: LocalRayCluster,
    ray_image: SessionImage,
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    jobs = ray_image.project(
        tmp_path / "p",
        "lost",
        "  - {name: n, framework: plain, scripts: n.py, repeat: 4, network: none}\n",
        {"n.py": NAPPER},
    )
    private_node = ray_cluster.nodes["private"]
    private = ray_cluster.private_engine.client()
    assert labelled(private) == []
    output = tmp_path / "out"
    proc = start_ray_cli(ray_cluster, ["run", str(jobs), "-o", str(output), "-j", "4"])
    batch_dir = wait_for_batch(output, proc, running=4)
    wait_for(lambda: len(containers_of(private, batch_dir)) == 2, "2 containers on the node")

    os.kill(private_node.raylet_pid(), signal.SIGKILL)  # the node is lost mid-run
    code, _, stderr = finish(proc)

    assert code == 1, stderr
    runs = runs_by_id(valid_manifest(batch_dir)).values()
    lost = [
        r for r in runs if outcome_of(r["attempts"][0])["node"]["node_id"] == private_node.node_id
    ]
    assert len(lost) == 2
    for run in lost:
        assert run["status"] == "error" and run["error"].startswith("node lost"), run
    assert {r["status"] for r in runs if r not in lost} == {"succeeded"}
    # Its containers outlived it: nothing on that node could remove them.
    assert len(containers_of(private, batch_dir)) == 2

    private_node = ray_cluster.restart_worker("private")  # back, with the same engine
    cleaned = ray_cli(ray_cluster, ["clean"])
    assert cleaned.returncode == 0, cleaned.stderr
    back_id = private_node.node_id
    assert back_id is not None
    mine = [line for line in cleaned.stdout.splitlines() if back_id[:12] in line]
    assert sum("removed container" in line for line in mine) == 2, cleaned.stdout
    assert containers_of(private, batch_dir) == []

    again = ray_cli(ray_cluster, ["rerun", str(batch_dir), "--no-progress"])
    assert again.returncode == 0, again.stdout + again.stderr
    assert {r["status"] for r in runs_by_id(valid_manifest(batch_dir)).values()} == {"succeeded"}
    assert containers_of(private, batch_dir) == containers_of(docker_client, batch_dir) == []
    assert host_bridge_present()


def test_attempts_of_a_lost_node_are_retried_on_another_node_under_retries(
    ray_cluster: LocalRayCluster,
    ray_image: SessionImage,
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    jobs = ray_image.project(
        tmp_path / "p",
        "retried",
        "  - {name: n, framework: plain, scripts: n.py, repeat: 4, network: none, retries: 1}\n",
        {"n.py": NAPPER},
    )
    lost_node, host_node = ray_cluster.nodes["private"], ray_cluster.nodes["host"]
    private = ray_cluster.private_engine.client()
    output = tmp_path / "out"
    proc = start_ray_cli(ray_cluster, ["run", str(jobs), "-o", str(output), "-j", "4"])
    batch_dir = wait_for_batch(output, proc, running=4)
    wait_for(lambda: len(containers_of(private, batch_dir)) == 2, "2 containers on the node")

    os.kill(lost_node.raylet_pid(), signal.SIGKILL)
    code, _, stderr = finish(proc)

    assert code == 0, stderr  # every run succeeded in the end
    runs = runs_by_id(valid_manifest(batch_dir)).values()
    retried = [r for r in runs if len(r["attempts"]) == 2]
    assert len(retried) == 2
    for run in retried:
        first, second = run["attempts"]
        assert outcome_of(first)["node"]["node_id"] == lost_node.node_id
        assert (outcome_of(first)["status"], outcome_of(first)["error"][:9]) == (
            "error",
            "node lost",
        )
        again = outcome_of(second)
        assert (again["status"], again["node"]["node_id"]) == ("succeeded", host_node.node_id)
    assert containers_of(docker_client, batch_dir) == []

    back = ray_cluster.restart_worker("private")
    assert back.node_id is not None
    cleaned = ray_cli(ray_cluster, ["clean"])
    assert cleaned.returncode == 0, cleaned.stderr
    assert containers_of(private, batch_dir) == []


def test_env_values_reach_the_container_and_no_file_of_ray(
    ray_cluster: LocalRayCluster,
    ray_image: SessionImage,
    tmp_path: Path,
) -> None:
    secret = f"sab-secret-{secrets.token_hex(12)}"
    digest = hashlib.sha256(secret.encode()).hexdigest()
    script = (
        "import hashlib, os\nprint(hashlib.sha256(os.environ['SAB_TOKEN'].encode()).hexdigest())\n"
    )
    jobs = ray_image.project(
        tmp_path / "p",
        "secret",
        "  - {name: s, framework: plain, scripts: s.py, repeat: 4, network: none,\n"
        "     env_passthrough: [SAB_TOKEN]}\n",
        {"s.py": script},
    )
    ray_flags = ["--backend", "ray", "--ray-address", ray_cluster.address]
    done = subprocess.run(
        [*CLI, "run", str(jobs), "-o", str(tmp_path / "out"), "--no-progress", *ray_flags],
        env={**os.environ, "SAB_TOKEN": secret},
        capture_output=True,
        text=True,
        timeout=EXIT_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    batch_dir = only_batch(tmp_path / "out")
    for run in runs_by_id(valid_manifest(batch_dir)).values():
        assert (batch_dir / run["log_dir"] / "stdout.log").read_text() == digest + "\n"
    time.sleep(1)  # Ray's log monitor and event exporters flush about once a second
    holders = [p for p in ray_cluster.root.rglob("*") if _holds(p, secret.encode())]
    assert holders == []
    assert [p for p in batch_dir.rglob("*") if _holds(p, secret.encode())] == []


def _holds(path: Path, needle: bytes) -> bool:
    if path.is_symlink() or not path.is_file():
        return False
    try:
        return needle in path.read_bytes()
    except OSError:  # a socket, or gone meanwhile
        return False


@contextlib.contextmanager
def code_caches_broken(cluster: LocalRayCluster) -> Iterator[None]:
    """On every node, a file where the node's cache of code snapshots goes: unpacking any
    snapshot raises there (FileExistsError). Put back as it was afterwards."""
    caches = [node.cache for node in cluster.nodes.values() if node.cache is not None]
    moved = []
    try:
        for cache in caches:
            cache.mkdir(mode=0o700, exist_ok=True)  # a node makes it on first use
            code = cache / "code"
            if code.exists():
                moved.append((code, code.rename(cache / "code.kept")))
            code.write_text("not a directory\n")
        yield
    finally:
        for cache in caches:
            (cache / "code").unlink(missing_ok=True)
        for code, kept in moved:
            kept.rename(code)


def test_an_attempt_whose_code_cannot_be_unpacked_fails_at_once_with_its_cause(
    ray_cluster: LocalRayCluster, ray_image: SessionImage, tmp_path: Path
) -> None:
    jobs = ray_image.project(
        tmp_path / "p",
        "unpack",
        "  - {name: u, framework: plain, scripts: u.py, repeat: 2, network: none}\n",
        {"u.py": "print('never runs')\n"},
    )
    with code_caches_broken(ray_cluster):
        done = ray_cli(ray_cluster, ["run", str(jobs), "-o", str(tmp_path / "out")])
    assert done.returncode == 1, done.stdout + done.stderr
    batch_dir = only_batch(tmp_path / "out")
    for run in runs_by_id(valid_manifest(batch_dir)).values():
        [attempt] = run["attempts"]
        # The node's own outcome (its node named), not Ray's text of a failed call after the
        # node-death wait: the cause, and where it was raised.
        assert outcome_of(attempt)["node"]["node_id"] in {
            n.node_id for n in ray_cluster.nodes.values()
        }
        assert outcome_of(attempt)["error"].startswith(
            "on the node, before the container started: FileExistsError: [Errno 17] File exists:"
        ), outcome_of(attempt)["error"]
        assert "called from safeagents_batch/backends/ray/node.py:" in outcome_of(attempt)["error"]
        assert "in code_dir)" in outcome_of(attempt)["error"]
        trace = (batch_dir / attempt["log_dir"] / "traceback.log").read_text()
        assert trace.startswith("Traceback (most recent call last):")
        assert trace.rstrip().splitlines()[-1].startswith("FileExistsError: [Errno 17]")
        assert (batch_dir / attempt["log_dir"] / "stdout.log").read_text() == ""
