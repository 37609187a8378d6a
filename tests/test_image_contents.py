"""What an image holds, decided without an engine: the Azure CLI layer (from the jobs or the
framework's `azure_cli`), pins and constraints in the tag, the resolved versions `build`
prints, and the packages an image record carries through the manifest's JSON."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import msgspec
import pytest
from conftest import Project

from safeagents_batch.backends.docker.images import Packages, packages_from_labels, parse_freeze
from safeagents_batch.core.errors import JobsFileError
from safeagents_batch.jobs.frameworks import framework_packages
from safeagents_batch.jobs.load import load_jobs_file
from safeagents_batch.jobs.model import ImageConfig
from safeagents_batch.jobs.plan import job_image, used_images
from safeagents_batch.jobs.resolved import resolved_yaml
from safeagents_batch.records.model import ImageRecord
from safeagents_batch.staging.images import (
    AZURE_CLI_PACKAGE,
    UV_VERSION,
    context_files,
    dockerfile_text,
    image_spec,
    write_build_context,
)
from safeagents_batch.staging.packages import requested_versions, requirement_name


def jobs(project: Project, frameworks: str, jobs_yaml: str) -> Path:
    return project.jobs(f"version: 1\nframeworks:\n{frameworks}jobs:\n{jobs_yaml}")


# -- the Azure CLI -------------------------------------------------------------------------------


def test_only_the_jobs_that_bind_azure_get_the_cli_in_their_image(project: Project) -> None:
    """Two jobs of one framework, one binding ~/.azure: two images, the CLI in one."""
    loaded = load_jobs_file(
        jobs(
            project,
            "  plain: {packages: []}\n  other: {packages: []}\n",
            "  - {name: a, framework: plain, scripts: scripts/a.py, bind_azure_folder: true}\n"
            "  - {name: b, framework: plain, scripts: scripts/b.py}\n"
            "  - {name: c, framework: other, scripts: scripts/b.py}\n",
        )
    )
    images = {job.name: job_image(job, loaded) for job in loaded.jobs}
    assert {name: image.azure_cli for name, image in images.items()} == {
        "a": True,
        "b": False,
        "c": False,
    }
    assert images["a"].framework == images["b"].framework == "plain"
    assert used_images(loaded) == [images["a"], images["b"], images["c"]]
    assert image_spec(images["a"]).tag != image_spec(images["b"]).tag


def test_the_framework_key_wins_over_the_jobs(project: Project) -> None:
    loaded = load_jobs_file(
        jobs(
            project,
            "  plain: {packages: [], azure_cli: false}\n  other: {packages: [], azure_cli: true}\n",
            "  - {name: a, framework: plain, scripts: scripts/a.py, bind_azure_folder: true}\n"
            "  - {name: c, framework: other, scripts: scripts/b.py}\n",
        )
    )
    images = {job.name: job_image(job, loaded) for job in loaded.jobs}
    assert images["a"].azure_cli is False  # `azure_cli: false` keeps it out
    assert images["c"].azure_cli is True  # `azure_cli: true` puts it in, bound or not


def test_a_default_bind_reaches_every_framework_through_its_jobs(project: Project) -> None:
    loaded = load_jobs_file(
        project.jobs(
            "version: 1\ndefaults: {bind_azure_folder: true}\n"
            "jobs:\n  - {name: a, framework: langgraph, scripts: scripts/a.py}\n"
        )
    )
    assert job_image(loaded.jobs[0], loaded).azure_cli is True


def test_the_cli_is_its_own_layer_right_on_the_base_in_its_own_venv() -> None:
    config = ImageConfig(framework="x", packages=("langgraph",), azure_cli=True)
    lines = dockerfile_text(config).splitlines()
    [azure] = [i for i, line in enumerate(lines) if AZURE_CLI_PACKAGE in line]
    # Right after the base, its ENV and the pinned uv (one small layer every image shares).
    assert lines[azure - 3].startswith("FROM") and lines[azure - 2].startswith("ENV")
    assert f"uv=={UV_VERSION}" in lines[azure - 1]
    assert "uv venv --seed /opt/az" in lines[azure] and "/usr/local/bin/az" in lines[azure]
    assert "langgraph" in lines[azure + 1]
    without = dockerfile_text(dataclasses.replace(config, azure_cli=False))
    assert AZURE_CLI_PACKAGE not in without
    assert image_spec(config).tag != image_spec(dataclasses.replace(config, azure_cli=False)).tag


def test_built_in_frameworks_carry_azure_identity() -> None:
    for name in ("langgraph", "openai-agents", "autogen", "magentic", "crewai"):
        assert "azure-identity" in framework_packages(name)


def test_an_unknown_azure_cli_value_is_a_located_error(project: Project) -> None:
    path = jobs(
        project,
        "  plain: {packages: [], azure_cli: yes-please}\n",
        "  - {name: a, framework: plain, scripts: scripts/a.py}\n",
    )
    with pytest.raises(JobsFileError) as raised:
        load_jobs_file(path)
    assert "frameworks.plain.azure_cli" in str(raised.value)


# -- pins and constraints -----------------------------------------------------------------------


def test_pinning_a_package_changes_the_tag() -> None:
    loose = ImageConfig(framework="lg", packages=("langgraph",))
    pinned = dataclasses.replace(loose, packages=("langgraph==0.2.0",))
    assert image_spec(loose).tag != image_spec(pinned).tag
    assert "langgraph==0.2.0" in dockerfile_text(pinned)


def test_constraints_pin_every_install_and_their_content_is_in_the_tag(
    project: Project,
) -> None:
    constraints = project.write("constraints.txt", "langgraph==0.2.0\nhttpx==0.27.0\n")
    project.write("requirements.txt", "pandas\n")
    loaded = load_jobs_file(
        jobs(
            project,
            "  lg:\n    packages: [langgraph]\n    additional_packages: [numpy]\n"
            "    requirements: requirements.txt\n    constraints: constraints.txt\n",
            "  - {name: a, framework: lg, scripts: scripts/a.py}\n",
        )
    )
    config = loaded.frameworks["lg"]
    assert config.constraints == constraints
    # One resolution of everything, under the constraints, then the resolver's check.
    installs = [line for line in dockerfile_text(config).splitlines() if "uv pip install" in line]
    assert installs == [
        "RUN uv pip install --system langgraph numpy -c /opt/safeagents/constraints.txt "
        "-r /opt/safeagents/requirements.txt && uv pip check --system"
    ]
    assert ("constraints.txt", constraints) in context_files(config)
    before = image_spec(config).tag
    constraints.write_text("langgraph==0.2.1\nhttpx==0.27.0\n", encoding="utf-8")
    assert image_spec(config).tag != before


def test_the_build_context_holds_the_constraints_file(project: Project, tmp_path: Path) -> None:
    constraints = project.write("c.txt", "six==1.16.0\n")
    config = ImageConfig(framework="x", packages=("six",), constraints=constraints)
    write_build_context(image_spec(config), tmp_path / "ctx")
    assert (tmp_path / "ctx" / "constraints.txt").read_text() == "six==1.16.0\n"
    text = (tmp_path / "ctx" / "Dockerfile").read_text()
    assert text.index("COPY constraints.txt") < text.index("install --system six")


def test_a_missing_constraints_file_is_a_located_error(project: Project) -> None:
    path = jobs(
        project,
        "  plain: {packages: [], constraints: nope.txt}\n",
        "  - {name: a, framework: plain, scripts: scripts/a.py}\n",
    )
    with pytest.raises(JobsFileError) as raised:
        load_jobs_file(path)
    assert "frameworks.plain.constraints: constraints file not found" in str(raised.value)


def test_extras_in_a_constraints_file_are_a_located_error_before_any_build(
    project: Project,
) -> None:
    """pip refuses `pkg[extra]` in a constraints file only once the build runs it; a
    requirements file used as constraints (a common shortcut) has them."""
    project.write("reqs.txt", "# pinned\nhttpx==0.27.0\nrequests[socks] == 2.31.0  # proxy\n")
    path = jobs(
        project,
        "  plain: {packages: [], constraints: reqs.txt}\n",
        "  - {name: a, framework: plain, scripts: scripts/a.py}\n",
    )
    with pytest.raises(JobsFileError) as raised:
        load_jobs_file(path)
    [problem] = raised.value.problems
    assert str(problem).endswith(
        "frameworks.plain.constraints: reqs.txt:3: `requests[socks] == 2.31.0`: a constraints "
        "file cannot have extras (pip refuses them); drop the `[...]` here, or list the package "
        "in `requirements`"
    )


def test_constraints_and_azure_cli_survive_the_resolved_snapshot(project: Project) -> None:
    project.write("constraints.txt", "six==1.16.0\n")
    original = load_jobs_file(
        jobs(
            project,
            "  plain: {packages: [six], constraints: constraints.txt, azure_cli: false}\n",
            "  - {name: a, framework: plain, scripts: scripts/a.py, bind_azure_folder: true}\n",
        )
    )
    snapshot = project.write("batch/jobs.yaml", resolved_yaml(original))
    again = load_jobs_file(snapshot)
    assert again.frameworks == original.frameworks
    assert image_spec(again.frameworks["plain"]).tag == image_spec(original.frameworks["plain"]).tag


# -- resolved versions --------------------------------------------------------------------------


def test_requirement_names_are_canonical() -> None:
    assert requirement_name("autogen-ext[openai]>=0.4") == "autogen-ext"
    assert requirement_name("Python_Dotenv") == "python-dotenv"
    assert requirement_name("langgraph==0.2.0 ; python_version>'3'") == "langgraph"
    assert requirement_name("https://example.com/x.whl") is None


def test_requested_versions_name_what_the_image_resolved() -> None:
    config = ImageConfig(
        framework="x",
        packages=("autogen-ext[openai]", "python_dotenv"),
        additional_packages=("mylib",),
        azure_cli=True,
    )
    freeze = ("autogen_ext==0.4.1", "python-dotenv==1.0.1", "mylib @ file:///src/mylib", "pip==24")
    assert requested_versions(config, freeze, ("azure-cli==2.91.0", "knack==0.11")) == [
        "autogen_ext==0.4.1",
        "python-dotenv==1.0.1",
        "mylib @ file:///src/mylib",
        "azure-cli==2.91.0",
    ]
    assert requested_versions(dataclasses.replace(config, azure_cli=False), ())[0] == (
        "autogen-ext (not found)"
    )


def test_freeze_output_parts_python_from_the_azure_cli_venv() -> None:
    text = "six==1.16.0\npip==24.0\n#safeagents-batch: azure-cli venv\nazure-cli==2.91.0\n"
    assert parse_freeze(text) == Packages(("six==1.16.0", "pip==24.0"), ("azure-cli==2.91.0",))
    assert parse_freeze("six==1\n") == Packages(("six==1",))


def test_labels_carry_the_packages_and_read_back() -> None:
    packages = Packages(("six==1.16.0",), ("azure-cli==2.91.0",))
    assert packages_from_labels(packages.labels()) == packages
    assert packages_from_labels({"other": "x"}) is None  # an image from before the labels
    assert packages_from_labels({"safeagents-batch.packages": "not json"}) is None


def test_an_image_record_keeps_its_packages_through_json() -> None:
    record = ImageRecord(
        tag="t:x-1",
        framework="x",
        status="built",
        build_seconds=1.0,
        build_log="log",
        packages=("six==1",),
        azure_cli_packages=("azure-cli==2",),
    )
    data = json.loads(msgspec.json.encode(record))
    assert data["packages"] == ["six==1"] and data["azure_cli_packages"] == ["azure-cli==2"]
    assert msgspec.json.decode(json.dumps(data), type=ImageRecord) == record
    pending = ImageRecord(tag="t", framework="x", status="pending")
    assert json.loads(msgspec.json.encode(pending))["packages"] == []
