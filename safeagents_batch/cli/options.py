"""What the commands share: the flags of running a batch, the one place that builds a backend
(with `runner`), the console reporter, and the lines that end a batch."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from safeagents_batch.cli.output import ConsoleReporter
from safeagents_batch.core.errors import EngineUnavailable, UsageError, one_line
from safeagents_batch.execution.batch import BatchOutcome
from safeagents_batch.execution.executor import DEFAULT_ENGINE_WAIT
from safeagents_batch.records.layout import BatchLayout, ignore_in_git

if TYPE_CHECKING:
    from safeagents_batch.backends.base import Backend
    from safeagents_batch.backends.docker.backend import DockerBackend
    from safeagents_batch.backends.ray.backend import RayBackend
    from safeagents_batch.backends.slurm.backend import SlurmBackend

SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Command = Callable[[argparse.Namespace], int]


@contextmanager
def docker_backend() -> Iterator[DockerBackend]:
    """The local engine's backend: connected (a ping answered) or EngineUnavailable. Engine
    errors after the ping (a sweep, a `clean`, an image lookup) are one line and exit 3 as
    well, never a traceback."""
    # Imported here: `validate`, `plan` and `schema` must not load the Docker SDK.
    from safeagents_batch.backends.docker.backend import ENGINE_ERRORS, DockerBackend

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
        from safeagents_batch.backends.ray.backend import RayBackend, RayOptions
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] != "ray":
            raise
        raise UsageError("--backend ray needs Ray: pip install 'safeagents-batch[ray]'") from None
    options = RayOptions(
        address=args.ray_address,
        ship_azure=getattr(args, "ship_azure", False),
        registry=getattr(args, "registry", None),
        insecure=args.insecure_cluster,
    )
    with docker_backend() as local:
        backend = RayBackend.connect(local, options, warn=ConsoleReporter().warning)
        try:
            yield backend
        finally:
            backend.close()


@contextmanager
def slurm_backend(args: argparse.Namespace, share: Path) -> Iterator[SlurmBackend]:
    """The Slurm backend: the driver's engine (where images are built) and the cluster its
    commands reach; `share` is where the batch dirs go, on the cluster's shared filesystem
    (`--slurm-share` says otherwise)."""
    from safeagents_batch.backends.slurm.backend import SlurmBackend
    from safeagents_batch.backends.slurm.commands import SlurmOptions

    options = SlurmOptions(
        partition=args.slurm_partition,
        account=args.slurm_account,
        sbatch_args=tuple(args.slurm_args or ()),
        python=args.slurm_python,
        gateway_host=getattr(args, "slurm_gateway_host", None),
        ship_azure=getattr(args, "ship_azure", False),
    )
    share = (args.slurm_share or share).absolute()
    made = not share.exists()
    with docker_backend() as local:
        try:
            backend = SlurmBackend.connect(
                local, options, share, ConsoleReporter().warning, getattr(args, "engine", "docker")
            )
        except BaseException:
            if made:  # ours alone, just made for the probe: bad input leaves no dir behind
                shutil.rmtree(share, ignore_errors=True)
            raise
        if made and args.slurm_share is None:
            ignore_in_git(share)  # the output dir the probe made, as `run` would have
        try:
            yield backend
        finally:
            backend.close()


def chosen_backend(
    args: argparse.Namespace, share: Path | None = None
) -> AbstractContextManager[Backend]:
    """`--backend docker|ray|slurm`: the CLI is the one place that builds a backend. `share`:
    where the command's batch dirs are (Slurm's nodes must see it); default the current dir."""
    if args.backend == "ray":
        return ray_backend(args)
    if args.backend == "slurm":
        return slurm_backend(args, share or Path.cwd())
    return docker_backend()


ENGINES = ("docker", "podman")


def add_engine_flag(p: argparse.ArgumentParser) -> None:
    default = os.environ.get("SAFEAGENTS_ENGINE", "docker")
    p.add_argument(
        "--engine",
        choices=ENGINES,
        default=default if default in ENGINES else "docker",
        help="the local engine: Docker (DOCKER_HOST, default) or Podman (its service, started "
        "if none answers); default: SAFEAGENTS_ENGINE, else docker",
    )


def choose_engine(args: argparse.Namespace) -> None:
    """`--engine podman`: DOCKER_HOST is the user's Podman service (started if needed), for
    this process and those it starts (Ray's driver-side pieces included)."""
    if getattr(args, "engine", "docker") == "podman":
        # Imported here: only a command that runs containers loads the engine's modules.
        from safeagents_batch.backends.docker.podman import use_podman

        use_podman()


def add_backend_flags(p: argparse.ArgumentParser) -> None:
    add_engine_flag(p)
    p.add_argument(
        "--backend",
        choices=["docker", "ray", "slurm"],
        default="docker",
        help="where containers run: the local engine (default), a Ray cluster's nodes, or a "
        "Slurm cluster's (one job per attempt; see docs/slurm.md)",
    )
    p.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="with --backend ray: the cluster's head, HOST:PORT (default: RAY_ADDRESS)",
    )
    p.add_argument(
        "--insecure-cluster",
        action="store_true",
        help="with --backend ray: join a cluster that asks for no token (refused by default: "
        "whoever reaches its port runs code on it; start it with RAY_AUTH_MODE=token)",
    )
    add_slurm_flags(p)


def add_slurm_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("with --backend slurm")
    g.add_argument("--slurm-partition", metavar="NAME", help="sbatch --partition")
    g.add_argument("--slurm-account", metavar="NAME", help="sbatch --account")
    g.add_argument(
        "--slurm-arg",
        action="append",
        dest="slurm_args",
        metavar="ARG",
        help="one more sbatch argument, e.g. --slurm-arg=--qos=short; repeatable",
    )
    g.add_argument(
        "--slurm-python",
        metavar="PATH",
        help="the Python the nodes run (with this package's dependencies); default: this one",
    )
    g.add_argument(
        "--slurm-gateway-host",
        metavar="ADDR",
        help="this machine's address the nodes reach its model gateway by (default: the one "
        "on the route to the Slurm controller)",
    )
    g.add_argument(
        "--slurm-share",
        type=Path,
        metavar="DIR",
        help="a directory every node sees at the same path (default: the output dir; for "
        "`clean`, the current dir)",
    )


def add_execution_flags(p: argparse.ArgumentParser) -> None:
    add_backend_flags(p)
    p.add_argument(
        "--ship-azure",
        action="store_true",
        help="with --backend ray or slurm: copy this machine's ~/.azure to the nodes for runs "
        "with bind_azure_folder (without it such runs end `error`)",
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
        "--report",
        type=seconds,
        metavar="SECONDS",
        help="rewrite BATCH_DIR/report.html while the batch runs, at most this often; the "
        "page reloads itself until the batch ends",
    )
    p.add_argument(
        "--engine-wait",
        type=seconds,
        default=DEFAULT_ENGINE_WAIT,
        metavar="SECONDS",
        help="when the engine stops answering, how long to wait for it before giving up "
        f"(default {DEFAULT_ENGINE_WAIT:g})",
    )


def reporter(args: argparse.Namespace) -> ConsoleReporter:
    return ConsoleReporter(
        bar=False if args.no_progress else None,
        on_first_finish=warm_up_report,
        report_every=args.report,
    )


def finish_batch(outcome: BatchOutcome) -> int:
    """The lines a batch ends with (counts, manifest, report) and its exit code."""
    counts = ", ".join(f"{n} {s}" for s, n in outcome.summary.items() if s != "total" and n)
    print(f"batch {outcome.batch_dir}: {counts or 'no runs'} ({outcome.summary['total']} runs)")
    print(f"manifest: {BatchLayout(outcome.batch_dir).manifest}")
    report_at_end(outcome.batch_dir)
    if outcome.engine_gone:
        raise EngineUnavailable(
            "the Docker engine stopped answering and did not come back; runs not started are "
            f"pending; resume with: safeagents-batch rerun {outcome.batch_dir}"
        )
    if outcome.budget_spent is not None:
        print(
            f"safeagents-batch: {outcome.budget_spent}; the runs not started are pending: "
            "raise cost_limit and continue with: safeagents-batch rerun --jobs FILE "
            f"{outcome.batch_dir}",
            file=sys.stderr,
        )
    if outcome.interrupted:
        print(
            f"safeagents-batch: interrupted; resume with: safeagents-batch rerun "
            f"{outcome.batch_dir}",
            file=sys.stderr,
        )
    return outcome.exit_code


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def report_at_end(batch_dir: Path) -> None:
    """The report `run` and `rerun` leave: a failure to write it is a warning, not the
    batch's failure (its exit code is the runs')."""
    try:
        from safeagents_batch.report.page import write_report

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
        from safeagents_batch.report.page import warm_up

        warm_up()

    thread = threading.Thread(target=work, name="report-warm-up", daemon=True)
    thread.start()
    return thread
