"""Batch dirs as the tool wrote them before paths were relative (manifest version 1): every
path into the batch dir absolute, under the dir where the batch was created. Made from a batch
of this tool by rewriting its manifest and journal, so tests can move one and read it back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safeagents_batch.journal import JOURNAL_NAME
from safeagents_batch.manifest import MANIFEST_NAME


def write_as_version_1(batch_dir: Path) -> None:
    """Rewrites the finished batch at `batch_dir` (where it was created) as version 1 did."""
    manifest = json.loads((batch_dir / MANIFEST_NAME).read_text("utf-8"))
    assert manifest["batch_dir"] == str(batch_dir), "only where it was created"
    assert manifest["state"] != "running", "a snapshot that holds every journal event"
    journal = batch_dir / JOURNAL_NAME
    lines = [json.dumps(_event_v1(json.loads(line), batch_dir), separators=(",", ":")) + "\n"
             for line in journal.read_text("utf-8").splitlines()]  # fmt: skip
    journal.write_text("".join(lines), encoding="utf-8")
    manifest["manifest_version"] = 1
    # Its last event ends where the journal does now: the lines grew with the paths.
    manifest["journal"]["offset"] = journal.stat().st_size
    for image in manifest["images"]:
        image["build_log"] = _absolute(image["build_log"], batch_dir)
    for run in manifest["runs"]:
        run["log_dir"] = _absolute(run["log_dir"], batch_dir)
        for attempt in run["attempts"]:
            attempt["log_dir"] = _absolute(attempt["log_dir"], batch_dir)
    (batch_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2), encoding="utf-8")


def _event_v1(event: dict[str, Any], batch_dir: Path) -> dict[str, Any]:
    if event["event"] == "attempt":
        event["attempt"]["log_dir"] = _absolute(event["attempt"]["log_dir"], batch_dir)
    elif event["event"] == "image":
        event["image"]["build_log"] = _absolute(event["image"]["build_log"], batch_dir)
    return event


def _absolute(recorded: str | None, batch_dir: Path) -> str | None:
    if recorded is None:
        return None
    assert not Path(recorded).is_absolute(), recorded  # this tool wrote it relative
    return str(batch_dir / recorded)


def recorded_paths(batch_dir: Path) -> list[str]:
    """Every path the manifest of `batch_dir` records into it (build logs, log dirs)."""
    manifest = json.loads((batch_dir / MANIFEST_NAME).read_text("utf-8"))
    logs = [i["build_log"] for i in manifest["images"] if i["build_log"] is not None]
    dirs = [a["log_dir"] for r in manifest["runs"] for a in r["attempts"]]
    return logs + dirs
