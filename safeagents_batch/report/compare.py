"""Comparing a batch with an earlier one, run by run (matched by run id) and cell by cell
(the change of each numeric result mean). Pure: result rows in, a Comparison out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from safeagents_batch.report.matrix import JobMatrix, job_matrices
from safeagents_batch.report.results import ResultRow


@dataclass(frozen=True)
class StatusChange:
    run_id: str
    job: str
    before: str
    after: str


@dataclass(frozen=True)
class MeanChange:
    """One numeric result field of one matrix cell, in the earlier batch and in this one
    (None where the cell or the field is only in one of them)."""

    job: str
    cell: dict[str, str]
    field: str
    before: float | None
    after: float | None

    @property
    def delta(self) -> float | None:
        if self.before is None or self.after is None:
            return None
        return self.after - self.before


@dataclass(frozen=True)
class Comparison:
    baseline: str  # the earlier batch's id
    newly_failing: tuple[StatusChange, ...]  # succeeded there, not here
    newly_succeeding: tuple[StatusChange, ...]  # not succeeded there, succeeded here
    changed: tuple[StatusChange, ...]  # every status change, the two kinds above included
    only_here: tuple[str, ...]
    only_there: tuple[str, ...]
    means: tuple[MeanChange, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "newly_failing": [asdict(c) for c in self.newly_failing],
            "newly_succeeding": [asdict(c) for c in self.newly_succeeding],
            "changed": [asdict(c) for c in self.changed],
            "only_here": list(self.only_here),
            "only_there": list(self.only_there),
            "means": [{**asdict(m), "delta": m.delta} for m in self.means],
        }


def compare_rows(
    baseline: str, before: Sequence[ResultRow], after: Sequence[ResultRow]
) -> Comparison:
    old = {str(r.fixed["run_id"]): r for r in before}
    new = {str(r.fixed["run_id"]): r for r in after}
    changed = tuple(
        StatusChange(run_id, str(row.fixed["job"]), _status(old[run_id]), _status(row))
        for run_id, row in new.items()
        if run_id in old and _status(old[run_id]) != _status(row)
    )
    return Comparison(
        baseline=baseline,
        newly_failing=tuple(c for c in changed if c.before == "succeeded"),
        newly_succeeding=tuple(c for c in changed if c.after == "succeeded"),
        changed=changed,
        only_here=tuple(r for r in new if r not in old),
        only_there=tuple(r for r in old if r not in new),
        means=mean_changes(job_matrices(before), job_matrices(after)),
    )


def _status(row: ResultRow) -> str:
    return str(row.fixed["status"])


def mean_changes(before: list[JobMatrix], after: list[JobMatrix]) -> tuple[MeanChange, ...]:
    """Per job, cell (by its variables' values) and numeric field, the mean before and after."""
    old = {m.job: m for m in before}
    changes: list[MeanChange] = []
    for matrix in after:
        earlier = old.get(matrix.job)
        variables = matrix.variables
        previous = {c.key: c for c in earlier.cells} if earlier is not None else {}
        # Cells are matched by their values only if the variables are the same.
        if earlier is not None and earlier.variables != variables:
            previous = {}
        for cell in matrix.cells:
            gone = previous.get(cell.key)
            for field in dict.fromkeys([*(gone.means if gone else {}), *cell.means]):
                changes.append(
                    MeanChange(
                        matrix.job,
                        dict(zip(variables, cell.key, strict=True)),
                        field,
                        gone.means.get(field) if gone else None,
                        cell.means.get(field),
                    )
                )
    return tuple(changes)
