"""A job's `slurm:` settings: where its attempts go on a Slurm cluster (`--backend slurm`).
The partition, the account and extra `sbatch` arguments; the time, memory and CPUs come from
the job's `timeout` and `resources`. Arguments the backend sets itself are refused: they would
break the job's link to the batch (its output, its name, its environment)."""

from __future__ import annotations

from typing import Any, Protocol

from safeagents_batch.jobs.check import Checker
from safeagents_batch.jobs.model import SlurmSettings
from safeagents_batch.jobs.yamlmarks import KeyPath

# sbatch's options that the backend sets for every attempt, long and short forms.
BACKEND_SET = {
    "--parsable": "--parsable",
    "--output": "--output",
    "-o": "--output",
    "--error": "--error",
    "-e": "--error",
    "--export": "--export",
    "--job-name": "--job-name",
    "-J": "--job-name",
    "--comment": "--comment",
    "--array": "--array",
    "-a": "--array",
    "--wrap": "--wrap",
    "--open-mode": "--open-mode",
    "--requeue": "--requeue",
    "--no-requeue": "--no-requeue",
}


def sbatch_arg_problem(arg: str) -> str | None:
    """Why `arg` may not be given, or None. sbatch takes a long option by any prefix that
    names it alone (`--out` is `--output`): a prefix of one the backend sets is refused too."""
    name = arg.split("=", 1)[0]
    shown = _backend_set(name)
    if shown is not None:
        return f"sbatch argument {arg!r}: the Slurm backend sets {shown} itself"
    if not arg.startswith("-"):
        return f"sbatch argument {arg!r}: write it as one option, e.g. --qos=short"
    return None


def _backend_set(name: str) -> str | None:
    if name in BACKEND_SET:
        return BACKEND_SET[name]
    if name.startswith("--") and len(name) > 2:
        return next((o for o in BACKEND_SET if o.startswith(name) and o.startswith("--")), None)
    if len(name) > 2 and name[:2] in BACKEND_SET:  # a short option with its value: -ofile
        return BACKEND_SET[name[:2]]
    return None


NO_SLURM = SlurmSettings()


class Checked(Protocol):
    """A job as its keys' rules see it (keys.JobScope): where problems go."""

    @property
    def checker(self) -> Checker: ...


def slurm_settings(job: Checked, path: KeyPath, raw: dict[str, Any]) -> SlurmSettings:
    args = tuple(raw.get("sbatch_args", ()))
    for index, arg in enumerate(args):
        problem = sbatch_arg_problem(arg)
        if problem is not None:
            job.checker.add((*path, "sbatch_args", index), problem)
    return SlurmSettings(
        partition=raw.get("partition"), account=raw.get("account"), sbatch_args=args
    )
