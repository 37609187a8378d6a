"""The matrix view: per job, one cell per combination of matrix values, with succeeded/total
and the mean of each numeric result field (repeats of a combination share its cell). Pure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from safeagents_batch.report.results import ResultRow, is_number, mean_of

CellKey = tuple[str, ...]  # the values of a job's matrix variables, in their order


@dataclass(frozen=True)
class Cell:
    key: CellKey
    succeeded: int
    total: int
    means: dict[str, float]


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


def job_matrices(rows: Sequence[ResultRow]) -> list[JobMatrix]:
    """One JobMatrix per job, in the order jobs first appear."""
    by_job: dict[str, list[ResultRow]] = {}
    for row in rows:
        by_job.setdefault(str(row.fixed["job"]), []).append(row)
    return [_job_matrix(job, job_rows) for job, job_rows in by_job.items()]


def _job_matrix(job: str, rows: list[ResultRow]) -> JobMatrix:
    variables = tuple(dict.fromkeys(name for row in rows for name in row.matrix))
    fields = tuple(
        dict.fromkeys(n for row in rows for n, v in row.result.fields.items() if is_number(v))
    )
    groups: dict[CellKey, list[ResultRow]] = {}
    for row in rows:
        groups.setdefault(cell_key(row, variables), []).append(row)
    cells = tuple(_cell(key, group, fields) for key, group in groups.items())
    return JobMatrix(job, variables, cells, fields)


def cell_key(row: ResultRow, variables: tuple[str, ...]) -> CellKey:
    return tuple(row.matrix.get(name, "") for name in variables)


def _cell(key: CellKey, rows: list[ResultRow], fields: tuple[str, ...]) -> Cell:
    means = {f: mean_of(r.result.fields.get(f) for r in rows) for f in fields}
    return Cell(
        key=key,
        succeeded=sum(1 for r in rows if r.fixed["status"] == "succeeded"),
        total=len(rows),
        means={f: m for f, m in means.items() if m is not None},
    )
