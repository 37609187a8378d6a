"""`clean [FILE...]`: remove what the tool left where containers run (through the backend,
whichever it is): leftover containers, and with --images the tool's images the FILEs do not
use (all of them with --all)."""

from __future__ import annotations

import argparse
from pathlib import Path

from safeagents_batch.backends.base import CleanRequest
from safeagents_batch.cli.options import (
    SubParsers,
    add_backend_flags,
    chosen_backend,
)
from safeagents_batch.core.errors import EXIT_OK, UsageError
from safeagents_batch.jobs.load import load_and_expand
from safeagents_batch.jobs.plan import needed_images
from safeagents_batch.staging.images import image_spec


def add_parser(sub: SubParsers) -> None:
    p = sub.add_parser(
        "clean",
        help="remove containers (and with --images, images) the tool left",
        description="Remove labelled containers whose batch is not running; with "
        "--images also the tool's images that the given jobs files "
        "do not use (or all of them with --all).",
    )
    p.add_argument(
        "files", nargs="*", type=Path, metavar="FILE", help="jobs files whose images are kept"
    )
    p.add_argument("--images", action="store_true", help="also remove unused images")
    p.add_argument("--all", action="store_true", help="with --images: remove all the tool's images")
    p.add_argument(
        "--image-name",
        action="append",
        metavar="NAME",
        dest="image_names",
        help="with --images: only images of this repository (`image_name`); repeatable",
    )
    p.add_argument("--dry-run", action="store_true", help="only show what would be removed")
    add_backend_flags(p)
    p.set_defaults(command=command)


def command(args: argparse.Namespace) -> int:
    request = clean_request(args)
    with chosen_backend(args) as backend:
        print("\n".join(backend.clean(request)))
    return EXIT_OK


def clean_request(args: argparse.Namespace) -> CleanRequest:
    if args.images and not (args.files or args.all):
        raise UsageError("clean --images needs the jobs files whose images to keep, or --all")
    return CleanRequest(
        dry_run=args.dry_run,
        images=args.images,
        keep_tags=frozenset() if args.all else kept_tags(args.files),
        repositories=frozenset(args.image_names) if args.image_names else None,
    )


def kept_tags(files: list[Path]) -> frozenset[str]:
    """The image tags the jobs files use (they stay)."""
    return frozenset(
        image_spec(config).tag for f in files for config in needed_images(load_and_expand(f)[1])
    )
