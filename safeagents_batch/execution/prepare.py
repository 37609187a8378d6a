"""The one preparation path of `run` and `rerun`: the runs selected, their inputs read once
(env files, image specs, script digests), their env resolved, their code staged, their limits
and their records made. Pure apart from reading the jobs file's inputs and staging code."""

from __future__ import annotations

import fnmatch
import functools
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from safeagents_batch.core.errors import (
    UsageError,
)
from safeagents_batch.execution.executor import (
    Limits,
)
from safeagents_batch.jobs.envfile import read_dotenv
from safeagents_batch.jobs.model import ImageConfig, JobsFile, ModelUpstream, PoolRate
from safeagents_batch.jobs.plan import RunSpec, needed_images
from safeagents_batch.jobs.resolved import resolved_yaml
from safeagents_batch.jobs.secrets import is_secret_name, redact_env, redact_yaml_text
from safeagents_batch.records import layout
from safeagents_batch.records.layout import BatchLayout
from safeagents_batch.records.model import (
    ImageRecord,
    RunRecord,
)
from safeagents_batch.records.provenance import GitState, git_state
from safeagents_batch.records.safedir import SafeDir
from safeagents_batch.records.trust import seal
from safeagents_batch.staging.code import StagedCode, stage_code
from safeagents_batch.staging.images import ImageSpec, file_sha256, image_spec


def select_runs(specs: list[RunSpec], only: str | None) -> list[RunSpec]:
    """`--only PATTERN`: glob on run id or job name."""
    if only is None:
        return specs
    chosen = [
        s
        for s in specs
        if fnmatch.fnmatchcase(s.run_id, only) or fnmatch.fnmatchcase(s.job.name, only)
    ]
    if not chosen:
        raise UsageError(f"--only {only!r} matches no run id or job name")
    return chosen


@dataclass(frozen=True)
class RunInputs:
    """What every run's record needs, read once: a job's runs share one env file and one
    image, and image_spec hashes the requirements file and source dirs."""

    env_files: dict[Path, dict[str, str]] = field(repr=False)
    images: dict[ImageConfig, ImageSpec]
    script_digests: dict[Path, str]  # a script's sha256, read once however many runs it has


def read_inputs(specs: list[RunSpec]) -> RunInputs:
    paths = dict.fromkeys(s.job.env_file for s in specs if s.job.env_file is not None)
    env_files = {path: read_dotenv(path) for path in paths}  # bad env files fail here
    images = {c: image_spec(c) for c in needed_images(specs)}
    scripts = {path: file_sha256(path) for path in dict.fromkeys(s.script for s in specs)}
    return RunInputs(env_files, images, scripts)


def new_record(
    spec: RunSpec, jobs_file: JobsFile, inputs: RunInputs, environ: Mapping[str, str]
) -> RunRecord:
    """A pending record. Values from env_file and the host are only ever named, as redacted,
    except those the job's `record_env` names (never a secret-looking one: jobs/recorded.py)."""
    # An env_file value that a literal overrides is not in the container: the literal is shown.
    from_file = set(inputs.env_files[spec.job.env_file]) if spec.job.env_file else set()
    hidden = (from_file - set(spec.literal_env)) | set(spec.job.env_passthrough)
    env = redact_env(spec.literal_env, hidden - set(spec.job.record_env), jobs_file.secret_patterns)
    # Resolved only for a job that records: new_record runs for every run of a batch.
    given = resolve_env(spec, inputs.env_files, environ) if spec.job.record_env else {}
    env.update({name: given[name] for name in spec.job.record_env if name in given})
    return RunRecord(
        run_id=spec.run_id,
        job=spec.job.name,
        framework=spec.job.framework,
        script=str(spec.script),
        script_sha256=inputs.script_digests[spec.script],
        image=inputs.images[spec.image].tag,
        env=dict(sorted(env.items())),
        timeout=spec.job.timeout,
        matrix=dict(spec.matrix_env),
        recorded=tuple(name for name in spec.job.record_env if name in given),
    )


def resolve_env(
    spec: RunSpec, env_files: Mapping[Path, dict[str, str]], environ: Mapping[str, str]
) -> dict[str, str]:
    """The env the container gets: env_file, then the file's env, matrix, host passthrough."""
    env = dict(env_files[spec.job.env_file]) if spec.job.env_file else {}
    env.update(spec.literal_env)
    env.update({name: environ[name] for name in spec.job.env_passthrough})
    return env


def check_passthrough(specs: list[RunSpec], environ: Mapping[str, str]) -> None:
    missing = sorted({n for s in specs for n in s.job.env_passthrough if n not in environ})
    if missing:
        raise UsageError(
            "env_passthrough names variables not set in this environment: " + ", ".join(missing)
        )


def script_dir(spec: RunSpec) -> Path:
    """The directory that ships with a run: the script's real one (a link's target dir, as
    Python itself puts the real dir first on sys.path)."""
    return real_path(spec.script).parent


@functools.cache
def real_path(path: Path) -> Path:
    """A script's resolved path, worked out once per script however many runs it has (a
    resolve is a syscall per path component: for 10,000 runs, seconds before the first start)."""
    return path.resolve()


def not_code(batch_dir: Path, jobs_file: JobsFile) -> list[Path]:
    """What may sit among the scripts but never ships: the batch output dirs, and every job's
    env file (not only the selected runs': one job's sits beside another's code)."""
    env_files = [job.env_file for job in jobs_file.jobs if job.env_file is not None]
    return [batch_dir.parent, jobs_file.output_dir, *dict.fromkeys(env_files)]


def stage_runs_code(
    specs: list[RunSpec], batch_dir: Path, jobs_file: JobsFile, *also_hidden: Path
) -> dict[Path, StagedCode]:
    """Each distinct script directory snapshotted once into BATCH_DIR/code/<digest>/. Left out:
    the batch output dir (which often sits beside the scripts) and the tool's own inputs, the
    jobs file and its env files: they hold secret values that reach a container only as its
    environment, and a batch dir keeps none."""
    dirs: dict[Path, list[RunSpec]] = {}
    for spec in specs:
        dirs.setdefault(script_dir(spec), []).append(spec)
    exclude = [*not_code(batch_dir, jobs_file), jobs_file.path, *also_hidden]
    return {
        directory: stage_code(
            directory,
            BatchLayout(batch_dir).code,
            exclude=[path.resolve() for path in exclude],
            keep=list(dict.fromkeys(real_path(s.script) for s in group)),
            limit=min(s.job.max_code_size for s in group),
        )
        for directory, group in dirs.items()
    }


@dataclass(frozen=True)
class Work:
    """The selected runs with everything they need to start, prepared before anything runs."""

    specs: list[RunSpec]
    envs: dict[str, dict[str, str]] = field(repr=False)
    images: Mapping[ImageConfig, ImageSpec]
    code: dict[Path, StagedCode]
    limits: Limits = field(default_factory=Limits)
    models: Mapping[str, ModelUpstream] = field(default_factory=dict)  # `models:` by name
    rates: Mapping[str, PoolRate] = field(default_factory=dict)  # pools' model call paces
    cost_limit: float | None = None  # USD the batch's model calls may cost in all
    git: GitState | None = None  # the jobs file's and the code dirs' state as staged


def run_limits(specs: list[RunSpec], pools: Mapping[str, int]) -> Limits:
    """Each run's limit keys: its job's `max_parallel`, its `pool`; with their capacities. A
    pool of model call rates only (no `runs`) limits no runs: it has no key here."""
    capacity = {f"pool:{name}": size for name, size in pools.items()}
    keys: dict[str, tuple[str, ...]] = {}
    for spec in specs:
        job = spec.job
        own: tuple[str, ...] = ()
        if job.max_parallel is not None:
            capacity[f"job:{job.name}"] = job.max_parallel
            own = (f"job:{job.name}",)
        pool = f"pool:{job.pool}"
        keys[spec.run_id] = own + ((pool,) if pool in capacity else ())
    return Limits(capacity, lambda run_id: keys[run_id])


def prepare_work(
    selected: list[RunSpec],
    inputs: RunInputs,
    batch_dir: Path,
    jobs_file: JobsFile,
    *also_hidden: Path,
) -> Work:
    """The one preparation path of `run` and `rerun`: env checked and resolved, code staged."""
    check_passthrough(selected, os.environ)
    envs = {s.run_id: resolve_env(s, inputs.env_files, os.environ) for s in selected}
    code = stage_runs_code(selected, batch_dir, jobs_file, *also_hidden)
    limits = run_limits(selected, jobs_file.pools)
    return Work(
        selected,
        envs,
        inputs.images,
        code,
        limits,
        jobs_file.models,
        jobs_file.pool_rates,
        jobs_file.cost_limit,
        # After staging: the state of what the snapshots hold.
        git_state(jobs_file.path, list(code), ignore=not_code(batch_dir, jobs_file)),
    )


def pending_images(work: Work) -> dict[str, ImageRecord]:
    """The images the work needs, as `pending` records until they are ensured."""
    needed = dict.fromkeys(s.image for s in work.specs)
    return {
        work.images[c].tag: ImageRecord(
            tag=work.images[c].tag, framework=c.framework, status="pending"
        )
        for c in needed
    }


def new_batch_id(name: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{name}-{stamp}-{secrets.token_hex(2)}"


def write_jobs_copies(batch_dir: Path, jobs_file: JobsFile) -> str:
    """The resolved snapshot `rerun` reads, and the file as written, into the batch dir (never
    through a name planted there); returns this user's seal of the snapshot."""
    # Both copies lose literal secret values: a batch dir is shared further than a jobs file.
    patterns = jobs_file.secret_patterns
    # Finding them parses the YAML again (a tenth of a second for a big matrix, before the
    # first container): only worth it when some env name looks secret. Every `env` name of
    # the file, `defaults:` included, is in some job's merged env.
    secret = any(is_secret_name(n, patterns) for job in jobs_file.jobs for n in job.env)

    def kept(text: str) -> str:
        return redact_yaml_text(text, patterns) if secret else text

    snapshot = kept(resolved_yaml(jobs_file)).encode("utf-8")
    with SafeDir(batch_dir) as safe:
        safe.write(layout.JOBS_SNAPSHOT, snapshot)
        safe.write(layout.JOBS_SOURCE, kept(jobs_file.text).encode("utf-8"))
    return seal(snapshot)
