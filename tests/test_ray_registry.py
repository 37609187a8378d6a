"""`--registry HOST:PORT` on the real local cluster, against Debian's `docker-registry` on
loopback (tests/local_registry.py): the driver pushes the image there once and leaves no
registry name on its engine, the private node (its engine in its own network namespace, where
the same address is bridged to the registry) pulls it from there rather than through Ray; a
registry that does not answer the push, or that the node cannot reach for its pull, ends the
runs `error` in one line naming it, with no traceback. Marked `ray` and `docker`; never
skipped."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest
from engine_cli import SessionImage, cli, containers_of, runs_by_id, valid_manifest
from local_registry import BRIDGE_SOURCE, LocalRegistry, free_port, start_registry
from private_engine import host_bridge_present
from ray_cluster import LocalRayCluster
from records import outcome_of
from test_ray_backend import only_batch, ray_cli

pytestmark = [pytest.mark.ray, pytest.mark.docker]

NAPPER = "import time\nprint('napping', flush=True)\ntime.sleep(1)\nprint('up', flush=True)\n"
RUNS = 6


@pytest.fixture(scope="module")
def session_tag(ray_image: SessionImage, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tag of the plain projects of `ray_image`, as `plan` names it (other tests of the
    session build more images under the same name, with other framework configs)."""
    jobs = ray_image.project(
        tmp_path_factory.mktemp("tag"),
        "tag",
        "  - {name: t, framework: plain, scripts: t.py}\n",
        {"t.py": "print('t')\n"},
    )
    planned = cli(["plan", str(jobs), "--json"])
    assert planned.returncode == 0, planned.stderr
    tag: str = json.loads(planned.stdout)["runs"][0]["image"]
    return tag


@pytest.fixture(scope="module")
def private(
    ray_cluster: LocalRayCluster, docker_client: docker.DockerClient, session_tag: str
) -> Iterator[docker.DockerClient]:
    """The private engine, which has the session image at the end if and only if it had it
    at the start (the tests here remove it, so that the node must get it)."""
    client = ray_cluster.private_engine.client()
    had = has_image(client, session_tag)
    yield client
    if had and not has_image(client, session_tag):
        ray_cluster.private_engine.load_images(docker_client, [session_tag])
    elif not had and has_image(client, session_tag):
        client.api.remove_image(session_tag)


@pytest.fixture
def registry() -> Iterator[LocalRegistry]:
    """A registry on the host's loopback (the private engine reaches it only once bridged)."""
    started = start_registry()
    try:
        yield started
    finally:
        started.close()


def has_image(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.api.inspect_image(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def napping_jobs(image: SessionImage, root: Path, name: str, runs: int) -> Path:
    """A jobs file of `runs` runs of NAPPER on the session's plain image."""
    job = f"  - {{name: nap, framework: plain, scripts: nap.py, repeat: {runs}, network: none}}\n"
    return image.project(root, name, job, {"nap.py": NAPPER})


def without_image(client: docker.DockerClient, tag: str) -> None:
    if has_image(client, tag):
        client.api.remove_image(tag)


def registry_names(address: str, *clients: docker.DockerClient) -> list[str]:
    """Tags and digests of images under the registry's address, on any of the engines."""
    return [
        name
        for client in clients
        for image in client.api.images()
        for name in (image.get("RepoTags") or []) + (image.get("RepoDigests") or [])
        if name.startswith(f"{address}/")
    ]


@contextlib.contextmanager
def names_removed(address: str, *clients: docker.DockerClient) -> Iterator[None]:
    """On the way out, whatever happened, no image name under `address` on the engines."""
    try:
        yield
    finally:
        for client in clients:
            for name in registry_names(address, client):
                with contextlib.suppress(docker.errors.NotFound):
                    client.api.remove_image(name)


def test_the_image_is_pushed_once_and_the_node_that_lacks_it_pulls_it_from_the_registry(
    ray_cluster: LocalRayCluster,
    ray_image: SessionImage,
    docker_client: docker.DockerClient,
    private: docker.DockerClient,
    session_tag: str,
    registry: LocalRegistry,
    tmp_path: Path,
) -> None:
    jobs = napping_jobs(ray_image, tmp_path / "p", "registry", RUNS)
    output = tmp_path / "out"
    without_image(private, session_tag)
    assert ray_cluster.private_engine.pid is not None
    registry.reach_from(ray_cluster.private_engine.pid)
    args = ["run", str(jobs), "-o", str(output), "-j", "4", "--no-progress"]

    with names_removed(registry.address, docker_client, private):
        done = ray_cli(ray_cluster, [*args, "--registry", registry.address])
        left = registry_names(registry.address, docker_client, private)

    assert done.returncode == 0, done.stdout + done.stderr
    batch_dir = only_batch(output)
    runs = runs_by_id(valid_manifest(batch_dir)).values()
    assert len(runs) == RUNS
    nodes = {ray_cluster.nodes[n].node_id: n for n in ("host", "private")}
    used = set()
    for run in runs:
        assert run["status"] == "succeeded", run
        [attempt] = run["attempts"]
        used.add(nodes[outcome_of(attempt)["node"]["node_id"]])
        assert (batch_dir / attempt["log_dir"] / "stdout.log").read_text() == "napping\nup\n"
    assert used == {"host", "private"}
    # The private engine has the very image under its local tag, and neither engine keeps a
    # name of the registry's (the driver untags after its push, the node after its pull).
    pulled_id = private.api.inspect_image(session_tag)["Id"]
    assert pulled_id == docker_client.api.inspect_image(session_tag)["Id"]
    assert left == []
    # The registry holds it, pushed once, from the host engine.
    requests = registry.requests()  # before the test's own requests below
    repository, _, version = session_tag.rpartition(":")
    assert registry.get_json("/v2/_catalog") == {"repositories": [repository]}
    assert registry.get_json(f"/v2/{repository}/tags/list") == {
        "name": repository,
        "tags": [version],
    }
    manifest_puts = [r for r in requests if (r.method, r.uri) == ("PUT", manifest(session_tag))]
    assert [r.addr for r in manifest_puts] == ["127.0.0.1"]
    # The pull came through the bridge into the private engine's namespace: its manifest and
    # layers were fetched from the registry, and by nobody else.
    pulled = [r for r in requests if r.method == "GET" and r.uri.startswith(f"/v2/{repository}/")]
    assert {r.addr for r in pulled} == {BRIDGE_SOURCE}, pulled
    assert any(f"/v2/{repository}/manifests/" in r.uri for r in pulled), pulled
    assert any(f"/v2/{repository}/blobs/sha256:" in r.uri for r in pulled), pulled
    assert containers_of(private, batch_dir) == []
    assert containers_of(docker_client, batch_dir) == []
    assert host_bridge_present()


def manifest(tag: str) -> str:
    repository, _, version = tag.rpartition(":")
    return f"/v2/{repository}/manifests/{version}"


def test_an_unreachable_registry_ends_the_runs_error_in_one_line_naming_it(
    ray_cluster: LocalRayCluster,
    ray_image: SessionImage,
    docker_client: docker.DockerClient,
    private: docker.DockerClient,
    session_tag: str,
    tmp_path: Path,
) -> None:
    jobs = napping_jobs(ray_image, tmp_path / "p", "noregistry", 2)
    output = tmp_path / "out"
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    without_image(private, session_tag)  # so that the image must go out through the registry
    args = ["run", str(jobs), "-o", str(output), "--no-progress", "--registry", address]

    with names_removed(address, docker_client, private):
        done = ray_cli(ray_cluster, args)
        left = registry_names(address, docker_client, private)

    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    runs = runs_by_id(valid_manifest(only_batch(output))).values()
    assert {r["status"] for r in runs} == {"error"}
    for run in runs:
        assert address in run["error"] and "\n" not in run["error"], run["error"]
        assert "Traceback" not in run["error"]
    assert left == []  # the failed push's tag is gone from the driver's engine too
    assert not has_image(private, session_tag)


def test_a_registry_the_node_cannot_reach_ends_the_runs_error_in_one_line_naming_it(
    ray_cluster: LocalRayCluster,
    ray_image: SessionImage,
    docker_client: docker.DockerClient,
    private: docker.DockerClient,
    session_tag: str,
    registry: LocalRegistry,
    tmp_path: Path,
) -> None:
    """Not bridged: the push works, the private node's pull fails inside its agent."""
    jobs = napping_jobs(ray_image, tmp_path / "p", "unbridged", 2)
    output = tmp_path / "out"
    without_image(private, session_tag)
    args = ["run", str(jobs), "-o", str(output), "--no-progress", "--registry", registry.address]

    with names_removed(registry.address, docker_client, private):
        done = ray_cli(ray_cluster, args)
        left = registry_names(registry.address, docker_client, private)

    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    runs = runs_by_id(valid_manifest(only_batch(output))).values()
    assert {r["status"] for r in runs} == {"error"}
    for run in runs:
        error = run["error"]
        assert f"docker pull of {registry.address}/" in error and "\n" not in error, error
        assert "Traceback" not in error and "ray::" not in error, error
    assert left == []
    assert [r.method for r in registry.requests() if r.uri == manifest(session_tag)] == ["PUT"]
