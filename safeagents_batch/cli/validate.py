"""`validate FILE...`: check jobs files; every problem on a line of its own, located."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from safeagents_batch.cli.options import SubParsers
from safeagents_batch.core.errors import EXIT_OK, JobsFileError, Problem
from safeagents_batch.jobs.load import load_and_count
from safeagents_batch.jobs.plan import used_images


def add_parser(sub: SubParsers) -> None:
    p = sub.add_parser(
        "validate",
        help="check jobs files; print every problem with its location",
        description="Check jobs files against the schema and the file system. "
        "Prints 'OK: <n> runs, <m> images' or every problem found.",
    )
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    p.set_defaults(command=command)


def command(args: argparse.Namespace) -> int:
    problems: list[Problem] = []
    several = len(args.files) > 1
    for path in args.files:
        try:
            jobs_file, runs = load_and_count(path)
        except JobsFileError as exc:
            problems += exc.problems
            continue
        for warning in jobs_file.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        prefix = f"{path}: " if several else ""
        print(f"{prefix}OK: {runs} runs, {len(used_images(jobs_file))} images")
    if problems:
        raise JobsFileError(problems)
    return EXIT_OK
