"""A node that joins the cluster after a batch shipped its images gets the image when its
first attempt arrives, and runs its share of the batch: nothing of the batch knew of it when
it started. On the real local cluster; marked `ray` and `docker`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest
from engine_cli import (
    SessionImage,
    containers_of,
    finish,
    runs_by_id,
    valid_manifest,
    wait_for,
    wait_for_batch,
)
from engine_fixtures import own_tags
from private_engine import host_bridge_present
from ray_cluster import LocalRayCluster
from records import outcome_of
from test_ray_faults import start_ray_cli

pytestmark = [pytest.mark.ray, pytest.mark.docker]

NAPPER = "import time\nprint('napping', flush=True)\ntime.sleep(3)\nprint('up')\n"


def session_tags(client: docker.DockerClient, image: SessionImage) -> list[str]:
    return own_tags(client, image.image_name)


def node_alive(node_id: str) -> bool:
    import ray

    listing: Callable[[], list[dict[str, Any]]] = ray.nodes  # untyped in Ray
    return any(n["NodeID"] == node_id and n.get("Alive") for n in listing())


def test_a_node_that_joins_mid_batch_gets_the_image_and_runs_attempts(
    ray_cluster: LocalRayCluster,
    ray_image: SessionImage,
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    jobs = ray_image.project(
        tmp_path / "p",
        "late",
        "  - {name: n, framework: plain, scripts: n.py, repeat: 10, network: none}\n",
        {"n.py": NAPPER},
    )
    private = ray_cluster.private_engine.client()
    # The private node leaves, and its engine forgets the image: as a machine that was not
    # part of the cluster when the batch began.
    gone = ray_cluster.nodes["private"]
    assert gone.node_id is not None
    gone.stop()
    wait_for(lambda: not node_alive(str(gone.node_id)), "the cluster to drop the private node")
    for tag in session_tags(private, ray_image):
        private.images.remove(tag, force=True)
    assert session_tags(private, ray_image) == []

    output = tmp_path / "out"
    proc = start_ray_cli(ray_cluster, ["run", str(jobs), "-o", str(output), "-j", "4"])
    try:
        batch_dir = wait_for_batch(output, proc, running=1)  # images shipped, batch under way
        joined = ray_cluster.restart_worker("private")
    finally:
        code, stdout, stderr = finish(proc)

    assert code == 0, stdout + stderr
    runs = runs_by_id(valid_manifest(batch_dir))
    assert len(runs) == 10
    assert {r["status"] for r in runs.values()} == {"succeeded"}
    # The bounce off a node without the image is no attempt of the run.
    assert {len(r["attempts"]) for r in runs.values()} == {1}
    on_late_node = [
        r
        for r in runs.values()
        if outcome_of(r["attempts"][0])["node"]["node_id"] == joined.node_id
    ]
    assert on_late_node, "the node that joined ran none of the batch"
    for run in on_late_node:
        log_dir = batch_dir / run["attempts"][0]["log_dir"]
        assert (log_dir / "stdout.log").read_text() == "napping\nup\n"
    assert session_tags(private, ray_image) != []  # shipped to it during the batch
    assert containers_of(private, batch_dir) == containers_of(docker_client, batch_dir) == []
    assert host_bridge_present()
