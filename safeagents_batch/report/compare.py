"""Comparing a batch with an earlier one, run by run (matched by run id) and cell by cell
(the change of each numeric field's mean, with its 95% interval: a cell whose interval
excludes zero changed beyond what its counts explain). Pure: two batches' results in, a
Comparison out."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from safeagents_batch.report.batch import BatchResults
from safeagents_batch.report.matrix import JobMatrix
from safeagents_batch.report.results import ResultRow
from safeagents_batch.report.stats import Difference, Estimate, difference


@dataclass(frozen=True)
class StatusChange:
    run_id: str
    job: str
    before: str
    after: str


@dataclass(frozen=True)
class MeanChange:
    """One numeric field of one matrix cell, its estimate in the earlier batch and in this
    one (None where the cell or the field is only in one of them), and their difference."""

    job: str
    cell: dict[str, str]
    field: str
    was: Estimate | None
    now: Estimate | None

    @property
    def before(self) -> float | None:
        return self.was.mean if self.was is not None else None

    @property
    def after(self) -> float | None:
        return self.now.mean if self.now is not None else None

    @property
    def change(self) -> Difference | None:
        if self.was is None or self.now is None:
            return None
        return difference(self.was, self.now)

    @property
    def delta(self) -> float | None:
        change = self.change
        return change.delta if change is not None else None

    @property
    def marked(self) -> bool:
        """The difference's 95% interval excludes zero."""
        change = self.change
        return change is not None and change.excludes_zero

    def to_json(self) -> dict[str, Any]:
        change = self.change
        return {
            "job": self.job,
            "cell": self.cell,
            "field": self.field,
            "before": _estimate_json(self.was),
            "after": _estimate_json(self.now),
            "delta": change.delta if change else None,
            "delta_low": change.low if change else None,
            "delta_high": change.high if change else None,
            "method": change.method if change else None,
            "excludes_zero": self.marked,
        }


def _estimate_json(estimate: Estimate | None) -> dict[str, Any] | None:
    if estimate is None:
        return None
    return {
        "n": estimate.n,
        "mean": estimate.mean,
        "low": estimate.low,
        "high": estimate.high,
        "method": estimate.method,
    }


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
            "means": [m.to_json() for m in self.means],
            "marked": sum(1 for m in self.means if m.marked),
        }


def compare_results(baseline: str, before: BatchResults, after: BatchResults) -> Comparison:
    old = {str(r.fixed["run_id"]): r for r in before.rows}
    new = {str(r.fixed["run_id"]): r for r in after.rows}
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
        means=mean_changes(before.matrices, after.matrices),
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
            for field in dict.fromkeys([*(gone.stats if gone else {}), *cell.stats]):
                changes.append(
                    MeanChange(
                        matrix.job,
                        dict(zip(variables, cell.key, strict=True)),
                        field,
                        gone.stats.get(field) if gone else None,
                        cell.stats.get(field),
                    )
                )
    return tuple(changes)
