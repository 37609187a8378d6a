"""`run FILE`: build what is missing and run every run of a jobs file."""

from __future__ import annotations

import argparse
from pathlib import Path

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
    add_execution_flags(p)
    p.set_defaults(command=command)


def command(args: argparse.Namespace) -> int:
    jobs_file, specs = load_and_expand(args.file)
    if args.require_clean:
        require_clean(jobs_file.path, list(dict.fromkeys(s.script for s in specs)))
    options = BatchOptions(
        workers=args.workers,
        output_dir=args.output_dir,
        only=args.only,
        rebuild=args.no_cache,
        engine_wait=args.engine_wait,
    )
    share = (args.output_dir or jobs_file.output_dir).absolute()
    with chosen_backend(args, share) as backend:
        return finish_batch(run_batch(jobs_file, specs, backend, reporter(args), options))


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
