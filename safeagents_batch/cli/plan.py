"""`plan FILE`: every run a jobs file expands to (no engine needed)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from safeagents_batch.cli.options import SubParsers
from safeagents_batch.core.errors import EXIT_OK
from safeagents_batch.jobs.load import load_and_expand
from safeagents_batch.jobs.model import JobsFile
from safeagents_batch.jobs.plan import RunSpec, needed_images
from safeagents_batch.staging.images import image_spec

COLUMNS = ["run_id", "job", "framework", "script", "image", "timeout", "env"]


def add_parser(sub: SubParsers) -> None:
    p = sub.add_parser(
        "plan",
        help="list every run a jobs file expands to (no Docker needed)",
        description="List every run: id, job, framework, script, image, timeout "
        "and env names (never values).",
    )
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(command=command)


def command(args: argparse.Namespace) -> int:
    jobs_file, specs = load_and_expand(args.file)
    tags = {config: image_spec(config).tag for config in needed_images(specs)}
    rows = [plan_row(spec, jobs_file, tags[spec.image]) for spec in specs]
    if args.json:
        print(json.dumps({"jobs_file": str(args.file), "runs": rows}, indent=2, sort_keys=True))
        return EXIT_OK
    print_table(rows)
    print(f"{len(rows)} runs, {len(tags)} images")
    return EXIT_OK


def plan_row(spec: RunSpec, jobs_file: JobsFile, tag: str) -> dict[str, object]:
    env_file = spec.job.env_file
    return {
        "run_id": spec.run_id,
        "job": spec.job.name,
        "framework": spec.job.framework,
        "script": relative_to_jobs_file(spec.script, jobs_file),
        "image": tag,
        "timeout": spec.job.timeout,
        "env": list(spec.env_names),
        "env_file": relative_to_jobs_file(env_file, jobs_file) if env_file else None,
    }


def relative_to_jobs_file(path: Path, jobs_file: JobsFile) -> str:
    """Paths as the jobs file's author sees them, so output is the same on every machine."""
    try:
        return path.relative_to(jobs_file.path.parent).as_posix()
    except ValueError:
        return str(path)


def print_table(rows: list[dict[str, object]]) -> None:
    cells = [
        [", ".join(map(str, v)) if isinstance(v := row[c], list) else str(v) for c in COLUMNS]
        for row in rows
    ]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(COLUMNS)]
    for line in [[c.upper() for c in COLUMNS], *cells]:
        print("  ".join(text.ljust(w) for text, w in zip(line, widths, strict=True)).rstrip())
