"""A batch as the report reads it: its manifest, each run's result row, every run's samples
(streamed: their statistics per matrix cell, and samples.csv/samples.jsonl on request), and
the matrix view of them. Pure apart from reading the batch dir (and writing those two files)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from safeagents_batch.core.errors import UsageError
from safeagents_batch.records.layout import BatchLayout
from safeagents_batch.records.manifest import Manifest, load_manifest
from safeagents_batch.records.model import RunRecord
from safeagents_batch.records.safedir import SafeDir, inside
from safeagents_batch.report.matrix import JobMatrix, job_matrices, run_cells
from safeagents_batch.report.results import ResultRow, read_result
from safeagents_batch.report.samples import SampleRun, SampleScan, read_samples
from safeagents_batch.report.usage import usage_cells


@dataclass(frozen=True)
class BatchView:
    """A batch as the report reads it: the manifest, where it really is now (every file below
    it read through `safe`), and per run its matrix values (in the jobs file's order)."""

    manifest: Manifest
    batch_dir: Path
    matrix: dict[str, dict[str, str]]
    safe: SafeDir

    @property
    def layout(self) -> BatchLayout:
        return BatchLayout(self.batch_dir)

    def local(self, recorded: str | None) -> str | None:
        """A path the manifest recorded, relative to the batch dir where it is now (checked
        inside it when the manifest was read)."""
        if recorded is None:
            return None
        return inside(recorded, self.manifest.batch_dir)

    def close(self) -> None:
        self.safe.close()


def open_batch(batch_dir: Path) -> BatchView:
    """The batch at `batch_dir`, to read (the caller closes it)."""
    if not batch_dir.is_dir():
        raise UsageError(f"{batch_dir}: no such batch directory")
    manifest = load_manifest(batch_dir)
    safe = SafeDir(batch_dir.absolute())
    return BatchView(manifest, batch_dir.absolute(), matrix_of_runs(manifest), safe)


def matrix_of_runs(manifest: Manifest) -> dict[str, dict[str, str]]:
    """Each run's matrix values, as its record has them since they were recorded (manifest
    version 3); for older records, guessed from the env values that differ between a job's
    runs."""
    guessed = matrix_from_env([r for r in manifest.runs.values() if r.matrix is None])
    return {
        run_id: record.matrix if record.matrix is not None else guessed.get(run_id, {})
        for run_id, record in manifest.runs.items()
    }


def matrix_from_env(records: Sequence[RunRecord]) -> dict[str, dict[str, str]]:
    """The fallback: per job, the env names whose values differ between its runs."""
    by_job: dict[str, list[RunRecord]] = {}
    for record in records:
        by_job.setdefault(record.job, []).append(record)
    matrix: dict[str, dict[str, str]] = {}
    for runs in by_job.values():
        names = [n for n in runs[0].env if len({r.env.get(n) for r in runs}) > 1]
        for record in runs:
            matrix[record.run_id] = {n: record.env.get(n, "") for n in names}
    return matrix


# -- results ------------------------------------------------------------------------------


def result_rows(view: BatchView) -> list[ResultRow]:
    return [_result_row(view, record) for record in view.manifest.runs.values()]


def _result_row(view: BatchView, record: RunRecord) -> ResultRow:
    latest = record.latest
    return ResultRow(
        fixed={
            "run_id": record.run_id,
            "job": record.job,
            "framework": record.framework,
            "status": record.status,
            "attempt": latest.number if latest is not None else None,
            "exit_code": record.exit_code,
            "duration_seconds": record.duration_seconds,
        },
        matrix=view.matrix.get(record.run_id, {}),
        recorded={name: record.env[name] for name in record.recorded if name in record.env},
        result=read_result(view.safe, view.local(record.log_dir)),
        usage=usage_cells(latest.outcome.usage if latest and latest.outcome else None),
    )


# -- samples and the matrix ---------------------------------------------------------------


@dataclass(frozen=True)
class BatchResults:
    """Every run's row, the samples' scan, and the matrix view over both."""

    rows: list[ResultRow]
    samples: SampleScan
    matrices: list[JobMatrix]


def read_results(view: BatchView, *, write_sample_files: bool = False) -> BatchResults:
    """The batch's results; with `write_sample_files`, samples.csv and samples.jsonl in its
    dir (when any run wrote samples)."""
    rows = result_rows(view)
    scan = read_samples(sample_runs(view, rows), view.safe, write_files=write_sample_files)
    return BatchResults(rows, scan, job_matrices(rows, scan.cells))


def sample_runs(view: BatchView, rows: Sequence[ResultRow]) -> list[SampleRun]:
    """Each run, with the columns its samples' rows start with: run, job, matrix values,
    attempt and status."""
    cells = run_cells(rows)
    runs = []
    for record, row in zip(view.manifest.runs.values(), rows, strict=True):
        columns = {
            "run_id": record.run_id,
            "job": record.job,
            **row.matrix,
            "attempt": row.fixed["attempt"],
            "status": record.status,
        }
        attempt_dir = view.local(record.log_dir)
        runs.append(SampleRun(record.run_id, attempt_dir, columns, cells[record.run_id]))
    return runs
