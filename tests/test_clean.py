"""`clean` on a real engine, with real leftovers: an orchestrator SIGKILLed mid-batch, an image
of a configuration no jobs file needs any more, next to things `clean` must not touch (a live
batch, a container the user started by hand, the images a jobs file needs).

Other sessions may use the engine meanwhile, and `clean` sees their items too: every assertion
is about this test's own containers and images, found by id, name and tag, never about totals.
"""

from __future__ import annotations

import secrets
import signal
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest
from engine_cli import (
    HELD_SCRIPT,
    Orchestrators,
    SessionImage,
    cli,
    containers_of,
    finish,
    kill_hard,
    session_image,
    wait_for,
    wait_for_batch,
)
from engine_fixtures import own_tags

from safeagents_batch.backends.docker.clean import human_size
from safeagents_batch.core.errors import EXIT_INTERRUPTED, EXIT_OK

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def image(
    docker_client: docker.DockerClient,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[SessionImage]:
    yield from session_image(docker_client, tmp_path_factory.mktemp("image"))


@pytest.fixture
def bystander(docker_client: docker.DockerClient) -> Iterator[str]:
    """A container the user started by hand from the base image: not the tool's."""
    container = docker_client.containers.run(
        "python:3.11-slim",
        ["sleep", "600"],
        detach=True,
        name=f"sab-clean-bystander-{secrets.token_hex(4)}",
    )
    try:
        yield container.name
    finally:
        container.remove(force=True)


@pytest.fixture
def unneeded_image(
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> Iterator[list[str]]:
    """A tool image (built by the tool, labelled) of a configuration no jobs file here needs,
    built under two image names: one image id with two tags, as after renaming `image_name`."""
    token = secrets.token_hex(16)
    names = [f"sab-clean-test-{secrets.token_hex(4)}" for _ in range(2)]
    for name in names:
        other = SessionImage(name, token)
        jobs = other.project(
            tmp_path / name,
            "other",
            "  - {name: o, framework: plain, scripts: o.py}\n",
            {"o.py": "pass\n"},
        )
        built = cli(["build", str(jobs)])
        assert built.returncode == EXIT_OK, built.stdout + built.stderr
    tags = sorted(  # its own tags only: the image id may carry other tests' too
        {
            t
            for name in names
            for i in docker_client.images.list(name=name)
            for t in i.tags
            if t.startswith(f"{name}:")
        }
    )
    try:  # removed also when the check fails
        assert len(tags) == 2 and len({docker_client.images.get(t).id for t in tags}) == 1, tags
        yield tags
    finally:
        for tag in tags:
            if image_exists(docker_client, tag):
                docker_client.images.remove(tag)


def names(client: docker.DockerClient, batch_dir: Path) -> list[str]:
    return sorted(c["Names"][0].lstrip("/") for c in containers_of(client, batch_dir))


def exists(client: docker.DockerClient, container_name: str) -> bool:
    try:
        client.containers.get(container_name)
    except docker.errors.NotFound:
        return False
    return True


def image_exists(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def lines_about(output: str, items: list[str]) -> list[str]:
    """The output lines that name one of `items` (clean also lists other sessions' things)."""
    return sorted(line for line in output.splitlines() if any(i in line for i in items))


@pytest.mark.docker
def test_clean_removes_exactly_the_leftovers_and_keeps_live_and_needed_things(
    engine: docker.DockerClient,
    image: SessionImage,
    orchestrators: Orchestrators,
    tmp_path: Path,
    bystander: str,
    unneeded_image: list[str],
) -> None:
    # Leftovers for real: an orchestrator killed while its two runs run.
    dead_jobs = image.project(
        tmp_path / "dead",
        "dead",
        "  - {name: dead, framework: plain, scripts: held.py, repeat: 2}\n",
        {"held.py": HELD_SCRIPT},
        held=True,
    )
    dead = orchestrators.start(
        ["run", str(dead_jobs), "-o", str(tmp_path / "out-dead"), "--no-progress"]
    )
    dead_dir = wait_for_batch(tmp_path / "out-dead", dead, running=2)
    wait_for(lambda: len(containers_of(engine, dead_dir)) == 2, "two containers", dead)
    kill_hard(dead)
    leftovers = names(engine, dead_dir)
    # And a batch that is still running.
    live_jobs = image.project(
        tmp_path / "live",
        "live",
        "  - {name: live, framework: plain, scripts: held.py}\n",
        {"held.py": HELD_SCRIPT},
        held=True,
    )
    live = orchestrators.start(
        ["run", str(live_jobs), "-o", str(tmp_path / "out-live"), "--no-progress"]
    )
    live_dir = wait_for_batch(tmp_path / "out-live", live, running=1)
    wait_for(lambda: len(containers_of(engine, live_dir)) == 1, "the live container", live)
    [live_name] = names(engine, live_dir)
    mine = [*leftovers, live_name, bystander, *unneeded_image, image.image_name]

    # Scoped to this test's image names: the engine's other tool images (shared caches of
    # other tests and sessions) are none of this test's business and must stay.
    scope = [
        arg
        for name in sorted({t.rpartition(":")[0] for t in unneeded_image} | {image.image_name})
        for arg in ("--image-name", name)
    ]
    dry = cli(["clean", "--images", str(live_jobs), *scope, "--dry-run"])

    assert dry.returncode == EXIT_OK, dry.stdout + dry.stderr
    live_pid = f"its batch is still running (pid {live.pid})"
    own_size = (
        engine.images.get(unneeded_image[0]).attrs["Size"]
        - engine.images.get("python:3.11-slim").attrs["Size"]
    )  # the base's layers stay
    unneeded = f"image {', '.join(unneeded_image)} ({human_size(own_size)})"
    assert lines_about(dry.stdout, mine) == sorted(
        [
            *(f"would remove container {name}" for name in leftovers),
            f"kept container {live_name}: {live_pid}",
            f"would remove {unneeded}",
        ]
    )
    assert all(
        any(item in line for item in mine)
        for line in dry.stdout.splitlines()
        if line.startswith("would remove image")
    ), "--image-name did not scope images"
    assert names(engine, dead_dir) == leftovers  # a dry run removes nothing
    assert all(image_exists(engine, tag) for tag in unneeded_image)

    containers_only = cli(["clean"])

    assert containers_only.returncode == EXIT_OK, containers_only.stdout + containers_only.stderr
    assert lines_about(containers_only.stdout, mine) == sorted(
        [
            *(f"removed container {name}" for name in leftovers),
            f"kept container {live_name}: {live_pid}",
        ]
    )
    assert names(engine, dead_dir) == []
    assert names(engine, live_dir) == [live_name]
    assert engine.containers.get(bystander).status == "running"
    assert all(image_exists(engine, tag) for tag in unneeded_image)  # no --images: kept

    with_images = cli(["clean", "--images", str(live_jobs), *scope])

    assert with_images.returncode == EXIT_OK, with_images.stdout + with_images.stderr
    assert lines_about(with_images.stdout, mine) == sorted(
        [f"kept container {live_name}: {live_pid}", f"removed {unneeded}"]
    )
    assert not any(image_exists(engine, tag) for tag in unneeded_image)
    assert own_tags(engine, image.image_name), "the image the jobs file needs was removed"
    assert names(engine, live_dir) == [live_name]
    assert exists(engine, bystander)

    # The live batch was not disturbed: it still stops cleanly on Ctrl-C.
    live.send_signal(signal.SIGINT)
    code, _, stderr = finish(live)
    assert code == EXIT_INTERRUPTED, stderr
    assert names(engine, live_dir) == []
