"""`build FILE`: build the images a jobs file needs, without running anything."""

from __future__ import annotations

import argparse
from pathlib import Path

from safeagents_batch.cli.options import SubParsers, docker_backend
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
    p.set_defaults(command=command)


def command(args: argparse.Namespace) -> int:
    jobs_file, specs = load_and_expand(args.file)
    images = [image_spec(c) for c in needed_images(select_runs(specs, args.only))]
    failed = 0
    layout.make_output_dir(jobs_file.output_dir)  # the build logs' place, `.gitignore`d
    with docker_backend() as backend:
        for image in images:
            [outcome] = backend.ensure_images(
                [image], jobs_file.output_dir / layout.BUILDS, rebuild=args.rebuild
            ).values()
            seconds = f" in {outcome.build_seconds:.1f}s" if outcome.build_seconds else ""
            error = f"  ({outcome.error})" if outcome.error else ""
            print(f"{outcome.status:<7} {outcome.tag}{seconds}{error}", flush=True)
            if outcome.ok:  # what the tag holds now, as the manifest of a run records it
                resolved = requested_versions(
                    image.config, outcome.packages, outcome.azure_cli_packages
                )
                print(f"        {' '.join(resolved)}", flush=True)
            failed += not outcome.ok
    return EXIT_RUNS_FAILED if failed else EXIT_OK
