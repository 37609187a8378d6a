"""Fixtures for tests that need a real Docker engine (marked `docker`).

A missing engine is a test failure, never a skip: CI provisions one with
scripts/provision-docker before running the suite.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest
import requests

from safeagents_batch.batchdir import batch_containers
from safeagents_batch.backends.docker import remove_container

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
def engine(docker_client: docker.DockerClient) -> Iterator[docker.DockerClient]:
    """The engine, plus a check that the test left no container of the tool behind."""
    before = set(batch_containers(docker_client))
    yield docker_client
    leaked = set(batch_containers(docker_client)) - before
    for container_id in leaked:
        remove_container(docker_client, container_id)
    assert not leaked, f"test leaked {len(leaked)} labelled container(s)"


def write_project(root: Path, jobs_yaml: str, scripts: dict[str, str]) -> Path:
    """Writes scripts (relative path -> source) and jobs.yaml under `root`; returns the file."""
    for relative, source in scripts.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
    jobs = root / "jobs.yaml"
    jobs.write_text(jobs_yaml, encoding="utf-8")
    return jobs
