"""`rerun BATCH_DIR`: run again, in place, the runs of a batch that did not succeed."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from safeagents_batch.cli.options import (
    SubParsers,
    add_execution_flags,
    chosen_backend,
    finish_batch,
    positive_int,
    reporter,
)
from safeagents_batch.execution.batch import BatchOptions
from safeagents_batch.execution.rerun import RerunChoice, parse_statuses, rerun_batch


def add_parser(sub: SubParsers) -> None:
    p = sub.add_parser(
        "rerun",
        help="run again, in place, the runs of a batch that failed",
        description="Rerun runs of BATCH_DIR in place. Earlier attempts keep their "
        "logs; the manifest records every attempt. Stale containers "
        "of a crashed run are removed first.",
    )
    p.add_argument("batch_dir", type=Path, metavar="BATCH_DIR")
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--status",
        type=parse_statuses,
        metavar="S1,S2",
        help="rerun runs with these statuses (default: all but succeeded)",
    )
    which.add_argument("--all", action="store_true", help="rerun every run")
    p.add_argument(
        "--jobs",
        type=Path,
        metavar="FILE",
        help="use this (edited) jobs file instead of the batch's snapshot; it "
        "becomes the batch's jobs file for later reruns",
    )
    p.add_argument(
        "--trust-batch-dir",
        action="store_true",
        help="rerun a batch dir this tool did not write for you as it is now (received from "
        "someone, or its jobs.yaml edited): look at its jobs.yaml first",
    )
    p.add_argument("-j", "--workers", type=positive_int, metavar="N")
    p.add_argument("--only", metavar="PATTERN", help="only runs whose id or job matches the glob")
    add_execution_flags(p)
    p.set_defaults(command=command)


def command(args: argparse.Namespace) -> int:
    choice = RerunChoice(everything=args.all, jobs_file=args.jobs, trust=args.trust_batch_dir)
    if args.status:
        choice = replace(choice, statuses=args.status)
    options = BatchOptions(workers=args.workers, only=args.only, engine_wait=args.engine_wait)
    with chosen_backend(args, args.batch_dir.absolute().parent) as backend:
        return finish_batch(rerun_batch(args.batch_dir, backend, reporter(args), choice, options))
