"""`schema [jobs|manifest]`: a JSON Schema of the tool's: the jobs file's (shipped), or
manifest.json's (made from the records' types)."""

from __future__ import annotations

import argparse
import json
import sys

from safeagents_batch.cli.options import SubParsers
from safeagents_batch.core.errors import EXIT_OK
from safeagents_batch.jobs.schema import schema_text


def add_parser(sub: SubParsers) -> None:
    p = sub.add_parser("schema", help="print a JSON Schema shipped with the tool")
    p.add_argument("which", nargs="?", choices=["jobs", "manifest"], default="jobs")
    p.set_defaults(command=command)


def command(args: argparse.Namespace) -> int:
    if args.which == "manifest":
        from safeagents_batch.records.manifest import json_schema

        print(json.dumps(json_schema(), indent=2))
        return EXIT_OK
    sys.stdout.write(schema_text(args.which))
    return EXIT_OK
