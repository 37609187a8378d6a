"""images: the pure ImageSpec (Dockerfile text + context digest -> tag); no Docker engine."""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import pytest

from safeagents_batch.jobs.model import ImageConfig
from safeagents_batch.staging.images import (
    CONTAINER_UID,
    context_files,
    dockerfile_text,
    image_spec,
    write_build_context,
)

TAG = re.compile(r"(?P<name>[a-z0-9./_-]+):(?P<framework>[A-Za-z0-9_.-]+)-(?P<digest>[0-9a-f]{12})")


@pytest.fixture
def config(tmp_path: Path) -> ImageConfig:
    """A framework config with a requirements file and one source dir, all under tmp_path."""
    (tmp_path / "requirements.txt").write_text("requests==2.31.0\n")
    lib = tmp_path / "lib"
    (lib / "pkg").mkdir(parents=True)
    (lib / "pkg" / "__init__.py").write_text("VALUE = 1\n")
    return ImageConfig(
        framework="langgraph",
        packages=("langgraph", "openai"),
        additional_packages=("numpy",),
        requirements=tmp_path / "requirements.txt",
        source_dirs=(lib,),
    )


def tag(config: ImageConfig) -> str:
    return image_spec(config).tag


def test_tag_format(config: ImageConfig) -> None:
    match = TAG.fullmatch(tag(config))
    assert match is not None
    assert (match["name"], match["framework"]) == ("safeagents-runtime", "langgraph")
    custom = dataclasses.replace(config, image_name="registry.local/agents")
    assert tag(custom).startswith("registry.local/agents:langgraph-")


def test_unchanged_config_gives_the_same_tag(config: ImageConfig) -> None:
    again = dataclasses.replace(config)
    assert tag(config) == tag(again) == tag(config)


def test_same_content_elsewhere_gives_the_same_tag(config: ImageConfig, tmp_path: Path) -> None:
    assert config.requirements is not None
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(config.requirements, copy / "requirements.txt")
    shutil.copytree(config.source_dirs[0], copy / "lib")
    moved = dataclasses.replace(
        config, requirements=copy / "requirements.txt", source_dirs=(copy / "lib",)
    )
    assert tag(moved) == tag(config)


@pytest.mark.parametrize(
    "change",
    [
        {"additional_packages": ("numpy", "pandas")},
        {"additional_packages": ()},
        {"packages": ("langgraph",)},
        {"base_image": "python:3.11-bookworm"},
        {"python_version": "3.12"},
        {"requirements": None},
        {"source_dirs": ()},
    ],
)
def test_tag_changes_with_the_config(config: ImageConfig, change: dict[str, object]) -> None:
    assert tag(dataclasses.replace(config, **change)) != tag(config)  # type: ignore[arg-type]


def test_tag_changes_with_requirements_content(config: ImageConfig) -> None:
    before = tag(config)
    assert config.requirements is not None
    config.requirements.write_text("requests==2.32.0\n")
    assert tag(config) != before


def test_tag_changes_with_source_dir_content(config: ImageConfig) -> None:
    lib = config.source_dirs[0]
    tags = [tag(config)]
    (lib / "pkg" / "__init__.py").write_text("VALUE = 2\n")
    tags.append(tag(config))
    (lib / "pkg" / "extra.py").write_text("")
    tags.append(tag(config))
    (lib / "pkg" / "extra.py").rename(lib / "pkg" / "renamed.py")
    tags.append(tag(config))
    (lib / "pkg" / "renamed.py").chmod(0o755)
    tags.append(tag(config))
    assert len(set(tags)) == len(tags)


def test_caches_in_source_dirs_do_not_change_the_tag(config: ImageConfig) -> None:
    before = tag(config)
    cache = config.source_dirs[0] / "pkg" / "__pycache__"
    cache.mkdir()
    (cache / "mod.cpython-311.pyc").write_bytes(b"\0")
    (config.source_dirs[0] / "pkg" / "stale.pyc").write_bytes(b"\0")
    assert tag(config) == before


def test_dockerfile_ends_as_the_non_root_user(config: ImageConfig) -> None:
    text = dockerfile_text(config)
    lines = text.splitlines()
    assert lines[1] == "FROM python:3.11-slim"
    user_lines = [line for line in lines if line.startswith("USER ")]
    assert user_lines == [f"USER {CONTAINER_UID}:{CONTAINER_UID}"] == [lines[-1]]
    assert CONTAINER_UID != 0
    assert (
        "RUN uv pip install --system langgraph openai numpy -r /opt/safeagents/requirements.txt"
        " && uv pip check --system"
    ) in lines
    assert "COPY requirements.txt /opt/safeagents/requirements.txt" in lines
    assert image_spec(config).dockerfile == text


def test_base_image_wins_over_python_version(config: ImageConfig) -> None:
    custom = dataclasses.replace(config, base_image="ghcr.io/org/base:1", python_version="3.12")
    assert dockerfile_text(custom).splitlines()[1] == "FROM ghcr.io/org/base:1"


def test_build_context_holds_what_the_digest_covers(config: ImageConfig, tmp_path: Path) -> None:
    spec = image_spec(config)
    context = tmp_path / "context"
    write_build_context(spec, context)
    assert (context / "Dockerfile").read_text() == spec.dockerfile
    assert (context / "requirements.txt").read_text() == "requests==2.31.0\n"
    assert (context / "src/lib/pkg/__init__.py").read_text() == "VALUE = 1\n"
    assert [rel for rel, _ in context_files(config)] == [
        "requirements.txt",
        "src/lib/pkg/__init__.py",
    ]


def test_a_failed_steps_error_is_what_it_printed_not_the_builders_command() -> None:
    from safeagents_batch.backends.docker.images import StepOutput, _real_error

    # As the engine streams it: chunks that split lines, colour codes, the builder's lines.
    chunks = [
        'Step 3/9 : RUN ["python", "-m", "pip", "install", "nope"]\n',
        " ---> Running in 1a2b3c4d5e6f\n",
        "Collecting nope\n\x1b[91merror:\x1b[0m\x1b[91m",
        " Could not find a version that satisfies the requirement nope\n",
        "ERROR: No matching distribution found for nope\n\x1b[0m",
    ]
    output = StepOutput()
    for chunk in chunks:
        output.feed(chunk)
    builder = 'The command \'["python" "-m" "pip" ...]\' returned a non-zero code: 1'

    assert _real_error(builder, output.lines()) == (
        "error: Could not find a version that satisfies the requirement nope / "
        "ERROR: No matching distribution found for nope (the step exited 1)"
    )
    assert _real_error("no space left on device", output.lines()) == "no space left on device"
