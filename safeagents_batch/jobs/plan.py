"""Pure expansion: jobs -> run specs (scripts x matrix combinations x repeat, in file order)."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from safeagents_batch.core.errors import JobsFileError, Problem
from safeagents_batch.core.names import safe_name
from safeagents_batch.jobs.model import ImageConfig, Job, JobsFile

MAX_RUN_ID_LENGTH = 100


@dataclass(frozen=True)
class RunSpec:
    """One container run: a script of a job with one matrix combination and repeat index."""

    run_id: str
    job: Job
    script: Path
    matrix_env: tuple[tuple[str, str], ...]
    repeat_index: int
    image: ImageConfig

    @property
    def literal_env(self) -> dict[str, str]:
        """Env written in the jobs file (job env, then this run's matrix values)."""
        return {**self.job.env, **dict(self.matrix_env)}

    @property
    def env_names(self) -> tuple[str, ...]:
        """Every env name the run gets from the jobs file; env_file names are known only later."""
        return tuple(sorted({*self.literal_env, *self.job.env_passthrough}))


def expand(jobs_file: JobsFile) -> list[RunSpec]:
    """Every run of the file in file order; duplicate run ids are located errors."""
    specs = [spec for job in jobs_file.jobs for spec in _job_runs(job, jobs_file)]
    _check_unique(specs)
    return specs


def _job_runs(job: Job, jobs_file: JobsFile) -> Iterator[RunSpec]:
    names = [name for name, _ in job.matrix]
    combinations = list(itertools.product(*(values for _, values in job.matrix)))
    for script in job.scripts:
        for combination in combinations:
            for k in range(1, job.repeat + 1):
                yield RunSpec(
                    run_id=run_id(
                        job.name, script.stem, combination, k if job.repeat > 1 else None
                    ),
                    job=job,
                    script=script,
                    matrix_env=tuple(zip(names, combination, strict=True)),
                    repeat_index=k,
                    image=jobs_file.frameworks[job.framework],
                )


def run_id(job: str, script_stem: str, matrix_values: tuple[str, ...], repeat: int | None) -> str:
    """`<job>-<script stem>[-<matrix values>][-r<k>]`, made safe as a directory name.

    Depends only on names and values from the jobs file, so the same file gives the same ids on
    every machine. Over-long ids keep a readable prefix plus a digest of the full id.
    """
    parts = [job, script_stem, *matrix_values, *([f"r{repeat}"] if repeat is not None else [])]
    full = "-".join(safe_name(p) for p in parts)
    if len(full) <= MAX_RUN_ID_LENGTH:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:10]
    return f"{full[: MAX_RUN_ID_LENGTH - 11]}-{digest}"


def _check_unique(specs: list[RunSpec]) -> None:
    first: dict[str, RunSpec] = {}
    problems: list[Problem] = []
    for spec in specs:
        other = first.setdefault(spec.run_id, spec)
        if other is not spec:
            problems.append(
                Problem(
                    spec.job.location,
                    f"jobs[{spec.job.index}]",
                    f"run id '{spec.run_id}' is produced twice ({other.script} and "
                    f"{spec.script}); rename a script or a matrix value",
                )
            )
    if problems:
        raise JobsFileError(problems)


def needed_images(specs: list[RunSpec]) -> list[ImageConfig]:
    """Distinct image configurations the runs need, in first-use order."""
    return list(dict.fromkeys(spec.image for spec in specs))
