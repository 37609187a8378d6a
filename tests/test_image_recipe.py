"""The image recipe keys, decided without an engine: `system_packages`, `setup` and a
framework's own `dockerfile` in the generated Dockerfile, the build context and the tag, and
their located errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from conftest import Project

from safeagents_batch.core.errors import JobsFileError
from safeagents_batch.jobs.load import load_jobs_file
from safeagents_batch.jobs.model import ImageConfig
from safeagents_batch.jobs.resolved import resolved_yaml
from safeagents_batch.staging.images import (
    TOOL_CONTEXT,
    context_files,
    dockerfile_text,
    dockerignore_lines,
    image_spec,
    write_build_context,
)

USER_DOCKERFILE = "FROM python:3.11-slim AS base\nRUN echo built > /base.txt\nUSER nobody\n"


def framework(project: Project, settings: str) -> ImageConfig:
    path = project.jobs(
        f"version: 1\nframeworks:\n  web:\n{settings}"
        "jobs:\n  - {name: a, framework: web, scripts: scripts/a.py}\n"
    )
    return load_jobs_file(path).frameworks["web"]


def located_error(project: Project, settings: str) -> str:
    with pytest.raises(JobsFileError) as raised:
        framework(project, settings)
    [problem] = raised.value.problems
    return str(problem)


def run_lines(config: ImageConfig) -> list[str]:
    return [line for line in dockerfile_text(config).splitlines() if line.startswith("RUN ")]


# -- system packages and setup ------------------------------------------------------------------


def test_system_packages_are_one_apt_layer_before_any_python_install(project: Project) -> None:
    config = framework(project, "    packages: [six]\n    system_packages: [jq, libpq-dev=15.*]\n")
    assert config.system_packages == ("jq", "libpq-dev=15.*")
    runs = run_lines(config)
    assert runs[0] == (
        "RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "
        "--no-install-recommends jq 'libpq-dev=15.*' && rm -rf /var/lib/apt/lists/*"
    )
    assert "uv==" in runs[1] and "uv pip install --system six" in runs[2]


def test_setup_commands_run_after_the_install_each_its_own_layer(project: Project) -> None:
    (project.root / "lib").mkdir()
    config = framework(
        project,
        "    packages: [six]\n    source_dirs: [lib]\n"
        "    setup:\n      - echo one > /one\n      - |\n        set -x\n        touch /two\n",
    )
    assert config.setup == ("echo one > /one", "set -x\ntouch /two\n")
    lines = dockerfile_text(config).splitlines()
    install = next(i for i, line in enumerate(lines) if "uv pip install --system six" in line)
    setups = [i for i, line in enumerate(lines) if line.startswith('RUN ["/bin/sh", "-ec"')]
    copy = next(i for i, line in enumerate(lines) if line.startswith("COPY src/"))
    assert install < setups[0] < setups[1] < copy  # source dirs change most: last
    # The JSON form keeps a command of several lines whole, as `sh -ec` gets it.
    assert json.loads(lines[setups[1]][len("RUN ") :]) == ["/bin/sh", "-ec", "set -x\ntouch /two\n"]


@pytest.mark.parametrize(
    "change",
    [
        {"system_packages": ("jq",)},
        {"system_packages": ("jq", "curl")},
        {"setup": ("true",)},
        {"setup": ("true", "true")},
    ],
)
def test_system_packages_and_setup_are_in_the_tag(change: dict[str, object]) -> None:
    plain = ImageConfig(framework="web", packages=("six",))
    changed = dataclasses.replace(plain, **change)  # type: ignore[arg-type]
    assert image_spec(changed).tag != image_spec(plain).tag


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (
            "    packages: []\n    system_packages: [jq, 'Bad Name']\n",
            "frameworks.web.system_packages[1]",
        ),
        (
            "    packages: []\n    system_packages: [jq; rm -rf /]\n",
            "frameworks.web.system_packages[0]",
        ),
        ("    packages: []\n    setup: ['']\n", "frameworks.web.setup[0]"),
        ("    packages: []\n    setup: echo hi\n", "frameworks.web.setup"),
    ],
)
def test_a_wrong_recipe_value_is_a_located_error(
    project: Project, settings: str, expected: str
) -> None:
    assert expected in located_error(project, settings)


def test_a_framework_of_requirements_alone_is_valid(project: Project) -> None:
    project.write("requirements.txt", "six==1.16.0\n")
    config = framework(project, "    requirements: requirements.txt\n")
    assert config.packages == ()
    assert "-r /opt/safeagents/requirements.txt" in dockerfile_text(config)


# -- a framework's own dockerfile ---------------------------------------------------------------


@pytest.fixture
def own_dockerfile(project: Project) -> Path:
    """docker/Dockerfile with a file it copies, an ignored file, a requirements.txt and a src/
    of its own (names the tool's files would otherwise take)."""
    project.write("docker/Dockerfile", USER_DOCKERFILE)
    project.write("docker/data/seed.txt", "seed\n")
    project.write("docker/data/big.bin", "ignored by .dockerignore\n")
    project.write("docker/.dockerignore", "# comment\ndata/*.bin\n")
    project.write("docker/requirements.txt", "theirs\n")
    project.write("docker/src/theirs.py", "")
    project.write("requirements.txt", "six==1.16.0\n")
    return project.root / "docker" / "Dockerfile"


def test_a_dockerfile_is_the_base_and_the_tool_goes_on_as_root(
    project: Project, own_dockerfile: Path
) -> None:
    config = framework(
        project, "    dockerfile: docker/Dockerfile\n    requirements: requirements.txt\n"
    )
    assert config.dockerfile == own_dockerfile
    text = dockerfile_text(config)
    assert text.startswith(USER_DOCKERFILE)  # parser directives, ARGs and stages as written
    rest = text[len(USER_DOCKERFILE) :].splitlines()
    assert rest[1:3] == ["USER root", "ENTRYPOINT []"]
    assert not any(line.startswith("FROM ") for line in rest)
    assert f"COPY {TOOL_CONTEXT}/requirements.txt /opt/safeagents/requirements.txt" in rest
    assert rest[-1] == "USER 10001:10001"
    assert config.base_label == "dockerfile:Dockerfile"


def test_a_dockerfiles_directory_is_the_context_with_the_tools_files_apart(
    project: Project, own_dockerfile: Path, tmp_path: Path
) -> None:
    config = framework(
        project, "    dockerfile: docker/Dockerfile\n    requirements: requirements.txt\n"
    )
    assert [rel for rel, _ in context_files(config)] == [
        f"{TOOL_CONTEXT}/requirements.txt",
        "Dockerfile",
        "data/seed.txt",
        "requirements.txt",
        "src/theirs.py",
    ]
    spec = image_spec(config)
    assert spec.dockerfile_path == f"{TOOL_CONTEXT}/Dockerfile"
    write_build_context(spec, tmp_path / "ctx")
    assert (tmp_path / "ctx" / TOOL_CONTEXT / "Dockerfile").read_text() == spec.dockerfile
    assert (tmp_path / "ctx" / TOOL_CONTEXT / "requirements.txt").read_text() == "six==1.16.0\n"
    assert (tmp_path / "ctx" / "requirements.txt").read_text() == "theirs\n"
    assert not (tmp_path / "ctx" / ".dockerignore").exists()
    assert not (tmp_path / "ctx" / "data" / "big.bin").exists()


def test_a_dockerfile_and_its_context_are_in_the_tag(
    project: Project, own_dockerfile: Path
) -> None:
    config = framework(project, "    dockerfile: docker/Dockerfile\n    packages: []\n")
    tags = [image_spec(config).tag]
    (own_dockerfile.parent / "data" / "big.bin").write_text("still ignored\n")
    assert image_spec(config).tag == tags[0]
    (own_dockerfile.parent / "data" / "seed.txt").write_text("changed\n")
    tags.append(image_spec(config).tag)
    own_dockerfile.write_text(USER_DOCKERFILE + "RUN true\n")
    tags.append(image_spec(config).tag)
    assert len(set(tags)) == 3


def test_a_dockerfile_with_a_base_image_or_missing_is_a_located_error(
    project: Project, own_dockerfile: Path
) -> None:
    both = located_error(
        project, "    packages: []\n    dockerfile: docker/Dockerfile\n    base_image: x:1\n"
    )
    assert "frameworks.web.dockerfile: a framework starts from its `dockerfile` or its" in both
    missing = located_error(project, "    packages: []\n    dockerfile: nope/Dockerfile\n")
    assert "frameworks.web.dockerfile: dockerfile not found" in missing


def test_dockerignore_patterns_are_anchored_at_the_context_root(tmp_path: Path) -> None:
    ignore = tmp_path / ".dockerignore"
    ignore.write_text("# c\n\nfoo\n/bar/*.log\n**/*.tmp\n!keep.tmp\n")
    assert dockerignore_lines(ignore) == ["/foo", "/bar/*.log", "/**/*.tmp", "!/keep.tmp"]
    assert dockerignore_lines(tmp_path / "none") == []


def test_the_recipe_keys_survive_the_resolved_snapshot(
    project: Project, own_dockerfile: Path
) -> None:
    original = load_jobs_file(
        project.jobs(
            "version: 1\nframeworks:\n  web:\n    packages: []\n"
            "    dockerfile: docker/Dockerfile\n    system_packages: [jq]\n"
            "    setup: ['echo hi']\njobs:\n  - {name: a, framework: web, scripts: scripts/a.py}\n"
        )
    )
    again = load_jobs_file(project.write("batch/jobs.yaml", resolved_yaml(original)))
    assert again.frameworks == original.frameworks
    assert image_spec(again.frameworks["web"]).tag == image_spec(original.frameworks["web"]).tag


def test_a_framework_of_a_dockerfile_alone_is_valid(project: Project, own_dockerfile: Path) -> None:
    config = framework(project, "    dockerfile: docker/Dockerfile\n")
    assert config.packages == () and config.dockerfile == own_dockerfile
    assert "uv pip install" not in dockerfile_text(config)
