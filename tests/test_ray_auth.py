"""Token authentication of the cluster a batch joins, on real Ray heads: an open head (Ray's
default) is refused unless the user says `--insecure-cluster`; a driver without the token, or
with another one, is refused in one line before Ray retries anything. Marked `ray`."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Project
from engine_cli import SessionImage
from ray_cluster import LocalRayCluster, open_ray_head

pytestmark = [pytest.mark.ray]

CLI = [sys.executable, "-m", "safeagents_batch"]
HANG = 120  # a bound on one command: past it the test fails, as a user's command would hang
JOBS = """
version: 1
name: auth
frameworks:
  plain: {packages: []}
jobs:
  - name: one
    framework: plain
    scripts: [scripts/a.py]
"""


@pytest.fixture(scope="module")
def open_head() -> Iterator[LocalRayCluster]:
    with open_ray_head() as head:
        yield head


def run_on(
    address: str, jobs: Path, home: Path, *extra: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """`run` on the cluster at `address`, as a driver whose environment holds no Ray setting
    but `env`, and whose home has no ~/.ray/auth_token."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    clean.update(HOME=str(home), RAY_USAGE_STATS_ENABLED="0", **env)
    argv = [*CLI, "run", str(jobs), "--backend", "ray", "--ray-address", address, *extra]
    return subprocess.run(argv, capture_output=True, text=True, env=clean, timeout=HANG)


def one_line_error(done: subprocess.CompletedProcess[str], code: int) -> str:
    assert done.returncode == code, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    [line] = done.stderr.strip().splitlines()
    return line


def no_batch_dir(jobs: Path) -> bool:
    return not list(jobs.parent.glob("logs/*/manifest.json"))


def test_an_open_cluster_is_refused_naming_both_ways_on(
    open_head: LocalRayCluster, project: Project, tmp_path: Path
) -> None:
    jobs = project.jobs(JOBS)
    line = one_line_error(run_on(open_head.address, jobs, tmp_path), 2)
    assert f"the Ray cluster at {open_head.address} asks for no token" in line
    assert "RAY_AUTH_MODE=token" in line and "--insecure-cluster" in line
    assert no_batch_dir(jobs)


def test_insecure_cluster_joins_an_open_cluster_as_it_is(
    open_head: LocalRayCluster, project: Project, tmp_path: Path
) -> None:
    """Past the gate: the head alone has no container slots, which is the next thing said."""
    jobs = project.jobs(JOBS)
    done = run_on(open_head.address, jobs, tmp_path, "--insecure-cluster")
    line = one_line_error(done, 3)
    assert "has no live node with the `docker` resource" in line


def test_a_driver_without_the_token_is_refused(
    ray_cluster: LocalRayCluster, project: Project, tmp_path: Path
) -> None:
    jobs = project.jobs(JOBS)
    line = one_line_error(run_on(ray_cluster.address, jobs, tmp_path), 2)
    assert "needs its token on this machine: set RAY_AUTH_TOKEN" in line
    assert no_batch_dir(jobs)


def test_a_driver_with_another_token_is_refused(
    ray_cluster: LocalRayCluster, project: Project, tmp_path: Path
) -> None:
    jobs = project.jobs(JOBS)
    done = run_on(ray_cluster.address, jobs, tmp_path, RAY_AUTH_TOKEN="0" * 32)
    line = one_line_error(done, 2)
    assert "refuses this machine's token: it has another one" in line
    assert no_batch_dir(jobs)


def test_the_token_file_in_the_drivers_home_is_found(
    ray_cluster: LocalRayCluster, ray_image: SessionImage, tmp_path: Path
) -> None:
    """Where users of `ray get-auth-token` put it: the driver joins, and the batch runs."""
    assert ray_cluster.token is not None
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text(ray_cluster.token + "\n", encoding="utf-8")
    jobs = ray_image.project(
        tmp_path / "p",
        "auth",
        "  - {name: hello, framework: plain, scripts: hello.py, network: none}\n",
        {"hello.py": "print('joined')\n"},
    )
    private = ray_cluster.private_engine.client()
    before = {image.id for image in private.images.list()}
    try:
        done = run_on(ray_cluster.address, jobs, tmp_path, "--no-progress")
        assert done.returncode == 0, done.stdout + done.stderr
        [stdout] = jobs.parent.glob("logs/*/runs/*/attempt-1/stdout.log")
        assert stdout.read_text() == "joined\n"
    finally:
        # The private node as other tests expect it: without the session's image.
        for image in private.images.list():
            if image.id not in before:
                private.images.remove(image.id, force=True)
