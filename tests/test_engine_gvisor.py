"""gVisor on a real engine: a job with `runtime: runsc` runs under gVisor's kernel (a probe
script reads `uname -r` and `dmesg`, which the host's kernel would answer otherwise), its
memory limit holds, and each attempt records the runtime the engine applied.

The engine is a private one whose daemon.json knows `runsc` with the options that work here
(`--platform=ptrace --network=none`, ../shared/recipes): the host engine's config stays as the
user has it. `runsc` comes from Debian (scripts/provision-docker installs it); missing, the
test fails, it never skips."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from engine_fixtures import PLAIN_FRAMEWORK_YAML, only_batch, own_tags, write_project
from private_engine import PrivateEngine, private_engine

from safeagents_batch.cli.main import main
from safeagents_batch.core.errors import EXIT_OK, EXIT_RUNS_FAILED

pytestmark = pytest.mark.docker
RUNSC = shutil.which("runsc") or "/usr/bin/runsc"
RUNTIMES: dict[str, dict[str, object]] = {
    "runsc": {"path": RUNSC, "runtimeArgs": ["--platform=ptrace", "--network=none"]}
}
PROBE = """\
import json, platform, subprocess
kernel = platform.release()
dmesg = subprocess.run(["dmesg"], capture_output=True, text=True).stdout
json.dump({"kernel": kernel, "gvisor": "gVisor" in dmesg},
          open("/safeagents/logs/result.json", "w"))
print(kernel, dmesg.splitlines()[:1])
"""
HOG = "x = bytearray(256 * 1024 * 1024)\nprint('allocated')\n"


@pytest.fixture(scope="module")
def gvisor_engine(docker_client: docker.DockerClient) -> Iterator[PrivateEngine]:
    if shutil.which("runsc") is None:
        pytest.fail("runsc (gVisor) is not installed: run scripts/provision-docker")
    with private_engine(runtimes=RUNTIMES) as engine:
        yield engine


def run_on(engine: PrivateEngine, jobs: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setenv("DOCKER_HOST", engine.socket_url)
    return main(["run", str(jobs), "--no-progress"])


def test_a_runsc_job_runs_under_gvisors_kernel_with_its_limits(
    gvisor_engine: PrivateEngine,
    docker_client: docker.DockerClient,
    fresh_image_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = (
        f"version: 1\nimage_name: {fresh_image_name}\n{PLAIN_FRAMEWORK_YAML}"
        "defaults: {framework: plain, network: none}\njobs:\n"
        "  - {name: sandboxed, scripts: probe.py, runtime: runsc}\n"
        "  - {name: plain, scripts: probe.py}\n"
        "  - {name: hog, scripts: hog.py, runtime: runsc, resources: {memory: 64m}}\n"
    )
    jobs = write_project(tmp_path / "proj", text, {"probe.py": PROBE, "hog.py": HOG})
    # Built by the host engine (the private one has no network to install from), then
    # loaded: the run finds it by its tag.
    assert main(["build", str(jobs)]) == EXIT_OK
    gvisor_engine.load_images(docker_client, own_tags(docker_client, fresh_image_name))

    assert run_on(gvisor_engine, jobs, monkeypatch) == EXIT_RUNS_FAILED  # the hog fails
    capsys.readouterr()

    batch = only_batch(jobs.parent / "logs")
    rows = {
        r["job"]: r for r in map(json.loads, (batch / "results.jsonl").read_text().splitlines())
    }
    host_kernel = subprocess.run(["uname", "-r"], capture_output=True, text=True).stdout.strip()
    sandboxed, plain, hog = rows["sandboxed"], rows["plain"], rows["hog"]
    assert (sandboxed["status"], sandboxed["gvisor"]) == ("succeeded", True)
    assert sandboxed["kernel"] != host_kernel  # gVisor's own (4.4.0 in this build)
    assert (plain["status"], plain["kernel"], plain["gvisor"]) == ("succeeded", host_kernel, False)
    assert hog["status"] == "failed" and hog["exit_code"] == 137  # killed at 64 MiB
    manifest = json.loads((batch / "manifest.json").read_text())
    applied = {run["job"]: run["attempts"][-1]["outcome"]["runtime"] for run in manifest["runs"]}
    assert applied == {"sandboxed": "runsc", "plain": "runc", "hog": "runsc"}
    leftovers = subprocess.run(["pgrep", "-f", "runsc-sandbox"], capture_output=True, text=True)
    assert leftovers.stdout == ""  # no sandbox outlives its run
