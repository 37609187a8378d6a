"""Pure expansion: jobs -> run specs (scripts x matrix combinations x repeat, in file order).

The number of runs is known from the file before any is made, and a file over its
`max_runs` is one located error: a matrix written with YAML anchors can ask for billions.
Run ids are checked for duplicates as a stream, so `validate` makes no run at all."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from safeagents_batch.core.errors import JobsFileError, Problem
from safeagents_batch.core.names import safe_name
from safeagents_batch.jobs.model import ImageConfig, Job, JobsFile

MAX_RUN_ID_LENGTH = 100
MAX_PROBLEMS = 100  # duplicate ids reported: the rest are like them


@dataclass(frozen=True, slots=True)
class RunSpec:
    """One container run: a script of a job with one matrix combination and repeat index.
    Small on purpose (slots, the values alone): a batch may hold a million of them."""

    run_id: str
    job: Job
    script: Path
    matrix_values: tuple[str, ...]  # in the order of the job's matrix variables
    repeat_index: int
    image: ImageConfig

    @property
    def matrix_env(self) -> tuple[tuple[str, str], ...]:
        """(variable, value) of this run's combination, in the jobs file's order."""
        names = (name for name, _ in self.job.matrix)
        return tuple(zip(names, self.matrix_values, strict=True))

    @property
    def literal_env(self) -> dict[str, str]:
        """Env written in the jobs file (job env, then this run's matrix values)."""
        return {**self.job.env, **dict(self.matrix_env)}

    @property
    def env_names(self) -> tuple[str, ...]:
        """Every env name the run gets from the jobs file; env_file names are known only later."""
        return tuple(sorted({*self.literal_env, *self.job.env_passthrough}))


def expand(jobs_file: JobsFile) -> list[RunSpec]:
    """Every run of the file in file order; too many runs, or one id twice, is a located
    error raised before any run is made."""
    check_runs(jobs_file)
    return list(iter_runs(jobs_file))


def check_runs(jobs_file: JobsFile) -> int:
    """The number of runs, checked against `max_runs` (before any is made) and for duplicate
    ids (as a stream of ids: no run is kept)."""
    total = count_runs(jobs_file)
    _check_unique(jobs_file)
    return total


def count_runs(jobs_file: JobsFile) -> int:
    """scripts x matrix combinations x repeat, summed over the jobs; over `max_runs` (in one
    job or in all) a located error."""
    problems: list[Problem] = []
    total = 0
    for job in jobs_file.jobs:
        runs = job_runs(job)
        total += runs
        if runs > jobs_file.max_runs:
            problems.append(
                Problem(job.location, f"jobs[{job.index}]", _too_many(job, runs, jobs_file))
            )
    if not problems and total > jobs_file.max_runs:
        first = jobs_file.jobs[0]
        problems.append(
            Problem(
                first.location,
                "jobs",
                f"{total:,} runs in all, over max_runs ({jobs_file.max_runs:,})",
            )
        )
    if problems:
        raise JobsFileError(problems)
    return total


def job_runs(job: Job) -> int:
    return len(job.scripts) * math.prod(len(values) for _, values in job.matrix) * job.repeat


def _too_many(job: Job, runs: int, jobs_file: JobsFile) -> str:
    parts = [f"{len(job.scripts)} scripts", *(f"{len(v)} {n}" for n, v in job.matrix)]
    shape = " x ".join([*parts, f"repeat {job.repeat}"])
    limit = jobs_file.max_runs
    return f"{runs:,} runs ({shape}), over max_runs ({limit:,}): raise it, or ask for fewer"


def iter_runs(jobs_file: JobsFile) -> Iterator[RunSpec]:
    for job in jobs_file.jobs:
        yield from _job_runs(job, jobs_file)


def job_image(job: Job, jobs_file: JobsFile) -> ImageConfig:
    """The image a job's runs get: its framework's, with the Azure CLI when the job binds
    ~/.azure and the framework leaves that to its jobs."""
    config = jobs_file.frameworks[job.framework]
    if job.bind_azure_folder and job.framework in jobs_file.azure_by_jobs:
        return dataclasses.replace(config, azure_cli=True)
    return config


def _job_runs(job: Job, jobs_file: JobsFile) -> Iterator[RunSpec]:
    image = job_image(job, jobs_file)
    for script in job.scripts:
        for combination in itertools.product(*(values for _, values in job.matrix)):
            for k in range(1, job.repeat + 1):
                yield RunSpec(
                    run_id=run_id(
                        job.name, script.stem, combination, k if job.repeat > 1 else None
                    ),
                    job=job,
                    script=script,
                    matrix_values=combination,
                    repeat_index=k,
                    image=image,
                )


def run_id(job: str, script_stem: str, matrix_values: tuple[str, ...], repeat: int | None) -> str:
    """`<job>-<script stem>[-<matrix values>][-r<k>]`, made safe as a directory name.

    Depends only on names and values from the jobs file, so the same file gives the same ids on
    every machine. Over-long ids keep a readable prefix plus a digest of the full id.
    """
    parts = [job, script_stem, *matrix_values, *([f"r{repeat}"] if repeat is not None else [])]
    return _bounded("-".join(_safe_part(p) for p in parts))


def _bounded(full: str) -> str:
    """An id over MAX_RUN_ID_LENGTH keeps a readable prefix plus a digest of the whole."""
    if len(full) <= MAX_RUN_ID_LENGTH:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:10]
    return f"{full[: MAX_RUN_ID_LENGTH - 11]}-{digest}"


@functools.lru_cache(maxsize=65_536)
def _safe_part(text: str) -> str:
    """safe_name of one part of an id: the same few names and values come back in every run
    of a job, a million times in a big matrix."""
    return safe_name(text)


def _check_unique(jobs_file: JobsFile) -> None:
    """Each run id once: the ids streamed, only they kept (with the script each came from).
    No run is made twice, so an id seen before is two runs with one id."""
    first: dict[str, Path] = {}
    problems: list[Problem] = []
    for job in jobs_file.jobs:
        for script, run in _job_ids(job):
            other = first.get(run)
            if other is None:
                first[run] = script
            elif len(problems) < MAX_PROBLEMS:
                problems.append(
                    Problem(
                        job.location,
                        f"jobs[{job.index}]",
                        f"run id '{run}' is produced twice ({other} and {script}); rename a "
                        "script or a matrix value",
                    )
                )
    if problems:
        raise JobsFileError(problems)


def _job_ids(job: Job) -> Iterator[tuple[Path, str]]:
    """(script, run id) of every run of `job`, as _job_runs makes them, without the runs:
    each part made safe once, not once per run."""
    values = [[safe_name(v) for v in vs] for _, vs in job.matrix]
    repeats = [f"-r{k}" for k in range(1, job.repeat + 1)] if job.repeat > 1 else [""]
    for script in job.scripts:
        head = f"{safe_name(job.name)}-{safe_name(script.stem)}"
        for combination in itertools.product(*values):
            middle = "".join(f"-{v}" for v in combination)
            for tail in repeats:
                yield script, _bounded(f"{head}{middle}{tail}")


def used_images(jobs_file: JobsFile) -> list[ImageConfig]:
    """Distinct image configurations of the jobs that have runs, in file order (no run made)."""
    return list(dict.fromkeys(job_image(j, jobs_file) for j in jobs_file.jobs if job_runs(j)))


def needed_images(specs: list[RunSpec]) -> list[ImageConfig]:
    """Distinct image configurations the runs need, in first-use order."""
    return list(dict.fromkeys(spec.image for spec in specs))
