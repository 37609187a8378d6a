"""`record_env`: values a job takes from the host or an env file, written down on request (the
model deployment a run was given), in the manifest, the results and the report; a
secret-looking name, or one the job has no value for, is a located error."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import Project
from fakes import FakeBackend

from safeagents_batch.core.errors import JobsFileError
from safeagents_batch.execution.batch import run_batch
from safeagents_batch.execution.reporting import CollectingReporter
from safeagents_batch.jobs.load import load_and_expand, load_jobs_file
from safeagents_batch.jobs.resolved import resolved_yaml
from safeagents_batch.jobs.secrets import REDACTED
from safeagents_batch.report.page import write_report

HEAD = "version: 1\nframeworks: {plain: {packages: []}}\n"


def problems(path: Path) -> list[str]:
    with pytest.raises(JobsFileError) as info:
        load_jobs_file(path, label="jobs.yaml")
    return [str(p) for p in info.value.problems]


def test_a_secret_looking_or_unknown_name_is_a_located_error(project: Project) -> None:
    path = project.jobs(
        HEAD
        + "jobs:\n"
        + "  - {name: a, framework: plain, scripts: scripts/a.py, env_passthrough: [API_KEY],\n"
        + "     record_env: [API_KEY, DEPLOYMENT]}\n"
    )
    assert problems(path) == [
        "jobs.yaml:5:19: jobs[0].record_env[0]: a secret-looking name cannot be recorded: "
        "record_env writes values to the manifest, the results and the report (adjust "
        "secret_patterns if it is no secret)",
        "jobs.yaml:5:28: jobs[0].record_env[1]: 'DEPLOYMENT' is none of the job's variables "
        "(env, matrix, env_passthrough)",
    ]


def test_recorded_values_are_written_down_and_the_others_stay_redacted(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.write(".env", "AZURE_MODEL_NAME=gpt-4o\nFILE_ONLY=quiet\n")
    monkeypatch.setenv("AZURE_DEPLOYMENT", "gpt-4o-mini-2024")
    monkeypatch.setenv("OTHER", "unseen")
    path = project.jobs(
        HEAD
        + "defaults: {record_env: [AZURE_DEPLOYMENT, AZURE_MODEL_NAME]}\n"
        + "jobs:\n"
        + "  - {name: a, framework: plain, scripts: scripts/a.py, env_file: .env,\n"
        + "     env_passthrough: [AZURE_DEPLOYMENT, OTHER]}\n"
    )
    jobs_file, specs = load_and_expand(path)

    batch_dir = run_batch(jobs_file, specs, FakeBackend(), CollectingReporter()).batch_dir
    files = write_report(batch_dir)

    [run] = json.loads((batch_dir / "manifest.json").read_text())["runs"]
    assert run["env"] == {
        "AZURE_DEPLOYMENT": "gpt-4o-mini-2024",
        "AZURE_MODEL_NAME": "gpt-4o",
        "FILE_ONLY": REDACTED,
        "OTHER": REDACTED,
    }
    assert run["recorded"] == ["AZURE_DEPLOYMENT", "AZURE_MODEL_NAME"]
    [row] = list(csv.DictReader((batch_dir / "results.csv").open()))
    assert row["AZURE_DEPLOYMENT"] == "gpt-4o-mini-2024" and row["AZURE_MODEL_NAME"] == "gpt-4o"
    page = files.html.read_text()
    assert '"recorded":["AZURE_DEPLOYMENT","AZURE_MODEL_NAME"]' in page.replace(" ", "")
    assert "gpt-4o-mini-2024" in page and "unseen" not in page and "quiet" not in page
    # `rerun` runs the resolved copy: the names are kept, no value is written into it.
    resolved = resolved_yaml(jobs_file)
    assert "record_env" in resolved and "gpt-4o-mini-2024" not in resolved
