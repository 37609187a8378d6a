"""Batch dirs as earlier releases of the tool wrote them, made from a batch of this one by
rewriting its manifest and journal, so tests can read them back (and move them first):

* version 2: each attempt's outcome flat in the attempt, runs without matrix values or an
  `unstarted` of their own, journal version 1;
* version 1: the same, with every path into the batch dir absolute, under the dir where the
  batch was created.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safeagents_batch.records.layout import JOURNAL as JOURNAL_NAME
from safeagents_batch.records.layout import MANIFEST as MANIFEST_NAME


def write_as_version_1(batch_dir: Path) -> None:
    """Rewrites the finished batch at `batch_dir` (where it was created) as version 1 did."""
    write_as_version(batch_dir, 1)


def write_as_version(batch_dir: Path, version: int) -> None:
    manifest = json.loads((batch_dir / MANIFEST_NAME).read_text("utf-8"))
    assert manifest["batch_dir"] == str(batch_dir), "only where it was created"
    assert manifest["state"] != "running", "a snapshot that holds every journal event"
    journal = batch_dir / JOURNAL_NAME
    if journal.exists():
        events = [json.loads(line) for line in journal.read_text("utf-8").splitlines()]
        lines = [json.dumps(old_event(e, batch_dir, version), separators=(",", ":")) + "\n"
                 for e in events]  # fmt: skip
        journal.write_text("".join(lines), encoding="utf-8")
        # Its last event ends where the journal does now: the lines changed length.
        manifest["journal"]["offset"] = journal.stat().st_size
    old = old_document(manifest, batch_dir, version)
    (batch_dir / MANIFEST_NAME).write_text(json.dumps(old, indent=2), encoding="utf-8")


def old_document(manifest: dict[str, Any], batch_dir: Path, version: int) -> dict[str, Any]:
    """A manifest document of today as version 1 or 2 wrote it."""
    old = {**manifest, "manifest_version": version}
    old["journal"] = {**manifest["journal"], "version": 1}
    old["images"] = [old_image(i, batch_dir, version) for i in manifest["images"]]
    old["runs"] = [old_run(r, batch_dir, version) for r in manifest["runs"]]
    return old


def old_run(run: dict[str, Any], batch_dir: Path, version: int) -> dict[str, Any]:
    old = {k: v for k, v in run.items() if k not in ("matrix", "unstarted")}
    old["log_dir"] = _path(run["log_dir"], batch_dir, version)
    old["attempts"] = [old_attempt(a, batch_dir, version) for a in run["attempts"]]
    return old


def old_attempt(attempt: dict[str, Any], batch_dir: Path, version: int) -> dict[str, Any]:
    outcome = attempt["outcome"] or {}
    return {
        "number": attempt["number"],
        "status": outcome.get("status", "running"),
        "log_dir": _path(attempt["log_dir"], batch_dir, version),
        "started_at": outcome.get("started_at", attempt["started_at"]),
        "ended_at": outcome.get("ended_at"),
        "duration_seconds": outcome.get("duration_seconds"),
        "exit_code": outcome.get("exit_code"),
        "error": outcome.get("error"),
        "code_digest": attempt["code_digest"],
        "dropped_artifacts": attempt["dropped_artifacts"],
        "node": outcome.get("node"),
    }


def old_image(image: dict[str, Any], batch_dir: Path, version: int) -> dict[str, Any]:
    return {**image, "build_log": _path(image["build_log"], batch_dir, version)}


def old_event(event: dict[str, Any], batch_dir: Path, version: int) -> dict[str, Any]:
    event = {**event, "v": 1}
    if event["event"] == "attempt":
        event["attempt"] = old_attempt(event["attempt"], batch_dir, version)
    elif event["event"] == "image":
        event["image"] = old_image(event["image"], batch_dir, version)
    return event


def _path(recorded: str | None, batch_dir: Path, version: int) -> str | None:
    if recorded is None or version != 1:
        return recorded
    assert not Path(recorded).is_absolute(), recorded  # this tool wrote it relative
    return str(batch_dir / recorded)


def recorded_paths(batch_dir: Path) -> list[str]:
    """Every path the manifest of `batch_dir` records into it (build logs, log dirs)."""
    manifest = json.loads((batch_dir / MANIFEST_NAME).read_text("utf-8"))
    logs = [i["build_log"] for i in manifest["images"] if i["build_log"] is not None]
    dirs = [a["log_dir"] for r in manifest["runs"] for a in r["attempts"]]
    return logs + dirs
