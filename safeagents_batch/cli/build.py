"""`build FILE`: build the images a jobs file needs, without running anything."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from safeagents_batch.cli.builds import BuildDisplay, end_line
from safeagents_batch.cli.options import SubParsers, add_engine_flag, docker_backend
from safeagents_batch.core.errors import EXIT_OK, EXIT_RUNS_FAILED
from safeagents_batch.execution.prepare import select_runs
from safeagents_batch.jobs.load import load_and_expand
from safeagents_batch.jobs.plan import needed_images
from safeagents_batch.records import layout
from safeagents_batch.staging.images import image_spec
from safeagents_batch.staging.packages import requested_versions


def add_parser(sub: SubParsers) -> None:
    p = sub.add_parser("build", help="build the images a jobs file needs, without running")
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("--rebuild", action="store_true", help="rebuild even if the tag exists")
    p.add_argument("--only", metavar="PATTERN", help="only images of runs matching the glob")
    add_engine_flag(p)
    p.set_defaults(command=command)


def command(args: argparse.Namespace) -> int:
    jobs_file, specs = load_and_expand(args.file)
    images = [image_spec(c) for c in needed_images(select_runs(specs, args.only))]
    failed = 0
    layout.make_output_dir(jobs_file.output_dir)  # the build logs' place, `.gitignore`d
    # Its start and steps as it goes; its end line (and versions) printed here, in order.
    progress = BuildDisplay(live=sys.stderr.isatty(), say_end=False)
    with docker_backend() as backend:
        for image in images:
            [outcome] = backend.ensure_images(
                [image],
                jobs_file.output_dir / layout.BUILDS,
                rebuild=args.rebuild,
                progress=progress,
            ).values()
            print(end_line(outcome), flush=True)
            resolved = requested_versions(
                image.config, outcome.packages, outcome.azure_cli_packages
            )
            if outcome.ok and resolved:  # what the tag holds now, as a run's manifest says
                print(f"        {' '.join(resolved)}", flush=True)
            failed += not outcome.ok
    return EXIT_RUNS_FAILED if failed else EXIT_OK
