"""The engine goes away in the middle of a batch, for real: a private dockerd (its own data
root, socket and network namespace, so the host engine is never touched) is restarted, or
stopped for good, while the tool runs 16 runs on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from engine_cli import EXIT_TIMEOUT, batch_dir_in, finish, wait_for
from engine_fixtures import PLAIN_FRAMEWORK_YAML, own_tags, remove_repository, write_project
from private_engine import PrivateEngine
from records import outcome_of

from safeagents_batch.core.errors import EXIT_ENGINE_UNAVAILABLE, EXIT_OK

pytestmark = pytest.mark.docker

RUNS = 16
# Long enough that runs are in flight when the engine goes, short enough for a quick suite.
SCRIPT = "import time\nprint('working', flush=True)\ntime.sleep(2)\nprint('done')\n"


@pytest.fixture(scope="module")
def loss_image(
    docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The plain framework's image, built on the host engine (the private one has no network
    to build with) under a name of this module's own; removed at the end."""
    name = f"sab-loss-test-{os.getpid()}"
    jobs = write_project(
        tmp_path_factory.mktemp("build"),
        f"version: 1\nimage_name: {name}\n{PLAIN_FRAMEWORK_YAML}"
        "jobs:\n  - {name: b, framework: plain, scripts: b.py}\n",
        {"b.py": "print()\n"},
    )
    built = subprocess.run(
        [sys.executable, "-m", "safeagents_batch", "build", str(jobs)],
        capture_output=True,
        text=True,
        timeout=EXIT_TIMEOUT,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "DOCKER_HOST"},
    )
    try:  # removed whatever happens from here on: a failed setup leaves no image either
        assert built.returncode == 0, built.stdout + built.stderr
        assert len(own_tags(docker_client, name)) == 1, own_tags(docker_client, name)
        yield name
    finally:
        remove_repository(docker_client, name)


@pytest.fixture
def engine_for_loss(
    private_dockerd: PrivateEngine, docker_client: docker.DockerClient, loss_image: str
) -> PrivateEngine:
    tags = own_tags(docker_client, loss_image)
    private_dockerd.load_images(docker_client, tags)
    return private_dockerd


def jobs_file(root: Path, image_name: str, retries: int) -> Path:
    jobs_yaml = (
        f"version: 1\nname: loss\nimage_name: {image_name}\nworkers: 2\n{PLAIN_FRAMEWORK_YAML}"
        "jobs:\n"
        f"  - {{name: w, framework: plain, scripts: work.py, repeat: {RUNS}, network: none,"
        f" retries: {retries}, timeout: 120}}\n"
    )
    return write_project(root, jobs_yaml, {"work.py": SCRIPT})


def start_tool(args: list[str], engine: PrivateEngine) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "safeagents_batch", *args, "--no-progress"],
        env={**os.environ, "DOCKER_HOST": engine.socket_url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def manifest_of(batch_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((batch_dir / "manifest.json").read_text())
    return data


def working(batch_dir: Path) -> int:
    """Attempts whose script has started (said so in its stdout.log) and not ended."""
    runs = manifest_of(batch_dir)["runs"]
    return sum(
        1
        for r in runs
        for a in r["attempts"]
        if outcome_of(a)["status"] == "running"
        and "working" in _read(batch_dir / a["log_dir"] / "stdout.log")
    )


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def wait_for_runs_in_flight(out_dir: Path, proc: subprocess.Popen[str]) -> Path:
    """The batch dir, once two scripts are running in their containers."""
    found: list[Path] = []

    def in_flight() -> bool:
        batch_dir = batch_dir_in(out_dir)
        if batch_dir is None or not (batch_dir / "manifest.json").is_file():
            return False
        found[:] = [batch_dir]
        return working(batch_dir) == 2

    wait_for(in_flight, "two scripts running", proc)
    return found[0]


def batch_containers(engine: PrivateEngine, batch_dir: Path) -> list[dict[str, Any]]:
    client = engine.client()
    label = f"safeagents-batch.batch={batch_dir.name}"
    found: list[dict[str, Any]] = client.api.containers(all=True, filters={"label": label})
    return found


def lost_attempts(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        a
        for r in manifest["runs"]
        for a in r["attempts"]
        if "engine lost" in (outcome_of(a)["error"] or "")
    ]


def test_a_restarted_engine_pauses_the_pool_and_the_batch_completes(
    engine_for_loss: PrivateEngine, loss_image: str, tmp_path: Path
) -> None:
    jobs = jobs_file(tmp_path / "proj", loss_image, retries=1)
    out_dir = tmp_path / "out"
    proc = start_tool(
        ["run", str(jobs), "-o", str(out_dir), "--engine-wait", "90"], engine_for_loss
    )
    batch_dir = wait_for_runs_in_flight(out_dir, proc)

    engine_for_loss.restart()
    code, out, err = finish(proc)

    manifest = manifest_of(batch_dir)
    assert code == EXIT_OK, (out, err)
    assert manifest["state"] == "finished"
    assert manifest["summary"]["succeeded"] == RUNS
    lost = lost_attempts(manifest)
    assert len(lost) == 2, [r["attempts"] for r in manifest["runs"]]
    assert all(outcome_of(a)["status"] == "error" for a in lost)
    assert "the engine stopped answering" in err and "the engine answers again" in err
    # The containers the engine kept through its restart were removed once it answered.
    assert batch_containers(engine_for_loss, batch_dir) == []


def test_an_engine_that_stays_away_leaves_runs_pending_and_rerun_completes(
    engine_for_loss: PrivateEngine, loss_image: str, tmp_path: Path
) -> None:
    jobs = jobs_file(tmp_path / "proj", loss_image, retries=0)
    out_dir = tmp_path / "out"
    proc = start_tool(["run", str(jobs), "-o", str(out_dir), "--engine-wait", "3"], engine_for_loss)
    batch_dir = wait_for_runs_in_flight(out_dir, proc)

    engine_for_loss.stop()
    code, out, err = finish(proc)

    manifest = manifest_of(batch_dir)
    assert code == EXIT_ENGINE_UNAVAILABLE, (out, err)
    assert f"safeagents-batch rerun {batch_dir}" in err
    assert manifest["state"] == "interrupted"
    statuses = [r["status"] for r in manifest["runs"]]
    lost = lost_attempts(manifest)
    assert len(lost) == 2 and statuses.count("error") == 2
    finished = statuses.count("succeeded")
    # Runs that never started stay pending: never marked error or cancelled.
    assert statuses.count("pending") == RUNS - 2 - finished
    assert all(not r["attempts"] for r in manifest["runs"] if r["status"] == "pending")

    engine_for_loss.start()
    assert batch_containers(engine_for_loss, batch_dir) != []  # kept by the engine meanwhile
    rerun = start_tool(["rerun", str(batch_dir)], engine_for_loss)
    code, out, err = finish(rerun)

    assert code == EXIT_OK, (out, err)
    manifest = manifest_of(batch_dir)
    assert manifest["state"] == "finished" and manifest["summary"]["succeeded"] == RUNS
    assert "stale container" in err
    assert batch_containers(engine_for_loss, batch_dir) == []


def test_a_batch_started_with_no_engine_is_one_line_exit_3(tmp_path: Path, loss_image: str) -> None:
    jobs = jobs_file(tmp_path / "proj", loss_image, retries=0)
    done = subprocess.run(
        [sys.executable, "-m", "safeagents_batch", "run", str(jobs), "--no-progress"],
        env={**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/none.sock"},
        capture_output=True,
        text=True,
        timeout=EXIT_TIMEOUT,
        check=False,
    )
    assert done.returncode == EXIT_ENGINE_UNAVAILABLE
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (jobs.parent / "logs").exists()
