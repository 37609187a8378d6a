"""Rootful Podman as the engine (its Docker-compatible API, on a service of the test's own):
the core cases of the Docker engine's suite hold there too: hardening (non-root, no
capabilities, no new privileges), a memory limit that kills, a timeout, artifacts (a link
dropped), streamed logs in order; every limit is applied (none dropped) and the manifest
names the engine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from engine_fixtures import PLAIN_FRAMEWORK_YAML, only_batch, write_project
from podman_engine import PodmanEngine, podman_engine
from podman_rootless import rootless_podman, shared_dir

from safeagents_batch.cli.main import main
from safeagents_batch.core.errors import EXIT_OK, EXIT_RUNS_FAILED

pytestmark = pytest.mark.docker
IMAGE_NAME = "sab-podman-test"
PROBE = """\
import json, os, sys, time
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
found = {"uid": os.getuid(), "caps": status["CapEff"].strip(),
         "no_new_privs": status["NoNewPrivs"].strip()}
print("out 1", flush=True)
time.sleep(0.3)  # two pipes: arrival order is what the engine can keep, apart in time
print("err 1", file=sys.stderr, flush=True)
time.sleep(0.3)
print("out 2", flush=True)
json.dump(found, open("/safeagents/logs/result.json", "w"))
os.symlink("/etc/passwd", "/safeagents/logs/passwd-link")
"""
HOG = "x = bytearray(256 * 1024 * 1024)\nprint('allocated')\n"
SLEEPER = "import time\nprint('sleeping', flush=True)\ntime.sleep(120)\n"


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PodmanEngine]:
    with podman_engine(tmp_path_factory.mktemp("podman") / "engine") as engine:
        engine.load_images(docker.from_env(), ["python:3.11-slim"])
        yield engine


def test_the_core_cases_hold_on_rootful_podman(
    podman: PodmanEngine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = (
        f"version: 1\nimage_name: {IMAGE_NAME}\n{PLAIN_FRAMEWORK_YAML}"
        "defaults: {framework: plain, network: none}\njobs:\n"
        "  - {name: probe, scripts: probe.py}\n"
        "  - {name: hog, scripts: hog.py, resources: {memory: 64m}}\n"
        "  - {name: sleeper, scripts: sleeper.py, timeout: 2}\n"
    )
    jobs = write_project(
        tmp_path / "proj", text, {"probe.py": PROBE, "hog.py": HOG, "sleeper.py": SLEEPER}
    )
    monkeypatch.setenv("DOCKER_HOST", podman.socket_url)
    assert main(["build", str(jobs)]) == EXIT_OK  # Podman builds the image too
    assert main(["run", str(jobs), "--no-progress"]) == EXIT_RUNS_FAILED
    capsys.readouterr()

    batch = only_batch(jobs.parent / "logs")
    manifest = json.loads((batch / "manifest.json").read_text())
    runs = {run["job"]: run for run in manifest["runs"]}
    assert {job: run["status"] for job, run in runs.items()} == {
        "probe": "succeeded",
        "hog": "failed",
        "sleeper": "timed_out",
    }
    assert runs["hog"]["exit_code"] == 137  # the memory limit held
    result = json.loads((batch / runs["probe"]["log_dir"] / "result.json").read_text())
    assert result == {"uid": 10001, "caps": "0000000000000000", "no_new_privs": "1"}
    console = (batch / runs["probe"]["log_dir"] / "console.log").read_text().splitlines()
    assert [line for line in console if line.startswith(("out", "err"))] == [
        "out 1",
        "err 1",
        "out 2",
    ]
    probe_attempt = runs["probe"]["attempts"][-1]
    assert any("passwd-link" in line for line in probe_attempt["dropped_artifacts"])
    assert not (batch / runs["probe"]["log_dir"] / "passwd-link").exists()
    outcomes = [run["attempts"][-1]["outcome"] for run in runs.values()]
    assert all(o["dropped_limits"] == [] and o["runtime"] for o in outcomes)
    assert manifest["backend"]["engine_kind"] == "podman"
    assert podman.podman("ps", "--all", "--quiet") == b""  # nothing left on the engine


def test_engine_podman_starts_the_service_once_and_then_finds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safeagents_batch.backends.docker.podman import use_podman

    socket_path = tmp_path / "podman.sock"
    # use_podman sets DOCKER_HOST in os.environ: set here first, so the test's end restores
    # the session's value (a delenv of an unset name records nothing to undo).
    monkeypatch.setenv("DOCKER_HOST", "unix:///nowhere")
    try:
        url = use_podman(socket_path)  # nothing answers: started
        assert url == f"unix://{socket_path}" and os.environ["DOCKER_HOST"] == url
        assert use_podman(socket_path) == url  # it answers: found, not started again
        assert len(services(socket_path)) == 1
        assert (
            docker.DockerClient(base_url=url)
            .version()["Components"][0]["Name"]
            .startswith("Podman")
        )
    finally:
        for pid in services(socket_path):
            os.kill(pid, signal.SIGTERM)
    assert wait_gone(socket_path)


def services(socket_path: Path) -> list[int]:
    found = subprocess.run(
        ["pgrep", "-f", f"system service --time=0 unix://{socket_path}"],
        capture_output=True,
        text=True,
    )
    return [int(pid) for pid in found.stdout.split()]


def wait_gone(socket_path: Path) -> bool:
    deadline = time.monotonic() + 30  # an upper bound for the service to stop
    while services(socket_path) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not services(socket_path)


ROOTLESS_JOBS = """\
version: 1
image_name: sab-rootless-test
frameworks:
  plain: {packages: []}
defaults: {framework: plain, network: none}
jobs:
  - {name: free, scripts: a.py, resources: {memory: null, pids: null, cpus: null}}
  - {name: capped, scripts: a.py, resources: {memory: 64m, pids: null, cpus: null}}
"""
ROOTLESS_SCRIPT = (
    "import json\njson.dump({'ok': True}, open('/safeagents/logs/result.json', 'w'))\n"
)


def test_rootless_podman_runs_a_batch_and_refuses_a_limit_it_would_drop(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rootless Podman on cgroup v1 accepts a memory limit and applies none: the job that
    asks for one is refused in one line naming it and the key; the other runs."""
    with rootless_podman() as engine, shared_dir() as root:
        engine.load_images(docker.from_env(), ["python:3.11-slim"])
        jobs = write_project(root / "proj", ROOTLESS_JOBS, {"a.py": ROOTLESS_SCRIPT})
        monkeypatch.setenv("DOCKER_HOST", engine.socket_url)
        assert main(["run", str(jobs), "--no-progress"]) == EXIT_RUNS_FAILED
        out = capsys.readouterr().out
        batch = only_batch(jobs.parent / "logs")
        runs = {r["job"]: r for r in json.loads((batch / "manifest.json").read_text())["runs"]}
    assert runs["free"]["status"] == "succeeded"
    capped = runs["capped"]
    refusal = (
        "job 'capped': resources.memory: the engine dropped this limit (rootless Podman on "
        "cgroup v1 applies none): not run; `enforce_limits: false` runs without it"
    )
    assert (capped["status"], capped["error"]) == ("error", refusal)
    assert capped["attempts"][-1]["outcome"]["dropped_limits"] == ["resources.memory"]
    assert refusal in out
