"""`status BATCH_DIR`: counts per status and the runs that did not succeed, where their logs
are now (the batch dir may have moved)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import msgspec

from safeagents_batch.cli.options import SubParsers
from safeagents_batch.cli.output import ERROR_LIMIT
from safeagents_batch.core.errors import EXIT_OK, EXIT_RUNS_FAILED, UsageError
from safeagents_batch.core.text import printable
from safeagents_batch.records.manifest import Manifest, load_manifest
from safeagents_batch.records.model import FINISHED, ModelUsage, RunRecord
from safeagents_batch.records.safedir import inside

STATUS_LINES = 20  # unsuccessful runs `status` names before it sums the rest up


def add_parser(sub: SubParsers) -> None:
    p = sub.add_parser("status", help="counts per status and the runs that did not succeed")
    p.add_argument("batch_dir", type=Path, metavar="BATCH_DIR")
    p.add_argument("--json", action="store_true", help="the summary and unsuccessful runs as JSON")
    p.set_defaults(command=command)


def command(args: argparse.Namespace) -> int:
    if not args.batch_dir.is_dir():
        raise UsageError(f"{args.batch_dir}: no such batch directory")
    manifest = load_manifest(args.batch_dir)
    batch_dir = args.batch_dir.absolute()
    if args.json:
        print(json.dumps(status_json(manifest, batch_dir), indent=2))
    else:
        print_status(manifest, batch_dir)
    return EXIT_OK if manifest.summary()["succeeded"] == len(manifest.runs) else EXIT_RUNS_FAILED


def logs_now(record: RunRecord, manifest: Manifest, batch_dir: Path) -> str | None:
    """The run's latest log dir as an absolute path that opens from any shell: the manifest
    records it relative to the batch dir, which may have moved since (`batch_dir`: now)."""
    if record.log_dir is None:
        return None
    return str(batch_dir / inside(record.log_dir, manifest.batch_dir))


def model_usage(manifest: Manifest) -> ModelUsage | None:
    """Every attempt's model calls through the gateway, summed; None when there were none."""
    usages = [
        usage
        for record in manifest.runs.values()
        for attempt in record.attempts
        if attempt.outcome is not None and attempt.outcome.usage
        for usage in attempt.outcome.usage.values()
    ]
    if not usages:
        return None
    return ModelUsage.sum(usages)


def usage_line(usage: ModelUsage) -> str:
    cost = f"${usage.cost_usd:.4f}"
    if usage.unpriced:
        cost += f" and {usage.unpriced} calls of unknown cost"
    return (
        f"model calls: {usage.requests} ({usage.errors} errors, {usage.retries} retried 429s), "
        f"{usage.input_tokens:,} input and {usage.output_tokens:,} output tokens, {cost}"
    )


def status_json(manifest: Manifest, batch_dir: Path) -> dict[str, Any]:
    usage = model_usage(manifest)
    return {
        "batch_id": manifest.batch_id,
        "state": manifest.state,
        "summary": manifest.summary(),
        "model_usage": msgspec.to_builtins(usage) if usage is not None else None,
        "not_succeeded": [
            {
                "run_id": r.run_id,
                "status": r.status,
                "exit_code": r.exit_code,
                "error": r.error,
                "log_dir": logs_now(r, manifest, batch_dir),
            }
            for r in manifest.runs.values()
            if r.status != "succeeded"
        ],
    }


def print_status(manifest: Manifest, batch_dir: Path) -> None:
    print(f"batch {printable(manifest.batch_id)} ({manifest.state})")
    for status, count in manifest.summary().items():
        print(f"  {status:<10} {count}")
    usage = model_usage(manifest)
    if usage is not None:
        print(usage_line(usage))
    unsuccessful = [r for r in manifest.runs.values() if r.status != "succeeded"]
    if unsuccessful:
        print("runs that did not succeed:")
    for record in unsuccessful[:STATUS_LINES]:
        print_run(record, manifest, batch_dir)
    if len(unsuccessful) > STATUS_LINES:
        # A big batch's status fits a screen; --json has every run.
        print(f"  ... and {len(unsuccessful) - STATUS_LINES} more (status --json lists all)")


def print_run(record: RunRecord, manifest: Manifest, batch_dir: Path) -> None:
    code = f" exit {record.exit_code}" if record.exit_code is not None else ""
    note = "" if record.status in FINISHED else " (not finished)"
    error = printable(record.error or "", ERROR_LIMIT)
    print(f"  {record.status:<9}{code}{note}  {printable(record.run_id)}  {error}".rstrip())
    logs = logs_now(record, manifest, batch_dir)
    if logs:
        print(f"             logs: {printable(logs)}")
