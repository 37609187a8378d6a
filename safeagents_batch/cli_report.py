"""The `report` command, and the report that `run` and `rerun` write when they end."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path
from typing import TypeAlias

from safeagents_batch.errors import EXIT_OK, UsageError, one_line
from safeagents_batch.provenance import git_state

SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def add_commands(sub: SubParsers) -> None:
    p = sub.add_parser(
        "report",
        help="write BATCH_DIR/report.html, results.csv and results.jsonl",
        description="Write a self-contained HTML report of a batch (no server, no network; "
        "links relative to it) and the results table of its runs' result.json files.",
    )
    p.add_argument("batch_dir", type=Path, metavar="BATCH_DIR")
    p.add_argument(
        "-o", "--output", type=Path, metavar="FILE", help="default: BATCH_DIR/report.html"
    )
    p.add_argument(
        "--compare",
        type=Path,
        metavar="OTHER_BATCH_DIR",
        help="compare with an earlier batch: status changes by run id, result means per cell",
    )
    p.add_argument("--json", action="store_true", help="with --compare: print it as JSON")
    p.set_defaults(command=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    if args.json and args.compare is None:
        raise UsageError("--json prints the comparison: it needs --compare OTHER_BATCH_DIR")
    from safeagents_batch.report import write_report

    files = write_report(args.batch_dir, args.output, args.compare)
    if args.json and files.comparison is not None:
        print(json.dumps(files.comparison.to_json(), indent=2))
        print(f"report: {files.html}", file=sys.stderr)
        return EXIT_OK
    if files.comparison is not None:
        c = files.comparison
        print(
            f"compared with {c.baseline}: {len(c.newly_failing)} newly failing, "
            f"{len(c.newly_succeeding)} newly succeeding, {len(c.changed)} changed status, "
            f"{len(c.only_here)} only here, {len(c.only_there)} only there"
        )
    print(files.html)
    return EXIT_OK


def report_at_end(batch_dir: Path) -> None:
    """The report `run` and `rerun` leave: a failure to write it is a warning, not the
    batch's failure (its exit code is the runs')."""
    try:
        from safeagents_batch.report import write_report

        files = write_report(batch_dir)
    except Exception as exc:  # whatever it is, the batch ran: its runs' exit code stands
        print(f"safeagents-batch: warning: no report written: {one_line(exc)}", file=sys.stderr)
        return
    print(f"report: {files.html}")


def warm_up_report() -> threading.Thread:
    """Loads the report's modules and compiles its template in the background: `run` and
    `rerun` start it once their batch is under way, when the process mostly waits for the
    engine. Neither the first container (the imports would delay it by a tenth of a second)
    nor the end of the batch (the template takes tens of ms to compile) waits for them."""

    def work() -> None:
        from safeagents_batch.report import warm_up

        warm_up()

    thread = threading.Thread(target=work, name="report-warm-up", daemon=True)
    thread.start()
    return thread


def require_clean(jobs_file: Path, scripts: list[Path]) -> None:
    """`run --require-clean`: refuse unless the jobs file and its scripts are committed."""
    state = git_state(jobs_file, scripts)
    if state is None:
        raise UsageError(f"--require-clean: {jobs_file} is not in a git work tree")
    if state.dirty:
        shown = ", ".join(state.changed[:5]) + (" ..." if len(state.changed) > 5 else "")
        raise UsageError(
            f"--require-clean: uncommitted changes in the jobs file or its scripts: {shown}"
        )
