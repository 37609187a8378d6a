"""Command line: argparse subcommands, each returning an exit code; one error boundary."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from safeagents_batch import __version__, cli_report, cli_run
from safeagents_batch.errors import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    BatchError,
    JobsFileError,
    Problem,
)
from safeagents_batch.images import image_spec
from safeagents_batch.jobsfile import load_and_expand
from safeagents_batch.model import JobsFile
from safeagents_batch.plan import RunSpec, needed_images
from safeagents_batch.schema import schema_text


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command: cli_run.Command = args.command
    try:
        return command(args)
    except BatchError as exc:
        print(_error_text(exc), file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # e.g. a script or requirements file unreadable after validation
        print(
            f"safeagents-batch: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "),
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("safeagents-batch: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _error_text(exc: BatchError) -> str:
    if isinstance(exc, JobsFileError):
        return str(exc)  # one located line per problem
    return f"safeagents-batch: error: {exc}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="safeagents-batch",
        description="Run SafeAgents evaluation scripts in isolated Docker containers, "
        "as declared in a jobs YAML file.",
        epilog="Exit codes: 0 all runs succeeded, 1 some run did not, 2 bad input, "
        "3 Docker engine unavailable, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    _add_validate(sub)
    _add_plan(sub)
    _add_schema(sub)
    cli_run.add_commands(sub)
    cli_report.add_commands(sub)
    return parser


def _add_validate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "validate",
        help="check jobs files; print every problem with its location",
        description="Check jobs files against the schema and the file system. "
        "Prints 'OK: <n> runs, <m> images' or every problem found.",
    )
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    p.set_defaults(command=cmd_validate)


def _add_plan(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "plan",
        help="list every run a jobs file expands to (no Docker needed)",
        description="List every run: id, job, framework, script, image, timeout "
        "and env names (never values).",
    )
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(command=cmd_plan)


def _add_schema(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("schema", help="print a JSON Schema shipped with the tool")
    p.add_argument("which", nargs="?", choices=["jobs", "manifest"], default="jobs")
    p.set_defaults(command=cmd_schema)


def cmd_validate(args: argparse.Namespace) -> int:
    problems: list[Problem] = []
    several = len(args.files) > 1
    for path in args.files:
        try:
            jobs_file, specs = load_and_expand(path)
        except JobsFileError as exc:
            problems += exc.problems
            continue
        for warning in jobs_file.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        prefix = f"{path}: " if several else ""
        print(f"{prefix}OK: {len(specs)} runs, {len(needed_images(specs))} images")
    if problems:
        raise JobsFileError(problems)
    return EXIT_OK


def cmd_plan(args: argparse.Namespace) -> int:
    jobs_file, specs = load_and_expand(args.file)
    tags = {config: image_spec(config).tag for config in needed_images(specs)}
    rows = [_plan_row(spec, jobs_file, tags[spec.image]) for spec in specs]
    if args.json:
        print(json.dumps({"jobs_file": str(args.file), "runs": rows}, indent=2, sort_keys=True))
        return EXIT_OK
    _print_table(rows)
    print(f"{len(rows)} runs, {len(tags)} images")
    return EXIT_OK


def _plan_row(spec: RunSpec, jobs_file: JobsFile, tag: str) -> dict[str, object]:
    return {
        "run_id": spec.run_id,
        "job": spec.job.name,
        "framework": spec.job.framework,
        "script": relative_to_jobs_file(spec.script, jobs_file),
        "image": tag,
        "timeout": spec.job.timeout,
        "env": list(spec.env_names),
        "env_file": relative_to_jobs_file(spec.job.env_file, jobs_file)
        if spec.job.env_file
        else None,
    }


def relative_to_jobs_file(path: Path, jobs_file: JobsFile) -> str:
    """Paths as the jobs file's author sees them, so output is the same on every machine."""
    try:
        return path.relative_to(jobs_file.path.parent).as_posix()
    except ValueError:
        return str(path)


def _print_table(rows: list[dict[str, object]]) -> None:
    columns = ["run_id", "job", "framework", "script", "image", "timeout", "env"]
    cells = [
        [", ".join(map(str, v)) if isinstance(v := row[c], list) else str(v) for c in columns]
        for row in rows
    ]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    for line in [[c.upper() for c in columns], *cells]:
        print("  ".join(text.ljust(w) for text, w in zip(line, widths, strict=True)).rstrip())


def cmd_schema(args: argparse.Namespace) -> int:
    sys.stdout.write(schema_text(args.which))
    return EXIT_OK
