"""A job's `runtime`: any runtime name passes to the engine; gVisor's (`runsc`) constraints
are located errors (network none only, pids at least 512); the resolved snapshot keeps it."""

from __future__ import annotations

import pytest
from conftest import Project

from safeagents_batch.core.errors import JobsFileError
from safeagents_batch.jobs.load import load_jobs_file
from safeagents_batch.jobs.resolved import resolved_yaml
from safeagents_batch.jobs.runtimes import is_gvisor

HEADER = "version: 1\nframeworks:\n  plain: {packages: []}\n"


def jobs(project: Project, job: str) -> str:
    return str(project.jobs(f"{HEADER}jobs:\n  - {{name: a, framework: plain, {job}}}\n"))


def problems(project: Project, job: str) -> list[str]:
    with pytest.raises(JobsFileError) as raised:
        load_jobs_file(project.root / jobs(project, job))
    return [str(p) for p in raised.value.problems]


def test_a_runtime_reaches_the_job_and_survives_the_snapshot(project: Project) -> None:
    path = project.jobs(
        f"{HEADER}jobs:\n"
        "  - {name: a, framework: plain, scripts: scripts/a.py, runtime: runsc, network: none}\n"
        "  - {name: b, framework: plain, scripts: scripts/b.py, runtime: kata}\n"
        "  - {name: c, framework: plain, scripts: scripts/b.py}\n"
    )
    loaded = load_jobs_file(path)
    assert [j.runtime for j in loaded.jobs] == ["runsc", "kata", None]
    again = load_jobs_file(project.write("batch/jobs.yaml", resolved_yaml(loaded)))
    assert [j.runtime for j in again.jobs] == ["runsc", "kata", None]


@pytest.mark.parametrize(
    ("job", "expected"),
    [
        (
            "scripts: scripts/a.py, runtime: runsc",
            "jobs[0].runtime: runtime 'runsc' (gVisor) runs with no network: use network: none "
            "(network 'bridge' fails to start and leaves sandbox processes)",
        ),
        (
            "scripts: scripts/a.py, runtime: runsc-ptrace, network: none, resources: {pids: 256}",
            "jobs[0].resources.pids: runtime 'runsc-ptrace' (gVisor) counts its sandbox's "
            "threads as pids: 256 kills the sandbox; use at least 512",
        ),
        ("scripts: scripts/a.py, runtime: 'bad name'", "jobs[0].runtime: 'bad name'"),
    ],
)
def test_a_runtimes_constraint_is_a_located_error(
    project: Project, job: str, expected: str
) -> None:
    [problem] = problems(project, job)
    assert expected in problem, problem
    assert problem.startswith(str(project.root / "jobs.yaml") + ":5:")


def test_a_gvisor_job_cannot_have_models(project: Project) -> None:
    """Its sandbox has no network, and models need one: one of the two keys must go."""
    text = (
        "version: 1\nmodels:\n  m: {kind: openai, base_url: 'http://127.0.0.1:9/v1', "
        "api_key_env: OPENAI_API_KEY}\nframeworks:\n  plain: {packages: []}\njobs:\n"
        "  - {name: a, framework: plain, scripts: scripts/a.py, runtime: runsc, "
        "network: models, models: [m]}\n"
    )
    with pytest.raises(JobsFileError) as raised:
        load_jobs_file(project.jobs(text))
    assert "jobs[0].runtime: runtime 'runsc' (gVisor) runs with no network" in str(raised.value)


def test_gvisor_is_known_by_its_name() -> None:
    assert [is_gvisor(n) for n in ("runsc", "runsc-kvm", "my-gVisor", "runc", "kata", None)] == [
        True,
        True,
        True,
        False,
        False,
        False,
    ]


# -- limits the engine dropped -----------------------------------------------------------------


def test_a_limit_the_engine_did_not_apply_is_named_and_refused() -> None:
    from safeagents_batch.backends.docker.backend import dropped_limits, limits_refusal
    from safeagents_batch.jobs.model import Resources

    asked = Resources(memory=64 * 1024**2, cpus=1.0, pids=512)
    rootless_v1 = {"HostConfig": {"Memory": 0, "PidsLimit": 0, "NanoCpus": 1_000_000_000}}
    applied = {"HostConfig": {"Memory": 64 * 1024**2, "PidsLimit": 512, "NanoCpus": 10**9}}
    assert dropped_limits(rootless_v1, asked) == ("resources.memory", "resources.pids")
    assert dropped_limits(applied, asked) == ()
    assert dropped_limits(rootless_v1, Resources(memory=None, cpus=None, pids=None)) == ()
    assert limits_refusal("eval", ("resources.memory",)) == (
        "job 'eval': resources.memory: the engine dropped this limit (rootless Podman on "
        "cgroup v1 applies none): not run; `enforce_limits: false` runs without it"
    )


def test_enforce_limits_reaches_the_job(project: Project) -> None:
    path = project.jobs(
        f"{HEADER}jobs:\n"
        "  - {name: a, framework: plain, scripts: scripts/a.py, enforce_limits: false}\n"
        "  - {name: b, framework: plain, scripts: scripts/b.py}\n"
    )
    loaded = load_jobs_file(path)
    assert [j.enforce_limits for j in loaded.jobs] == [False, True]
    again = load_jobs_file(project.write("batch/jobs.yaml", resolved_yaml(loaded)))
    assert [j.enforce_limits for j in again.jobs] == [False, True]
