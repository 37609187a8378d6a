"""`report BATCH_DIR`: the one-file HTML report and the results table of a batch (and what
changed since another with --compare); also the report `run` and `rerun` write at their end."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from safeagents_batch.cli.options import SubParsers
from safeagents_batch.core.errors import EXIT_OK, UsageError
from safeagents_batch.core.units import format_number

if TYPE_CHECKING:  # the report's modules load when a report is written, not before
    from safeagents_batch.report.compare import MeanChange


def add_parser(sub: SubParsers) -> None:
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
    p.set_defaults(command=command)


MARKED_SHOWN = 20  # of the cells whose change is beyond its interval (--json has all)


def marked_line(change: MeanChange) -> str:
    """`job [A=x] field: 0.2 -> 0.7, +0.5 [+0.32, +0.66] (n 100, 100)`."""
    cell = ", ".join(f"{k}={v}" for k, v in change.cell.items()) or "all"
    difference, was, now = change.change, change.was, change.now
    if difference is None or was is None or now is None or difference.low is None:
        return f"{change.job} [{cell}] {change.field}"  # not marked: no such change
    return (
        f"{change.job} [{cell}] {change.field}: {format_number(was.mean)} -> "
        f"{format_number(now.mean)}, {difference.delta:+.3g} "
        f"[{difference.low:+.3g}, {difference.high or 0:+.3g}] (n {was.n:,}, {now.n:,})"
    )


def command(args: argparse.Namespace) -> int:
    if args.json and args.compare is None:
        raise UsageError("--json prints the comparison: it needs --compare OTHER_BATCH_DIR")
    # Imported here: the report's modules (Jinja2) are a tenth of a second that no other
    # command should pay before its work.
    from safeagents_batch.report.page import write_report

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
            f"{len(c.only_here)} only here, {len(c.only_there)} only there, "
            f"{sum(1 for m in c.means if m.marked)} cell mean(s) changed beyond their 95% interval"
        )
        for change in [m for m in c.means if m.marked][:MARKED_SHOWN]:
            print(f"  * {marked_line(change)}")
    print(files.html)
    return EXIT_OK
