"""Fixtures for tests that need a real Docker engine (marked `docker`).

A missing engine is a test failure, never a skip: CI provisions one with
scripts/provision-docker before running the suite.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
import requests

from safeagents_batch.backends.docker.backend import batch_container_ids, remove_container
from safeagents_batch.cli import main as cli
from safeagents_batch.core.labels import LABEL_PREFIX
from safeagents_batch.jobs.model import ImageConfig
from safeagents_batch.staging.images import dockerfile_text

# A script fragment for the credential probes: every file a container can read, and the
# environments it can see, searched for the marker its env gives reversed (so the variable
# itself does not match); leaves `found` (paths) and `scanned` (how many were read).
KEY_SEARCH = """\
marker = os.environ["MARKER_REVERSED"][::-1].encode()
found, scanned = [], 0
for name in ("/proc/self/environ", "/proc/1/environ", "/proc/1/cmdline"):
    try:
        scanned += 1
        if marker in open(name, "rb").read():
            found.append(name)
    except OSError:
        pass
for root, dirs, files in os.walk("/"):
    if root == "/":
        dirs[:] = [d for d in dirs if d not in ("proc", "sys", "dev")]
    for file in files:
        path = os.path.join(root, file)
        try:
            if os.path.isfile(path) and not os.path.islink(path):
                scanned += 1
                with open(path, "rb") as handle:
                    if marker in handle.read(16 * 1024 * 1024):
                        found.append(path)
        except OSError:
            pass
"""

# A framework with no packages: its image builds in about a second from the base image.
PLAIN_FRAMEWORK_YAML = "frameworks:\n  plain: {packages: []}\n"


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
        pytest.fail(f"no Docker engine ({exc}); run scripts/provision-docker first", pytrace=False)
    yield client
    client.close()


@pytest.fixture
def engine(docker_client: docker.DockerClient, tmp_path: Path) -> Iterator[docker.DockerClient]:
    """The engine, plus a check that the test left no container of the tool behind.

    Only the test's own containers count: those this process created (`pid` and `host`
    labels) and those of batches under the test's tmp_path (a CLI child process). Other
    sessions on the same engine, or a real batch, may start containers meanwhile; they are
    neither reported nor removed.
    """
    before = set(_own_containers(docker_client, tmp_path))
    yield docker_client
    leaked = set(_own_containers(docker_client, tmp_path)) - before
    for container_id in leaked:
        remove_container(docker_client, container_id)
    assert not leaked, f"test leaked {len(leaked)} labelled container(s)"


def _own_containers(client: docker.DockerClient, tmp_path: Path) -> list[str]:
    mine = [f"{LABEL_PREFIX}.pid={os.getpid()}", f"{LABEL_PREFIX}.host={socket.gethostname()}"]
    found = [c["Id"] for c in client.api.containers(all=True, filters={"label": mine})]
    for manifest in tmp_path.rglob("manifest.json"):  # a batch dir is named by its batch id
        found += batch_container_ids(client, manifest.parent.name)
    return found


def write_project(root: Path, jobs_yaml: str, scripts: dict[str, str]) -> Path:
    """Writes scripts (relative path -> source) and jobs.yaml under `root`; returns the file."""
    for relative, source in scripts.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
    jobs = root / "jobs.yaml"
    jobs.write_text(jobs_yaml, encoding="utf-8")
    return jobs


@pytest.fixture
def fresh_image_name(docker_client: docker.DockerClient) -> Iterator[str]:
    """A repository name no image has yet: the test's images are built fresh, then removed."""
    name = f"sab-engine-test-{secrets.token_hex(4)}"
    yield name
    remove_repository(docker_client, name)


def own_tags(client: docker.DockerClient, repository: str) -> list[str]:
    """The tags of `repository`, and only those: an image listed under it may carry other
    repositories' tags too (equal configs build one image id: another test's, a user's)."""
    return [
        tag
        for image in client.images.list(name=repository)
        for tag in image.tags
        if tag.startswith(f"{repository}:")
    ]


def remove_repository(client: docker.DockerClient, repository: str) -> None:
    """Every tag of `repository`, and only those (other tags of the same image id stay)."""
    for tag in own_tags(client, repository):
        client.images.remove(tag, force=True)
    assert not client.images.list(name=repository), repository


@dataclass(frozen=True)
class CliBatch:
    """What one `safeagents-batch` command run in this process left: its exit code, its
    output (stdout then stderr), its batch dir and that dir's manifest."""

    code: int
    output: str
    batch_dir: Path
    manifest: dict[str, Any]

    @property
    def runs(self) -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = self.manifest["runs"]
        return runs


def only_batch(out_dir: Path) -> Path:
    """The one batch dir under an output dir (`build` logs beside it are not one)."""
    [batch_dir] = [d for d in out_dir.iterdir() if (d / "manifest.json").is_file()]
    return batch_dir


def cli_batch(capsys: pytest.CaptureFixture[str], out_dir: Path, args: list[str]) -> CliBatch:
    """`safeagents-batch ARGS` in this process; the one batch dir under `out_dir`."""
    code = cli.main([*args, "--no-progress"])
    captured = capsys.readouterr()
    batch_dir = only_batch(out_dir)
    manifest = json.loads((batch_dir / "manifest.json").read_text(encoding="utf-8"))
    return CliBatch(code, captured.out + captured.err, batch_dir, manifest)


@pytest.fixture(scope="session")
def azure_layer(docker_client: docker.DockerClient) -> Iterator[str]:
    """Keeps the Azure CLI's layer (about 650 MB, a minute of pip) in the engine's build cache
    for the session: the image of a framework with no packages and the CLI, tagged by the
    session alone (no tool label, so no `clean --images` removes it). Every test image with
    the CLI on the default base starts with the same instructions and so reuses the layer,
    where each module's build would otherwise install it again once the last image holding
    it was removed. Removed at the end."""
    config = ImageConfig(framework="azure-layer", packages=(), azure_cli=True)
    tag = f"sab-azure-layer-test-{secrets.token_hex(4)}:keep"
    dockerfile = io.BytesIO(dockerfile_text(config).encode())
    for message in docker_client.api.build(fileobj=dockerfile, tag=tag, rm=True, decode=True):
        if "error" in message or "errorDetail" in message:
            raise AssertionError(f"the Azure CLI layer did not build: {message}")
    yield tag
    docker_client.images.remove(tag)
