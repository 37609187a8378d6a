"""Images leave nothing behind, on a real engine: a rebuilt tag's old image goes once no
container uses it (and `clean --images --image-name` finds it while one does); a failed
build leaves no image of its own."""

from __future__ import annotations

from pathlib import Path

import docker
import docker.errors
import pytest
from engine_fixtures import PLAIN_FRAMEWORK_YAML, write_project

from safeagents_batch.cli import main as cli
from safeagents_batch.core.errors import EXIT_OK

pytestmark = pytest.mark.docker


def project(tmp_path: Path, image_name: str, framework: str = PLAIN_FRAMEWORK_YAML) -> Path:
    text = (
        f"version: 1\nimage_name: {image_name}\n{framework}"
        "jobs:\n  - {name: a, framework: plain, scripts: a.py}\n"
    )
    return write_project(tmp_path / "proj", text, {"a.py": "print('a')\n"})


def image_id(client: docker.DockerClient, image_name: str) -> str:
    [image] = client.images.list(name=image_name)
    return str(image.id)


def exists(client: docker.DockerClient, ref: str) -> bool:
    try:
        client.api.inspect_image(ref)
    except docker.errors.ImageNotFound:
        return False
    return True


def build(jobs: Path, *args: str) -> int:
    return cli.main(["build", str(jobs), *args])


@pytest.mark.usefixtures("engine")
def test_a_rebuilt_tags_old_image_goes_unless_a_container_uses_it_and_clean_finds_it(
    docker_client: docker.DockerClient,
    fresh_image_name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    jobs = project(tmp_path, fresh_image_name)
    assert build(jobs) == EXIT_OK
    first = image_id(docker_client, fresh_image_name)

    assert build(jobs, "--rebuild") == EXIT_OK
    second = image_id(docker_client, fresh_image_name)
    assert second != first and not exists(docker_client, first)  # replaced, and gone

    # A container of the image holds it through the next rebuild: it stays, dangling, and
    # `clean --images --image-name` finds it through the image that replaced it (same digest).
    holder = docker_client.containers.create(second, ["true"])
    try:
        assert build(jobs, "--rebuild") == EXIT_OK
        assert exists(docker_client, second) and not docker_client.images.get(second).tags
        capsys.readouterr()
        dry = ["clean", "--images", "--all", "--image-name", fresh_image_name, "--dry-run"]
        assert cli.main(dry) == EXIT_OK
        assert second[7:19] in capsys.readouterr().out
    finally:
        holder.remove()
    assert cli.main(["clean", "--images", "--all", "--image-name", fresh_image_name]) == EXIT_OK
    assert not exists(docker_client, second)


@pytest.mark.usefixtures("engine")
def test_a_failed_build_leaves_no_image(
    docker_client: docker.DockerClient,
    fresh_image_name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The installer refuses the option at once: the build fails after its first steps, one of
    # them new to the engine (a constraints file of the test's own: a COPY step of its own).
    failing = (
        "frameworks:\n  plain: {packages: ['--no-such-pip-option'], constraints: constraints.txt}\n"
    )
    jobs = project(tmp_path, fresh_image_name, failing)
    (jobs.parent / "constraints.txt").write_text(f"# {fresh_image_name}\nsix==1.16.0\n")
    before = {i["Id"] for i in docker_client.api.images(all=True)}

    assert build(jobs) != EXIT_OK

    after = {i["Id"] for i in docker_client.api.images(all=True)}
    left = [docker_client.api.inspect_image(i) for i in after - before]
    assert left == [], [(i["Id"], i["RepoTags"], i["Created"], i["Config"]["Labels"]) for i in left]
    # The error line is the installer's reason, not the builder's "The command '...'".
    out = capsys.readouterr().out
    assert "error: unexpected argument '--no-such-pip-option' found" in out, out
    assert "The command" not in out


@pytest.mark.usefixtures("engine", "azure_layer")
def test_only_the_job_that_binds_azure_gets_an_image_with_the_cli(
    docker_client: docker.DockerClient, fresh_image_name: str, tmp_path: Path
) -> None:
    text = (
        f"version: 1\nimage_name: {fresh_image_name}\n{PLAIN_FRAMEWORK_YAML}"
        "jobs:\n"
        "  - {name: cloud, framework: plain, scripts: a.py, bind_azure_folder: true}\n"
        "  - {name: local, framework: plain, scripts: a.py}\n"
    )
    jobs = write_project(tmp_path / "proj", text, {"a.py": "print('a')\n"})

    assert build(jobs) == EXIT_OK

    tags = sorted(t for i in docker_client.images.list(name=fresh_image_name) for t in i.tags)
    has_az = {
        tag: docker_client.containers.run(
            tag, ["sh", "-c", "command -v az || echo none"], remove=True, network_mode="none"
        ).strip()
        for tag in tags
    }
    assert len(tags) == 2, tags
    assert sorted(has_az.values()) == [b"/usr/local/bin/az", b"none"], has_az
