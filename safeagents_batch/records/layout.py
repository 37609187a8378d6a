"""The batch dir's layout: the one module that names its files and folders. Everything else
asks a `BatchLayout` (or, inside one attempt's dir, these names) for a path.

```
BATCH_DIR/
  manifest.json        snapshot of the records (records/manifest.py)
  journal.jsonl        every transition, appended (records/journal.py)
  .lock                one orchestrator at a time (records/lock.py)
  jobs.yaml            the jobs file as resolved: what `rerun` runs
  jobs.source.yaml     the jobs file as written
  code/<digest>/       code snapshots, one per script dir (staging/code.py)
  images/              build logs
  runs/<run id>/attempt-<k>/   console.log, stdout.log, stderr.log, traceback.log,
                       model_calls.jsonl, artifacts
  report.html, results.csv, results.jsonl
```
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MANIFEST = "manifest.json"
JOURNAL = "journal.jsonl"
LOCK = ".lock"
JOBS_SNAPSHOT = "jobs.yaml"
JOBS_SOURCE = "jobs.source.yaml"
CODE = "code"
IMAGES = "images"
RUNS = "runs"
REPORT = "report.html"
RESULTS_CSV = "results.csv"
RESULTS_JSONL = "results.jsonl"
SAMPLES_CSV = "samples.csv"  # every run's samples, one row each
SAMPLES_JSONL = "samples.jsonl"
BUILDS = "builds"  # beside the batch dirs, in the output dir: `build`'s logs

# Inside an attempt's dir: the tool's own files; the script's artifacts go beside them.
CONSOLE_LOG = "console.log"
STDOUT_LOG = "stdout.log"
STDERR_LOG = "stderr.log"
LOG_NAMES = (CONSOLE_LOG, STDOUT_LOG, STDERR_LOG)
# The whole traceback of an error raised where the attempt ran (a node, this tool), beside the
# one line the attempt's record gives; only there when there was one.
TRACEBACK = "traceback.log"
# Every model call the attempt made through the batch's gateway, one JSON line each.
MODEL_CALLS = "model_calls.jsonl"
RESERVED_NAMES = (*LOG_NAMES, TRACEBACK, MODEL_CALLS)
RESULT = "result.json"  # what a script may leave in /safeagents/logs: its result
SAMPLES = "results.jsonl"  # ... and its results per sample, one JSON object a line


@dataclass(frozen=True)
class BatchLayout:
    """The paths of one batch dir, where it is now."""

    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    @property
    def journal(self) -> Path:
        return self.root / JOURNAL

    @property
    def lock(self) -> Path:
        return self.root / LOCK

    @property
    def jobs_snapshot(self) -> Path:
        return self.root / JOBS_SNAPSHOT

    @property
    def jobs_source(self) -> Path:
        return self.root / JOBS_SOURCE

    @property
    def code(self) -> Path:
        return self.root / CODE

    @property
    def images(self) -> Path:
        return self.root / IMAGES

    @property
    def report(self) -> Path:
        return self.root / REPORT

    @property
    def results_csv(self) -> Path:
        return self.root / RESULTS_CSV

    @property
    def results_jsonl(self) -> Path:
        return self.root / RESULTS_JSONL

    def attempt_dir(self, run_id: str, number: int) -> Path:
        return self.root / RUNS / run_id / f"attempt-{number}"


GITIGNORE = ".gitignore"
GITIGNORE_TEXT = "# Made by safeagents-batch: batches and logs are output, not source.\n*\n"


def ignore_in_git(output_dir: Path) -> None:
    """A `.gitignore` of `*` in an output dir the tool made (as pytest does for its cache):
    `./logs` inside a project never lands in `git status`. A dir the user made is theirs."""
    path = output_dir / GITIGNORE
    if not path.exists():
        path.write_text(GITIGNORE_TEXT, encoding="utf-8")


def make_output_dir(output_dir: Path) -> None:
    """The output dir, with its `.gitignore` when this call makes it."""
    if not output_dir.exists():
        output_dir.mkdir(parents=True)
        ignore_in_git(output_dir)
