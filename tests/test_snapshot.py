"""snapshot: the resolved jobs file a batch keeps loads back, elsewhere, to the same runs."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import pytest
from conftest import Project

from safeagents_batch.jobs.load import load_jobs_file
from safeagents_batch.jobs.model import Hardening, ImageConfig, Job, JobsFile, Resources
from safeagents_batch.jobs.plan import expand
from safeagents_batch.jobs.resolved import resolved_document, resolved_yaml
from safeagents_batch.jobs.secrets import REDACTED, redact_yaml_text

# Where the file is and what it was written as: a snapshot is another file with other text.
FILE_ONLY = {"path", "label", "text", "sha256", "warnings"}
LOCATED = {"location"}


@dataclass(frozen=True)
class Case:
    jobs: str
    files: tuple[str, ...] = ()  # besides scripts/a.py and scripts/b.py, relative to proj/
    name: str = "jobs.yaml"


CASES = {
    "matrix": Case("""
        version: 1
        jobs:
          - name: grid
            framework: langgraph
            scripts: [scripts/b.py, scripts/a.py]
            matrix:
              MODEL: [gpt-4o, "0.5", mini]
              TEMP: [0, 0.7, 1e3]
              STRICT: [true, false, "yes"]
    """),
    "repeat": Case("""
        version: 1
        jobs:
          - {name: many, framework: crewai, scripts: scripts/*.py, repeat: 3}
          - {name: once, framework: crewai, scripts: scripts/a.py, repeat: 1}
    """),
    "env": Case("""
        version: 1
        jobs:
          - name: env
            framework: langgraph
            scripts: scripts/a.py
            env:
              EMPTY: ""
              LOOKS_BOOL: "true"
              LOOKS_NULL: "~"
              LOOKS_INT: "007"
              QUOTES: "it's \\"quoted\\""
              LINES: "one\\ntwo\\n"
              COLON: "a: b # not a comment"
              UNICODE: "héllo ✓ 日本"
    """),
    "env sources": Case(
        """
        version: 1
        jobs:
          - name: sources
            framework: langgraph
            scripts: scripts/a.py
            env: {A: "1"}
            env_file: conf/vars.env
            env_passthrough: [HOME, USER]
        """,
        files=("conf/vars.env",),
    ),
    "defaults": Case("""
        version: 1
        defaults:
          framework: langgraph
          scripts: scripts/a.py
          timeout: 100
          env: {A: "1", B: "1"}
          env_passthrough: [HOME]
          retries: 2
        jobs:
          - name: inherit
          - name: override
            framework: crewai
            scripts: [scripts/b.py]
            timeout: 5
            env: {B: "2", C: "3"}
            env_passthrough: []
            retries: 0
    """),
    "resources": Case("""
        version: 1
        defaults:
          resources: {memory: 1.5g, cpus: 0.5, pids: null}
        jobs:
          - {name: inherit, framework: crewai, scripts: scripts/a.py}
          - name: own
            framework: crewai
            scripts: scripts/a.py
            resources: {memory: null, cpus: 3}
          - name: bytes
            framework: crewai
            scripts: scripts/a.py
            resources: {memory: 4194304, pids: 8}
    """),
    "hardening": Case("""
        version: 1
        jobs:
          - name: relaxed
            framework: crewai
            scripts: scripts/a.py
            hardening: {non_root: false, init: false}
            network: none
            read_only_rootfs: true
            bind_azure_folder: true
            azure_mount: rw
    """),
    "retries": Case("""
        version: 1
        jobs:
          - name: flaky
            framework: crewai
            scripts: scripts/a.py
            retries: 3
            retry_on: [failed, timed_out]
          - {name: never, framework: crewai, scripts: scripts/a.py, retry_on: []}
    """),
    "size limits": Case("""
        version: 1
        defaults:
          max_code_size: 512k
          max_artifacts_size: 1.5g
        jobs:
          - {name: inherit, framework: crewai, scripts: scripts/a.py}
          - name: own
            framework: crewai
            scripts: scripts/a.py
            max_code_size: 1024
            max_artifacts_size: 3G
    """),
    "frameworks": Case(
        """
        version: 1
        image_name: registry.local/agents
        frameworks:
          langgraph:
            additional_packages: [numpy]
            python_version: "3.12"
          myfw:
            packages: [mylib==1.0]
            base_image: python:3.12-bookworm
            requirements: req/requirements.txt
            source_dirs: [lib/one, ../shared]
          unused:
            packages: []
        jobs:
          - {name: lg, framework: langgraph, scripts: scripts/a.py}
          - {name: mine, framework: myfw, scripts: scripts/b.py}
          - {name: crew, framework: crewai, scripts: scripts/a.py}
        """,
        files=("req/requirements.txt", "lib/one/m.py", "../shared/m.py"),
    ),
    "relative paths": Case(
        """
        version: 1
        name: paths
        output_dir: ../out
        workers: 7
        frameworks:
          langgraph:
            source_dirs: [scripts/.., ./lib/]
        jobs:
          - name: rel
            framework: langgraph
            scripts: [scripts/*.py, ./scripts/a.py, ../outside.py, deep/x/../y.py]
            env_file: ./vars.env
        """,
        files=("../outside.py", "deep/y.py", "deep/x/keep", "vars.env", "lib/m.py"),
    ),
    "name from the stem": Case(
        """
        version: 1
        secret_patterns: ["*model*"]
        jobs: [{name: a, framework: crewai, scripts: scripts/a.py}]
        """,
        name="_nightly run.yaml",
    ),
}


def write_case(project: Project, case: Case) -> Path:
    for relative in case.files:
        project.write(relative, "x=1\n")
    return project.jobs(case.jobs, name=case.name)


def reloaded(jobs_file: JobsFile, directory: Path, transform: Any = None) -> JobsFile:
    """Write the snapshot into `directory` (as a batch dir keeps it) and load that."""
    text = resolved_yaml(jobs_file)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "jobs.yaml").write_text(transform(text) if transform else text, "utf-8")
    return load_jobs_file(directory / "jobs.yaml")


def assert_same(a: Any, b: Any, skip: set[str], where: str) -> None:
    """Field by field, so that a difference names its field; nested records likewise."""
    assert type(a) is type(b), where
    for field in fields(a):
        if field.name in skip:
            continue
        mine, theirs = getattr(a, field.name), getattr(b, field.name)
        if isinstance(mine, Job):
            assert_same(mine, theirs, LOCATED, f"{where}.{field.name}")
        else:
            assert mine == theirs, f"{where}.{field.name}: {mine!r} != {theirs!r}"


def assert_same_file(a: JobsFile, b: JobsFile) -> None:
    assert_same(a, b, FILE_ONLY | {"jobs"}, "file")
    assert len(a.jobs) == len(b.jobs)
    for i, (job, again) in enumerate(zip(a.jobs, b.jobs, strict=True)):
        assert_same(job, again, LOCATED, f"jobs[{i}]")
    specs, again_specs = expand(a), expand(b)
    assert [s.run_id for s in specs] == [s.run_id for s in again_specs]
    for spec, again_spec in zip(specs, again_specs, strict=True):
        assert_same(spec, again_spec, set(), spec.run_id)


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
def test_snapshot_loads_back_to_the_same_runs(project: Project, tmp_path: Path, case: Case) -> None:
    original = load_jobs_file(write_case(project, case))
    again = reloaded(original, tmp_path / "batch")
    assert_same_file(original, again)
    assert all(s.is_absolute() for job in again.jobs for s in job.scripts)


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
def test_snapshot_of_the_snapshot_is_the_same(project: Project, tmp_path: Path, case: Case) -> None:
    original = load_jobs_file(write_case(project, case))
    again = reloaded(original, tmp_path / "batch")
    assert resolved_document(again) == resolved_document(original)


EVERY_KEY = """
    version: 1
    name: every-key
    output_dir: out
    workers: 9
    max_runs: 5000
    image_name: mine/runtime
    secret_patterns: ["*PASS*"]
    pools: {api: {runs: 3, requests_per_minute: 60, tokens_per_minute: 9000}}
    models:
      gpt:
        kind: openai
        base_url: "http://127.0.0.1:8000/v1"
        api_key_env: GPT_KEY
        prices: {input: 2.5, output: 10, cached_input: 1.25}
      aoai: {kind: azure-openai, endpoint: "https://r.openai.azure.com", api_version: "2024-10-21"}
    frameworks:
      myfw:
        packages: [lib==2]
        python_version: "3.10"
        base_image: debian-python:3.10
        additional_packages: [extra]
        requirements: req.txt
        source_dirs: [src/pkg]
        system_packages: [jq]
        setup: ["echo hi"]
    jobs:
      - name: all
        framework: myfw
        scripts: scripts/a.py
        env: {A: "1"}
        env_passthrough: [HOME]
        env_file: vars.env
        record_env: [A, HOME]
        timeout: 12
        bind_azure_folder: true
        azure_mount: rw
        matrix: {M: [x, y]}
        repeat: 2
        retries: 1
        retry_on: [failed]
        resources: {memory: 8m, cpus: 0.25, pids: 16}
        network: models
        runtime: kata
        enforce_limits: false
        slurm: {partition: gpu, account: lab, sbatch_args: [--qos=short]}
        read_only_rootfs: true
        hardening:
          non_root: false
          no_new_privileges: false
          drop_capabilities: false
          init: false
        max_code_size: 2k
        max_artifacts_size: 3m
        max_artifacts_files: 77
        max_parallel: 2
        pool: api
        models: [aoai, gpt]
        cost_limit: 0.5
        model_env: {AZURE_ENDPOINT: aoai}
"""


def test_every_key_set_away_from_its_default_survives(project: Project, tmp_path: Path) -> None:
    for relative in ("req.txt", "src/pkg/m.py", "vars.env"):
        project.write(relative, "x=1\n")
    original = load_jobs_file(project.jobs(EVERY_KEY))
    (job,) = original.jobs
    plain = Job(name="x", framework="x", scripts=(), location=job.location)
    changed = {f.name for f in fields(Job) if getattr(job, f.name) != getattr(plain, f.name)}
    # Every field the jobs file sets differs from its default, so a key the snapshot drops
    # (and the reload gives its default back) fails the comparison.
    assert changed == {f.name for f in fields(Job)} - {"location", "index"}
    assert job.resources != Resources() and job.hardening != Hardening()
    assert original.frameworks["myfw"] != ImageConfig(framework="myfw", packages=())
    assert_same_file(original, reloaded(original, tmp_path / "batch"))


SECRETS = """
    version: 1
    defaults:
      env: {DB_PASSWORD: hunter2, PLAIN: kept}
    jobs:
      - name: a
        framework: langgraph
        scripts: scripts/a.py
        env:
          OPENAI_API_KEY: sk-123
          EMPTY_TOKEN: ""
          MODEL: gpt-4o
        env_passthrough: [OTHER_TOKEN]
        matrix: {TEMP: ["0", "1"]}
"""


def test_a_batch_dirs_snapshot_loses_literal_secrets_and_nothing_else(
    project: Project, tmp_path: Path
) -> None:
    """As batch.write_jobs_copies writes it: the resolved text, secret values redacted."""
    original = load_jobs_file(project.jobs(SECRETS))
    patterns = original.secret_patterns
    text = resolved_yaml(original)
    redacted = redact_yaml_text(text, patterns)
    assert "sk-123" in text and "hunter2" in text
    assert "sk-123" not in redacted and "hunter2" not in redacted
    again = reloaded(original, tmp_path / "batch", lambda t: redact_yaml_text(t, patterns))
    (job,) = original.jobs
    env = {**job.env, "OPENAI_API_KEY": REDACTED, "DB_PASSWORD": REDACTED}
    assert env["EMPTY_TOKEN"] == "" and env["PLAIN"] == "kept"  # empty: nothing to hide
    expected = replace(original, jobs=(replace(job, env=env),))
    assert_same_file(expected, again)
    # `rerun` refuses such a snapshot (the value is not the secret): it can tell them apart.
    assert {n for s in expand(again) for n, v in s.literal_env.items() if v == REDACTED} == {
        "OPENAI_API_KEY",
        "DB_PASSWORD",
    }


def test_the_snapshot_says_where_it_comes_from(project: Project) -> None:
    original = load_jobs_file(project.jobs(CASES["repeat"].jobs))
    header = resolved_yaml(original).splitlines()[:2]
    assert header[0] == (
        f"# Resolved by safeagents-batch from {original.path} (sha256 {original.sha256})."
    )
    assert header[1].startswith("# ")
