"""`run FILE`: build what is missing and run every run of a jobs file."""

from __future__ import annotations

import argparse
from pathlib import Path

from safeagents_batch.cli.detach import check_batch_id, check_detach, driver_argv
from safeagents_batch.cli.options import (
    SubParsers,
    add_execution_flags,
    chosen_backend,
    finish_batch,
    positive_int,
    reporter,
)
from safeagents_batch.core.errors import UsageError
from safeagents_batch.execution.batch import BatchOptions, run_batch
from safeagents_batch.execution.prepare import new_batch_id
from safeagents_batch.jobs.load import load_and_expand
from safeagents_batch.records.provenance import git_check


def add_parser(sub: SubParsers) -> None:
    p = sub.add_parser(
        "run",
        help="build missing images and run every run of a jobs file",
        description="Build what is missing, run every run in its own container, "
        "and write OUTPUT/<batch id>/ with logs and manifest.json.",
    )
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument(
        "-j",
        "--workers",
        type=positive_int,
        metavar="N",
        help="runs at once (default: the file's `workers`, else 4)",
    )
    p.add_argument(
        "-o",
        "--output-dir",
        type=Path,
        metavar="DIR",
        help="where the batch directory goes (default: the file's `output_dir`)",
    )
    p.add_argument("--only", metavar="PATTERN", help="only runs whose id or job matches the glob")
    p.add_argument("--no-cache", action="store_true", help="rebuild images even if tagged")
    p.add_argument(
        "--require-clean",
        action="store_true",
        help="refuse to start if the jobs file or its scripts have uncommitted git changes",
    )
    p.add_argument(
        "--detach",
        action="store_true",
        help="with --backend slurm: submit the batch's driver as a Slurm job and return; "
        "follow the batch with `status BATCH_DIR` (see docs/slurm.md)",
    )
    p.add_argument(
        "--driver-arg",
        action="append",
        dest="driver_args",
        metavar="ARG",
        help="with --detach: one more sbatch argument for the driver's job alone (e.g. "
        "--driver-arg=--nodelist=login2); repeatable",
    )
    # Given by `run --detach` to the driver's job: the batch dir it announced.
    p.add_argument("--batch-id", type=check_batch_id, help=argparse.SUPPRESS)
    add_execution_flags(p)
    p.set_defaults(command=command)


def command(args: argparse.Namespace) -> int:
    if args.detach or args.driver_args:
        check_detach(args)
    jobs_file, specs = load_and_expand(args.file)
    if args.require_clean:
        require_clean(jobs_file.path, list(dict.fromkeys(s.script for s in specs)))
    options = BatchOptions(
        workers=args.workers,
        output_dir=args.output_dir,
        only=args.only,
        rebuild=args.no_cache,
        engine_wait=args.engine_wait,
        batch_id=args.batch_id,
    )
    share = (args.output_dir or jobs_file.output_dir).absolute()
    if args.detach:
        return submit_driver(args, new_batch_id(jobs_file.name), share)
    with chosen_backend(args, share) as backend:
        return finish_batch(run_batch(jobs_file, specs, backend, reporter(args), options))


def submit_driver(args: argparse.Namespace, batch_id: str, output_dir: Path) -> int:
    """`run --detach`: the driver's job submitted; what to watch printed."""
    from safeagents_batch.backends.slurm.backend import SlurmBackend

    with chosen_backend(args, output_dir) as backend:
        assert isinstance(backend, SlurmBackend)
        argv = driver_argv(args, batch_id, output_dir)
        job_id, log = backend.submit_driver(argv, batch_id, tuple(args.driver_args or ()))
    batch_dir = output_dir / batch_id
    print(f"submitted the batch's driver as slurm job {job_id} (its log: {log})")
    print(f"batch {batch_dir}: made when the job starts")
    print(f"follow it with: safeagents-batch status {batch_dir}")
    return 0


def require_clean(jobs_file: Path, scripts: list[Path]) -> None:
    """`run --require-clean`: refuse unless the jobs file and its scripts are committed."""
    check = git_check(jobs_file, scripts)
    if check is None:
        raise UsageError(f"--require-clean: {jobs_file} is not in a git work tree")
    if check.state.dirty:
        shown = ", ".join(check.changed[:5]) + (" ..." if len(check.changed) > 5 else "")
        raise UsageError(
            f"--require-clean: uncommitted changes in the jobs file or its scripts: {shown}"
        )
