"""The image recipe on a real engine: `system_packages` and `setup` install a Debian package
and run commands at build; a framework's own `dockerfile` is the base; a built-in framework
with a pinned requirements file is one install layer that `pip check` finds consistent; a
failing `setup` command fails the build with what it printed; and the build says what it is
doing as it goes."""

from __future__ import annotations

import re
from pathlib import Path

import docker
import pytest
from engine_fixtures import own_tags, write_project

from safeagents_batch.cli import main as cli
from safeagents_batch.core.errors import EXIT_OK

pytestmark = pytest.mark.docker


def jobs_file(tmp_path: Path, image_name: str, framework: str, files: dict[str, str]) -> Path:
    text = (
        f"version: 1\nimage_name: {image_name}\nframeworks:\n  web:\n{framework}"
        "jobs:\n  - {name: a, framework: web, scripts: a.py}\n"
    )
    return write_project(tmp_path / "proj", text, {"a.py": "print('a')\n", **files})


def built_tag(client: docker.DockerClient, image_name: str) -> str:
    [tag] = own_tags(client, image_name)
    return tag


def in_image(client: docker.DockerClient, tag: str, script: str) -> str:
    """What `script` prints in a throwaway container of the image, as the image's own user."""
    output = client.containers.run(tag, ["sh", "-c", script], remove=True, network_mode="none")
    return bytes(output).decode()


@pytest.mark.usefixtures("engine")
def test_system_packages_and_setup_install_a_debian_package_and_run_commands(
    docker_client: docker.DockerClient,
    fresh_image_name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    framework = (
        "    packages: []\n    system_packages: [jq]\n"
        "    setup:\n"
        "      - jq --version > /opt/jq-version.txt\n"
        # Long enough that the display's 10 s pass while the step runs (with room for a busy
        # machine): the line it held back is shown then.
        "      - sleep 15\n"
        "      - |\n"
        "        echo first > /opt/setup.txt\n"
        '        echo "$(id -u)" >> /opt/setup.txt\n'
    )
    jobs = jobs_file(tmp_path, fresh_image_name, framework, {})

    assert cli.main(["build", str(jobs)]) == EXIT_OK

    tag = built_tag(docker_client, fresh_image_name)
    shown = in_image(
        docker_client, tag, "id -u; jq --version; cat /opt/jq-version.txt /opt/setup.txt"
    )
    uid, version, recorded, first, setup_uid = shown.split()
    assert uid == "10001"  # the image still ends as the tool's user
    assert version.startswith("jq-") and recorded == version
    assert (first, setup_uid) == ("first", "0")  # setup ran as root, both lines of one command
    # Off a terminal the build said what it was doing: its start, then where it was.
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"building {tag}"
    progress = [line for line in out if re.fullmatch(rf"building {tag} \(\d+s\): .+", line)]
    assert progress and out[-1].startswith(f"built   {tag}"), out


@pytest.mark.usefixtures("engine")
def test_a_failing_setup_command_fails_the_build_with_its_output(
    docker_client: docker.DockerClient,
    fresh_image_name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    framework = (
        "    packages: []\n    setup:\n"
        f"      - \"echo '{fresh_image_name}: error: the download failed' >&2; exit 3\"\n"
    )
    jobs = jobs_file(tmp_path, fresh_image_name, framework, {})

    assert cli.main(["build", str(jobs)]) != EXIT_OK

    out = capsys.readouterr().out
    assert f"{fresh_image_name}: error: the download failed (the step exited 3)" in out, out
    assert own_tags(docker_client, fresh_image_name) == []


@pytest.mark.usefixtures("engine")
def test_a_framework_dockerfile_is_the_base_of_its_image(
    docker_client: docker.DockerClient, fresh_image_name: str, tmp_path: Path
) -> None:
    dockerfile = (
        "FROM python:3.11-slim\n"
        "COPY data/ /data/\n"
        f"RUN echo {fresh_image_name} > /base.txt\n"
        "USER nobody\n"
        'ENTRYPOINT ["false"]\n'
    )
    files = {
        "docker/Dockerfile": dockerfile,
        "docker/data/seed.txt": "seed\n",
        "docker/data/secret.bin": "left out by .dockerignore\n",
        "docker/.dockerignore": "data/*.bin\n",
    }
    framework = "    dockerfile: docker/Dockerfile\n    packages: [six==1.16.0]\n"
    jobs = jobs_file(tmp_path, fresh_image_name, framework, files)

    assert cli.main(["build", str(jobs)]) == EXIT_OK

    tag = built_tag(docker_client, fresh_image_name)
    # The entrypoint is gone (`sh -c` runs), the user's layers are there, the tool's on top.
    shown = in_image(
        docker_client,
        tag,
        "id -u; cat /base.txt; ls /data; python -c 'import six; print(six.__version__)'; "
        "readlink /SafeAgents/logs",
    )
    assert shown.split() == [
        "10001",
        fresh_image_name,
        "seed.txt",
        "1.16.0",
        "/safeagents/logs",
    ]
    labels = docker_client.images.get(tag).labels
    assert labels["safeagents-batch.base"] == "dockerfile:Dockerfile"


@pytest.mark.usefixtures("engine")
def test_a_builtin_framework_with_pinned_requirements_is_one_consistent_install(
    docker_client: docker.DockerClient, fresh_image_name: str, tmp_path: Path
) -> None:
    """The issue's case: the framework's unpinned packages and a pinned file, resolved
    together: the pins hold, `pip check` is clean, and one layer installs them all."""
    pins = "h11==0.16.0\nhttpx==0.28.1\npython-dotenv==1.0.1\n"
    text = (
        f"version: 1\nimage_name: {fresh_image_name}\n"
        "frameworks:\n  openai-agents: {requirements: requirements.txt}\n"
        "jobs:\n  - {name: a, framework: openai-agents, scripts: a.py}\n"
    )
    jobs = write_project(
        tmp_path / "proj", text, {"a.py": "print('a')\n", "requirements.txt": pins}
    )

    assert cli.main(["build", str(jobs)]) == EXIT_OK

    tag = built_tag(docker_client, fresh_image_name)
    shown = in_image(
        docker_client,
        tag,
        "python -m pip check; python -m pip show python-dotenv h11 | grep ^Version; "
        "python -c 'import agents'",
    )
    assert shown.splitlines() == [
        "No broken requirements found.",
        "Version: 1.0.1",
        "Version: 0.16.0",
    ]
    installs = [
        layer["CreatedBy"]
        for layer in docker_client.api.history(tag)
        if "pip install --system" in layer["CreatedBy"]
    ]
    assert len(installs) == 1, installs
    assert "openai-agents" in installs[0] and "-r /opt/safeagents/requirements.txt" in installs[0]
