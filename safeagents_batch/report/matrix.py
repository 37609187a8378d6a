"""The matrix view: per job, one cell per combination of matrix values, with succeeded/total
and, per numeric field, its mean with count and 95% interval (repeats of a combination share
its cell): over the cell's samples when the job's runs wrote any (results.jsonl), over its
runs' result.json otherwise. Pure."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

from safeagents_batch.report.results import ResultRow, is_number
from safeagents_batch.report.stats import Estimate, Summary

CellKey = tuple[str, ...]  # the values of a job's matrix variables, in their order
# Each cell's statistics over its samples, by (job, CellKey): report/samples.py takes them.
SampleStats = Mapping[Hashable, Mapping[str, Summary]]


@dataclass(frozen=True)
class Cell:
    key: CellKey
    succeeded: int
    total: int
    stats: dict[str, Estimate]
    over_samples: bool = False  # the estimates' n counts samples, not runs

    @property
    def means(self) -> dict[str, float]:
        return {name: estimate.mean for name, estimate in self.stats.items()}


@dataclass(frozen=True)
class JobMatrix:
    """A job's cells, laid out as a grid: the first variable's values are the rows, the
    combinations of the others are the columns (a job without a matrix is one cell)."""

    job: str
    variables: tuple[str, ...]
    cells: tuple[Cell, ...]
    fields: tuple[str, ...]  # numeric result fields, in first-seen order

    @property
    def row_keys(self) -> list[str]:
        return list(dict.fromkeys(c.key[0] if c.key else "" for c in self.cells))

    @property
    def column_keys(self) -> list[CellKey]:
        return list(dict.fromkeys(c.key[1:] for c in self.cells))

    def cell(self, row: str, column: CellKey) -> Cell | None:
        key = ((row,) if self.variables else ()) + column
        return next((c for c in self.cells if c.key == key), None)

    def column_label(self, column: CellKey) -> str:
        return ", ".join(f"{n}={v}" for n, v in zip(self.variables[1:], column, strict=True))


def job_matrices(rows: Sequence[ResultRow], samples: SampleStats | None = None) -> list[JobMatrix]:
    """One JobMatrix per job, in the order jobs first appear."""
    return [_job_matrix(job, job_rows, samples or {}) for job, job_rows in _by_job(rows).items()]


def run_cells(rows: Sequence[ResultRow]) -> dict[str, tuple[str, CellKey]]:
    """Each run's (job, cell key): where its samples count."""
    cells = {}
    for job, job_rows in _by_job(rows).items():
        variables = _variables(job_rows)
        for row in job_rows:
            cells[str(row.fixed["run_id"])] = (job, cell_key(row, variables))
    return cells


def _by_job(rows: Sequence[ResultRow]) -> dict[str, list[ResultRow]]:
    by_job: dict[str, list[ResultRow]] = {}
    for row in rows:
        by_job.setdefault(str(row.fixed["job"]), []).append(row)
    return by_job


def _variables(rows: list[ResultRow]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(name for row in rows for name in row.matrix))


def _job_matrix(job: str, rows: list[ResultRow], samples: SampleStats) -> JobMatrix:
    variables = _variables(rows)
    groups: dict[CellKey, list[ResultRow]] = {}
    for row in rows:
        groups.setdefault(cell_key(row, variables), []).append(row)
    sampled = {key: samples[(job, key)] for key in groups if (job, key) in samples}
    if sampled:  # the job's runs wrote samples: its statistics are theirs
        fields = tuple(dict.fromkeys(name for stats in sampled.values() for name in stats))
        cells = tuple(
            _cell(key, group, _estimates(sampled.get(key, {})), over_samples=True)
            for key, group in groups.items()
        )
        return JobMatrix(job, variables, cells, fields)
    fields = tuple(
        dict.fromkeys(n for row in rows for n, v in row.result.fields.items() if is_number(v))
    )
    cells = tuple(_cell(key, group, _run_estimates(group, fields)) for key, group in groups.items())
    return JobMatrix(job, variables, cells, fields)


def cell_key(row: ResultRow, variables: tuple[str, ...]) -> CellKey:
    return tuple(row.matrix.get(name, "") for name in variables)


def _run_estimates(rows: list[ResultRow], fields: tuple[str, ...]) -> dict[str, Estimate]:
    """Each field over the runs: one value a run, from its result.json."""
    summaries: dict[str, Summary] = {}
    for name in fields:
        for row in rows:
            value = row.result.fields.get(name)
            if is_number(value):
                summaries.setdefault(name, Summary()).add(float(value))
    return _estimates(summaries)


def _estimates(summaries: Mapping[str, Summary]) -> dict[str, Estimate]:
    return {name: s.estimate() for name, s in summaries.items() if s.n and s.finite}


def _cell(
    key: CellKey, rows: list[ResultRow], stats: dict[str, Estimate], *, over_samples: bool = False
) -> Cell:
    return Cell(
        key=key,
        succeeded=sum(1 for r in rows if r.fixed["status"] == "succeeded"),
        total=len(rows),
        stats=stats,
        over_samples=over_samples,
    )


def cell_label(matrix: JobMatrix, key: CellKey) -> str:
    """`A=x, B=y`, or `all` for a job without a matrix."""
    pairs = zip(matrix.variables, key, strict=True)
    return ", ".join(f"{name}={value}" for name, value in pairs) or "all"


def chart_cells(matrices: Sequence[JobMatrix]) -> list[dict[str, object]]:
    """Every cell's estimate of every field, as the page's charts draw them."""
    return [
        {
            "job": matrix.job,
            "cell": cell_label(matrix, cell.key),
            "field": name,
            "n": estimate.n,
            "mean": estimate.mean,
            "lo": estimate.low,
            "hi": estimate.high,
            "method": estimate.method,
        }
        for matrix in matrices
        for cell in matrix.cells
        for name, estimate in cell.stats.items()
    ]
