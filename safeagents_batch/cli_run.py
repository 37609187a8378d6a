"""Subcommands that talk to the Docker engine: run, build, status, rerun, clean."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from safeagents_batch.batch import BatchOptions, BatchOutcome, run_batch, select_runs
from safeagents_batch.clean import clean
from safeagents_batch.cli_output import ConsoleReporter
from safeagents_batch.cli_report import report_at_end, require_clean, warm_up_report
from safeagents_batch.errors import (
    EXIT_OK,
    EXIT_RUNS_FAILED,
    EngineUnavailable,
    UsageError,
    one_line,
)
from safeagents_batch.executor import DEFAULT_ENGINE_WAIT
from safeagents_batch.images import image_spec
from safeagents_batch.jobsfile import load_and_expand
from safeagents_batch.manifest import MANIFEST_NAME, Manifest, load_manifest
from safeagents_batch.packages import requested_versions
from safeagents_batch.plan import needed_images
from safeagents_batch.records import FINISHED, RunRecord, located
from safeagents_batch.rerun import RerunChoice, parse_statuses, rerun_batch

if TYPE_CHECKING:
    from safeagents_batch.backends.base import Backend
    from safeagents_batch.backends.docker import DockerBackend
    from safeagents_batch.backends.ray import RayBackend

STATUS_LINES = 20  # unsuccessful runs `status` names before it sums the rest up
SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Command = Callable[[argparse.Namespace], int]


@contextmanager
def docker_backend() -> Iterator[DockerBackend]:
    """The one place the CLI makes a backend: connected (a ping answered) or EngineUnavailable.
    Engine errors after the ping (a sweep, a `clean`, an image lookup) are one line and exit 3
    as well, never a traceback."""
    # Imported here: `validate`, `plan` and `schema` must not load the Docker SDK.
    from safeagents_batch.backends.docker import ENGINE_ERRORS, DockerBackend

    backend = DockerBackend.from_env()
    try:
        yield backend
    except ENGINE_ERRORS as exc:
        raise EngineUnavailable(f"Docker engine error: {one_line(exc)}") from None
    finally:
        backend.close()


@contextmanager
def ray_backend(args: argparse.Namespace) -> Iterator[RayBackend]:
    """The Ray backend: the driver's engine (where images are built) and a joined cluster."""
    try:
        # Imported here: Ray is an optional extra, and heavy; only `--backend ray` loads it.
        from safeagents_batch.backends.ray import RayBackend, RayOptions
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] != "ray":
            raise
        raise UsageError("--backend ray needs Ray: pip install 'safeagents-batch[ray]'") from None
    options = RayOptions(
        address=args.ray_address,
        ship_azure=getattr(args, "ship_azure", False),
        registry=getattr(args, "registry", None),
    )
    with docker_backend() as local:
        backend = RayBackend.connect(local, options, warn=ConsoleReporter().warning)
        try:
            yield backend
        finally:
            backend.close()


def chosen_backend(args: argparse.Namespace) -> AbstractContextManager[Backend]:
    """`--backend docker|ray`: the CLI is the one place that builds a backend."""
    return ray_backend(args) if args.backend == "ray" else docker_backend()


def add_commands(sub: SubParsers) -> None:
    _add_run(sub)
    _add_build(sub)
    _add_status(sub)
    _add_rerun(sub)
    _add_clean(sub)


def _add_run(sub: SubParsers) -> None:
    p = sub.add_parser(
        "run",
        help="build missing images and run every run of a jobs file",
        description="Build what is missing, run every run in its own container, "
        "and write OUTPUT/<batch id>/ with logs and manifest.json.",
    )
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument(
        "-j",
        "--workers",
        type=_positive_int,
        metavar="N",
        help="runs at once (default: the file's `workers`, else 4)",
    )
    p.add_argument(
        "-o",
        "--output-dir",
        type=Path,
        metavar="DIR",
        help="where the batch directory goes (default: the file's `output_dir`)",
    )
    p.add_argument("--only", metavar="PATTERN", help="only runs whose id or job matches the glob")
    p.add_argument("--no-cache", action="store_true", help="rebuild images even if tagged")
    p.add_argument(
        "--require-clean",
        action="store_true",
        help="refuse to start if the jobs file or its scripts have uncommitted git changes",
    )
    _add_execution_flags(p)

    def command(args: argparse.Namespace) -> int:
        jobs_file, specs = load_and_expand(args.file)
        if args.require_clean:
            require_clean(jobs_file.path, list(dict.fromkeys(s.script for s in specs)))
        options = BatchOptions(
            workers=args.workers,
            output_dir=args.output_dir,
            only=args.only,
            rebuild=args.no_cache,
            engine_wait=args.engine_wait,
        )
        with chosen_backend(args) as backend:
            return report(run_batch(jobs_file, specs, backend, _reporter(args), options))

    p.set_defaults(command=command)


def _add_backend_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--backend",
        choices=["docker", "ray"],
        default="docker",
        help="where containers run: the local engine (default) or a Ray cluster's nodes",
    )
    p.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="with --backend ray: the cluster's head, HOST:PORT (default: RAY_ADDRESS)",
    )


def _add_execution_flags(p: argparse.ArgumentParser) -> None:
    _add_backend_flags(p)
    p.add_argument(
        "--ship-azure",
        action="store_true",
        help="with --backend ray: copy this machine's ~/.azure to the nodes for runs with "
        "bind_azure_folder (without it such runs end `error`)",
    )
    p.add_argument(
        "--registry",
        metavar="HOST:PORT",
        help="with --backend ray: push images there once and let nodes pull them, instead "
        "of shipping them through Ray",
    )
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="plain one-line-per-run output even on a terminal",
    )
    p.add_argument(
        "--engine-wait",
        type=_seconds,
        default=DEFAULT_ENGINE_WAIT,
        metavar="SECONDS",
        help="when the engine stops answering, how long to wait for it before giving up "
        f"(default {DEFAULT_ENGINE_WAIT:g})",
    )


def _reporter(args: argparse.Namespace) -> ConsoleReporter:
    return ConsoleReporter(bar=False if args.no_progress else None, on_first_finish=warm_up_report)


def report(outcome: BatchOutcome) -> int:
    counts = ", ".join(f"{n} {s}" for s, n in outcome.summary.items() if s != "total" and n)
    print(f"batch {outcome.batch_dir}: {counts or 'no runs'} ({outcome.summary['total']} runs)")
    print(f"manifest: {outcome.batch_dir / MANIFEST_NAME}")
    report_at_end(outcome.batch_dir)
    if outcome.engine_gone:
        raise EngineUnavailable(
            "the Docker engine stopped answering and did not come back; runs not started are "
            f"pending; resume with: safeagents-batch rerun {outcome.batch_dir}"
        )
    if outcome.interrupted:
        print(
            f"safeagents-batch: interrupted; resume with: safeagents-batch rerun "
            f"{outcome.batch_dir}",
            file=sys.stderr,
        )
    return outcome.exit_code


def _add_build(sub: SubParsers) -> None:
    p = sub.add_parser("build", help="build the images a jobs file needs, without running")
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("--rebuild", action="store_true", help="rebuild even if the tag exists")
    p.add_argument("--only", metavar="PATTERN", help="only images of runs matching the glob")

    def command(args: argparse.Namespace) -> int:
        jobs_file, specs = load_and_expand(args.file)
        images = [image_spec(c) for c in needed_images(select_runs(specs, args.only))]
        failed = 0
        with docker_backend() as backend:
            for image in images:
                [outcome] = backend.ensure_images(
                    [image], jobs_file.output_dir / "builds", rebuild=args.rebuild
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

    p.set_defaults(command=command)


def _add_status(sub: SubParsers) -> None:
    p = sub.add_parser("status", help="counts per status and the runs that did not succeed")
    p.add_argument("batch_dir", type=Path, metavar="BATCH_DIR")
    p.add_argument("--json", action="store_true", help="the summary and unsuccessful runs as JSON")

    def command(args: argparse.Namespace) -> int:
        if not args.batch_dir.is_dir():
            raise UsageError(f"{args.batch_dir}: no such batch directory")
        manifest = load_manifest(args.batch_dir)
        batch_dir = args.batch_dir.absolute()
        if args.json:
            print(json.dumps(_status_json(manifest, batch_dir), indent=2))
        else:
            _print_status(manifest, batch_dir)
        return (
            EXIT_OK if manifest.summary()["succeeded"] == len(manifest.runs) else EXIT_RUNS_FAILED
        )

    p.set_defaults(command=command)


def _logs_now(record: RunRecord, manifest: Manifest, batch_dir: Path) -> str | None:
    """The run's latest log dir as an absolute path that opens from any shell: the manifest
    records it relative to the batch dir, which may have moved since (`batch_dir`: now)."""
    if record.log_dir is None:
        return None
    return str(located(record.log_dir, batch_dir, manifest.batch_dir))


def _status_json(manifest: Manifest, batch_dir: Path) -> dict[str, Any]:
    return {
        "batch_id": manifest.batch_id,
        "state": manifest.state,
        "summary": manifest.summary(),
        "not_succeeded": [
            {
                "run_id": r.run_id,
                "status": r.status,
                "exit_code": r.exit_code,
                "error": r.error,
                "log_dir": _logs_now(r, manifest, batch_dir),
            }
            for r in manifest.runs.values()
            if r.status != "succeeded"
        ],
    }


def _print_status(manifest: Manifest, batch_dir: Path) -> None:
    print(f"batch {manifest.batch_id} ({manifest.state})")
    for status, count in manifest.summary().items():
        print(f"  {status:<10} {count}")
    unsuccessful = [r for r in manifest.runs.values() if r.status != "succeeded"]
    if unsuccessful:
        print("runs that did not succeed:")
    for record in unsuccessful[:STATUS_LINES]:
        code = f" exit {record.exit_code}" if record.exit_code is not None else ""
        note = "" if record.status in FINISHED else " (not finished)"
        print(f"  {record.status:<9}{code}{note}  {record.run_id}  {record.error or ''}".rstrip())
        logs = _logs_now(record, manifest, batch_dir)
        if logs:
            print(f"             logs: {logs}")
    if len(unsuccessful) > STATUS_LINES:
        # A big batch's status fits a screen; --json has every run.
        print(f"  ... and {len(unsuccessful) - STATUS_LINES} more (status --json lists all)")


def _add_rerun(sub: SubParsers) -> None:
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
    p.add_argument("-j", "--workers", type=_positive_int, metavar="N")
    p.add_argument("--only", metavar="PATTERN", help="only runs whose id or job matches the glob")
    _add_execution_flags(p)

    def command(args: argparse.Namespace) -> int:
        choice = RerunChoice(everything=args.all, jobs_file=args.jobs)
        if args.status:
            choice = replace(choice, statuses=args.status)
        options = BatchOptions(workers=args.workers, only=args.only, engine_wait=args.engine_wait)
        with chosen_backend(args) as backend:
            return report(rerun_batch(args.batch_dir, backend, _reporter(args), choice, options))

    p.set_defaults(command=command)


def _add_clean(sub: SubParsers) -> None:
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
    _add_backend_flags(p)

    def command(args: argparse.Namespace) -> int:
        if args.backend == "ray":
            return _clean_cluster(args)
        if args.images and not (args.files or args.all):
            raise UsageError("clean --images needs the jobs files whose images to keep, or --all")
        keep = (
            set()
            if args.all
            else {
                image_spec(c).tag for f in args.files for c in needed_images(load_and_expand(f)[1])
            }
        )
        repositories = set(args.image_names) if args.image_names else None
        from safeagents_batch.backends.docker_clean import DockerCleaner

        with docker_backend() as backend:
            cleaner = DockerCleaner(backend.client)
            images = cleaner.tool_images(keep, repositories) if args.images else []
            result = clean(cleaner, cleaner.leftover_containers() + images, dry_run=args.dry_run)
        print("\n".join(result.lines))
        return EXIT_OK

    p.set_defaults(command=command)


def _clean_cluster(args: argparse.Namespace) -> int:
    """`clean --backend ray`: leftover containers on every live node's engine (images stay:
    nodes keep the ones shipped to them)."""
    if args.images:
        raise UsageError("clean --images works on the local engine only; drop --backend ray")
    with ray_backend(args) as backend:
        print("\n".join(backend.clean(dry_run=args.dry_run)))
    return EXIT_OK


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value
