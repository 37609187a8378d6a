"""Helpers for engine tests that drive the real CLI as a child process (signals, SIGKILL, locks).

The orchestrator runs as `python -m safeagents_batch ...` in its own session, so a signal the
test sends reaches it alone. Every project here uses one image that is unique to the test
session (its build context holds a random token): no other session on the shared engine has an
image with that id, and an unlabelled container created from it keeps a concurrent `clean
--images` or prune from removing it while the tests use it.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import jsonschema
import pytest
from engine_fixtures import own_tags, remove_repository

from safeagents_batch.backends.docker.backend import batch_container_ids, remove_container

CLI = [sys.executable, "-m", "safeagents_batch"]
SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "manifest.schema.json"
EXIT_TIMEOUT = 120  # generous: an upper bound for a hung process, not a timing assertion
WAIT_TIMEOUT = 90
HOLD = "hold"  # while this file exists in a project, held scripts keep running

# A script that stays `running` while the HOLD file exists in its code snapshot (a read-only
# bind mount of BATCH_DIR/code/<digest>/, so the test releases it by deleting the file there
# on the host, and in the project, so that later snapshots have none), then succeeds.
HELD_SCRIPT = (
    "import os, time\n"
    "print('holding', flush=True)\n"
    f"while os.path.exists('/safeagents/code/{HOLD}'):\n"
    "    time.sleep(0.1)\n"
    "print('released')\n"
)


@dataclass(frozen=True)
class SessionImage:
    """The image every project of the session uses, named by `image_name` and `token`."""

    image_name: str
    token: str

    def header(self, name: str, workers: int = 4) -> str:
        return (
            f"version: 1\nname: {name}\nimage_name: {self.image_name}\nworkers: {workers}\n"
            "frameworks:\n  plain: {packages: [], source_dirs: [uniq]}\n"
        )

    def project(
        self,
        root: Path,
        name: str,
        jobs: str,
        scripts: dict[str, str],
        *,
        workers: int = 4,
        held: bool = False,
    ) -> Path:
        """Writes the scripts, the token dir and jobs.yaml (header + `jobs`); returns the file."""
        for relative, text in {**scripts, "uniq/token.txt": self.token}.items():
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        if held:
            (root / HOLD).write_text("", encoding="utf-8")
        jobs_file = root / "jobs.yaml"
        jobs_file.write_text(self.header(name, workers) + "jobs:\n" + jobs, encoding="utf-8")
        return jobs_file


def session_image(client: docker.DockerClient, root: Path) -> Iterator[SessionImage]:
    """Builds the session image through `safeagents-batch build`, pins it; after, removes every
    image under its name."""
    image = SessionImage(f"sab-rerun-test-{secrets.token_hex(4)}", secrets.token_hex(16))
    jobs = image.project(
        root, "build", "  - {name: b, framework: plain, scripts: b.py}\n", {"b.py": "print('b')\n"}
    )
    built = cli(["build", str(jobs)])
    assert built.returncode == 0, built.stdout + built.stderr
    [tag] = own_tags(client, image.image_name)
    pin = client.containers.create(tag, ["true"], name=f"{image.image_name}-pin")
    try:
        yield image
    finally:
        pin.remove(force=True)
        # Every image under the session's own name: tests may build more there (other
        # framework configs), and none may outlive the session.
        remove_repository(client, image.image_name)


def cli(args: list[str], timeout: float = EXIT_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """One CLI command to its end."""
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@dataclass
class Orchestrators:
    """Starts CLI processes in their own sessions; at teardown kills what still runs and removes
    every container of the batches under `roots`, so no test leaves anything behind."""

    client: docker.DockerClient
    roots: list[Path] = field(default_factory=list)
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def start(self, args: list[str]) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [*CLI, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def teardown(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=EXIT_TIMEOUT)
        for root in self.roots:
            for manifest in root.rglob("manifest.json"):
                for container_id in batch_container_ids(self.client, manifest.parent.name):
                    remove_container(self.client, container_id)


@pytest.fixture
def orchestrators(docker_client: docker.DockerClient, tmp_path: Path) -> Iterator[Orchestrators]:
    procs = Orchestrators(docker_client, [tmp_path])
    try:
        yield procs
    finally:
        procs.teardown()


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    """Waits (boundedly) for a process the test stopped or let run; its code and output."""
    stdout, stderr = proc.communicate(timeout=EXIT_TIMEOUT)
    return proc.returncode, stdout, stderr


def read_stderr_until(proc: subprocess.Popen[str], text: str) -> str:
    """Reads the process's stderr (unbuffered, so `finish` gets the rest) until `text` shows."""
    assert proc.stderr is not None
    seen = b""
    deadline = time.monotonic() + WAIT_TIMEOUT
    while text.encode() not in seen:
        if time.monotonic() > deadline:
            pytest.fail(f"no {text!r} on stderr; so far: {seen.decode(errors='replace')}")
        ready, _, _ = select.select([proc.stderr], [], [], 0.1)
        if ready:
            chunk = os.read(proc.stderr.fileno(), 4096)
            if not chunk:
                pytest.fail(f"stderr closed before {text!r}: {seen.decode(errors='replace')}")
            seen += chunk
    return seen.decode()


def kill_hard(proc: subprocess.Popen[str]) -> None:
    """SIGKILL, then reap: an unreaped zombie would still count as a live orchestrator."""
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=EXIT_TIMEOUT)


def wait_for(
    condition: Callable[[], bool], what: str, proc: subprocess.Popen[str] | None = None
) -> None:
    """Polls `condition` for at most WAIT_TIMEOUT seconds; a process that ends meanwhile fails
    the test with its output."""
    deadline = time.monotonic() + WAIT_TIMEOUT
    while not condition():
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"process ended ({proc.returncode}) before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.1)


def batch_dir_in(output_dir: Path) -> Path | None:
    dirs = (
        [d for d in output_dir.glob("*") if (d / "manifest.json").is_file()]
        if output_dir.is_dir()
        else []
    )
    assert len(dirs) <= 1, dirs
    return dirs[0] if dirs else None


def wait_for_batch(output_dir: Path, proc: subprocess.Popen[str], running: int) -> Path:
    """The batch dir under `output_dir`, once its manifest shows at least `running` runs
    running."""
    found: list[Path] = []

    def ready() -> bool:
        batch_dir = batch_dir_in(output_dir)
        if batch_dir is None:
            return False
        found[:] = [batch_dir]
        return statuses(read_manifest(batch_dir)).count("running") >= running

    wait_for(ready, f"{running} running runs", proc)
    return found[0]


def read_manifest(batch_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((batch_dir / "manifest.json").read_text(encoding="utf-8"))
    return data


def valid_manifest(batch_dir: Path) -> dict[str, Any]:
    """The manifest, checked against the schema shipped with the tool."""
    data = read_manifest(batch_dir)
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    validator.validate(data)
    return data


def statuses(manifest: dict[str, Any]) -> list[str]:
    return [r["status"] for r in manifest["runs"]]


def runs_by_id(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    ids = [r["run_id"] for r in manifest["runs"]]
    assert len(ids) == len(set(ids)), f"a run id appears twice: {ids}"
    return {r["run_id"]: r for r in manifest["runs"]}


def containers_of(client: docker.DockerClient, batch_dir: Path) -> list[dict[str, Any]]:
    """Containers labelled with this batch (running or not), as the engine lists them."""
    label = f"safeagents-batch.batch={batch_dir.name}"
    found: list[dict[str, Any]] = client.api.containers(all=True, filters={"label": label})
    return found


def release(project_root: Path) -> None:
    (project_root / HOLD).unlink(missing_ok=True)
    for held in project_root.rglob(f"code/*/{HOLD}"):
        held.unlink()
