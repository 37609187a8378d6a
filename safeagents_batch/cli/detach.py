"""`run --detach` (with `--backend slurm`): the batch's driver goes to the cluster as a Slurm
job of its own, and the command returns once Slurm has it. The jobs file is checked here first
(bad input never reaches the queue); the batch's id is chosen here, so the batch dir is known
before the job starts; `status` and `report` read it from the login node at any time.

The driver job runs the same `run` (this package, the copy shipped to the shared directory),
in the same directory, with the submitting shell's environment (sbatch's default): the
variables the jobs file passes through are read there, as they would be here.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from safeagents_batch.core.errors import UsageError

BATCH_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


def check_detach(args: argparse.Namespace) -> None:
    if args.backend != "slurm":
        raise UsageError("--detach needs --backend slurm (the driver runs as a Slurm job)")
    if args.driver_args and not args.detach:
        raise UsageError("--driver-arg goes with --detach")


def check_batch_id(text: str) -> str:
    if not BATCH_ID.fullmatch(text):
        raise argparse.ArgumentTypeError(f"not a batch id: {text!r}")
    return text


def driver_argv(args: argparse.Namespace, batch_id: str, output_dir: Path) -> list[str]:
    """The `run` the driver job runs: this command's choices, the batch's id, no --detach.
    Paths absolute: the job starts in this directory, but says so plainly."""
    argv = ["run", str(args.file.absolute()), "--batch-id", batch_id, "--no-progress"]
    argv += ["-o", str(output_dir), "--backend", "slurm", "--engine", args.engine]
    argv += ["--engine-wait", str(args.engine_wait)]
    optional = {
        "-j": args.workers,
        "--only": args.only,
        "--report": args.report,
        "--slurm-partition": args.slurm_partition,
        "--slurm-account": args.slurm_account,
        "--slurm-python": args.slurm_python,
        "--slurm-gateway-host": args.slurm_gateway_host,
        "--slurm-share": args.slurm_share.absolute() if args.slurm_share else None,
    }
    for flag, value in optional.items():
        if value is not None:
            argv += [flag, str(value)]
    argv += [f"--slurm-arg={arg}" for arg in args.slurm_args or ()]
    switches = {
        "--no-cache": args.no_cache,
        "--require-clean": args.require_clean,
        "--ship-azure": args.ship_azure,
    }
    for flag, on in switches.items():
        if on:
            argv.append(flag)
    return argv
