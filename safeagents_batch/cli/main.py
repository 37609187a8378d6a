"""The command line: one parser, a subcommand per module of this package, and the one error
boundary (every BatchError is one line and its exit code, never a traceback)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from safeagents_batch.cli import (
    build,
    clean,
    plan,
    report,
    rerun,
    run,
    schema,
    status,
    validate,
)
from safeagents_batch.cli.options import Command, choose_engine
from safeagents_batch.core.errors import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    BatchError,
    JobsFileError,
)
from safeagents_batch.core.files import raise_open_files_limit
from safeagents_batch.core.text import printable
from safeagents_batch.core.version import VERSION

# In the order `--help` lists them.
COMMANDS = (validate, plan, schema, run, build, status, rerun, clean, report)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    raise_open_files_limit()
    command: Command = args.command
    try:
        choose_engine(args)
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
        return str(exc)  # one located line per problem, each made printable
    return f"safeagents-batch: error: {printable(str(exc))}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="safeagents-batch",
        description="Run SafeAgents evaluation scripts in isolated Docker containers, "
        "as declared in a jobs YAML file.",
        epilog="Exit codes: 0 all runs succeeded, 1 some run did not, 2 bad input, "
        "3 Docker engine unavailable, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {VERSION}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.add_parser(sub)
    return parser
