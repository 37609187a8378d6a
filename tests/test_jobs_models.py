"""`models:` in the jobs file: located errors like every other key, and no credential value
anywhere (only the name of the host variable that holds it)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Project

from safeagents_batch.core.errors import JobsFileError
from safeagents_batch.jobs.load import load_jobs_file
from safeagents_batch.jobs.model import ModelUpstream
from safeagents_batch.jobs.resolved import resolved_yaml

HEAD = """\
version: 1
frameworks: {plain: {packages: []}}
models:
  gpt: {kind: openai, base_url: "http://127.0.0.1:8000/v1/", api_key_env: GPT_KEY}
  aoai: {kind: azure-openai, endpoint: "https://r.openai.azure.com", api_version: "2024-10-21"}
"""


def problems(path: Path) -> list[str]:
    with pytest.raises(JobsFileError) as info:
        load_jobs_file(path, label="jobs.yaml")
    return [str(p) for p in info.value.problems]


def test_upstreams_and_a_jobs_names_load_as_records(project: Project) -> None:
    job = "{name: a, framework: plain, scripts: scripts/a.py, models: [aoai, gpt]}"
    path = project.jobs(HEAD + f"jobs:\n  - {job}\n")
    jobs_file = load_jobs_file(path)
    assert jobs_file.models["gpt"] == ModelUpstream(
        name="gpt", kind="openai", url="http://127.0.0.1:8000/v1", api_key_env="GPT_KEY"
    )
    assert jobs_file.models["aoai"].api_version == "2024-10-21"
    assert jobs_file.models["aoai"].api_key_env is None  # the host's Azure CLI login
    assert jobs_file.jobs[0].models == ("aoai", "gpt")


def test_each_fault_is_one_located_line(project: Project) -> None:
    path = project.jobs(
        """\
        version: 1
        frameworks: {plain: {packages: []}}
        models:
          a: {kind: openai}
          b: {kind: openai, base_url: "http://x/v1", endpoint: "http://y"}
          c: {kind: azure-openai, endpoint: "https://r"}
          d: {kind: anthropic, base_url: "http://x"}
          e: {kind: openai, base_url: "ftp://x"}
        jobs:
          - {name: j, framework: plain, scripts: scripts/a.py, models: [a, gtp], network: none}
        """
    )
    assert problems(path) == [
        "jobs.yaml:4:6: models.a: a model of kind openai needs `base_url`",
        "jobs.yaml:5:46: models.b.endpoint: `endpoint` is not a key of kind openai",
        "jobs.yaml:6:6: models.c: a model of kind azure-openai needs `api_version`",
        "jobs.yaml:7:13: models.d.kind: 'anthropic' is not one of ['openai', 'azure-openai']",
        "jobs.yaml:8:31: models.e.base_url: 'ftp://x' is not allowed here: kind openai: the "
        "API's base URL, as the openai SDK takes it (e.g. https://api.openai.com/v1).",
        "jobs.yaml:10:68: jobs[0].models[1]: unknown model 'gtp'; models: a, b, c, d, e",
        "jobs.yaml:10:83: jobs[0].network: a job with `models` needs a network to reach the "
        "model gateway by: use network: models (the gateway and nothing else)",
    ]


def test_the_resolved_copy_names_the_key_variable_never_a_value(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPT_KEY", "sk-a-real-key-value")
    path = project.jobs(
        HEAD + "jobs:\n  - {name: a, framework: plain, scripts: scripts/a.py, models: [gpt]}\n"
    )
    text = resolved_yaml(load_jobs_file(path))
    assert "api_key_env: GPT_KEY" in text and "sk-a-real-key-value" not in text
    assert "models:\n  - gpt" in text


def test_a_cost_limit_with_no_models_to_count_is_a_located_error(project: Project) -> None:
    path = project.jobs(
        """\
        version: 1
        cost_limit: 5
        frameworks: {plain: {packages: []}}
        jobs:
          - {name: a, framework: plain, scripts: scripts/a.py}
          - {name: b, framework: plain, scripts: scripts/a.py, cost_limit: 1}
        """
    )
    assert problems(path) == [
        "jobs.yaml:2:13: cost_limit: cost_limit counts model calls: no job lists `models`",
        "jobs.yaml:6:68: jobs[1].cost_limit: cost_limit counts model calls through the "
        "gateway: the job lists no `models`",
    ]


def test_a_batch_budget_counts_every_attempt_on_record_and_unknown_costs_apart() -> None:
    from safeagents_batch.execution.budget import Budget
    from safeagents_batch.records.model import ModelUsage

    budget = Budget(10.0)
    budget.add({"a": ModelUsage(cost_usd=4.0), "b": ModelUsage(cost_usd=0.5, unpriced=1)})
    assert not budget.exhausted and budget.unknown == 1
    budget.add({"a": ModelUsage(cost_usd=5.5)})
    budget.add(None)
    assert budget.exhausted
    assert budget.reason() == (
        "batch cost limit reached: $10.0000 spent of $10 (and 1 calls of unknown cost)"
    )
    assert not Budget(None).exhausted


def test_model_env_names_a_model_of_the_job(project: Project) -> None:
    job = "{name: a, framework: plain, scripts: scripts/a.py, models: [gpt],"
    path = project.jobs(HEAD + f"jobs:\n  - {job} model_env: {{AZURE_ENDPOINT: aoai}}}}\n")
    [problem] = problems(path)
    assert problem.endswith(
        "jobs[0].model_env.AZURE_ENDPOINT: model 'aoai' is not one the job lists under `models`"
    )
