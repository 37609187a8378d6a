"""compare: status changes matched by run id, and the change of each mean per cell."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from safeagents_batch.report.batch import BatchResults
from safeagents_batch.report.compare import Comparison, compare_results
from safeagents_batch.report.matrix import job_matrices
from safeagents_batch.report.results import ResultFile, ResultRow, Scalar
from safeagents_batch.report.samples import SampleScan
from safeagents_batch.report.stats import Summary


def compare_rows(
    baseline: str, before: Sequence[ResultRow], after: Sequence[ResultRow]
) -> Comparison:
    """Two batches of runs without samples."""
    return compare_results(baseline, results(before), results(after))


def results(rows: Sequence[ResultRow], samples: SampleScan | None = None) -> BatchResults:
    scan = samples or SampleScan()
    return BatchResults(list(rows), scan, job_matrices(rows, scan.cells))


def row(run_id: str, status: str, score: Scalar = None, variant: str = "a") -> ResultRow:
    fields: dict[str, Scalar] = {} if score is None else {"score": score}
    fixed: dict[str, Scalar] = {"run_id": run_id, "job": "j", "status": status}
    return ResultRow(fixed, {"V": variant}, ResultFile(fields))


def test_runs_that_newly_fail_succeed_change_or_exist_on_one_side() -> None:
    before = [
        row("keeps", "succeeded", 1),
        row("breaks", "succeeded", 1),
        row("heals", "failed"),
        row("drifts", "failed", variant="b"),
        row("gone", "succeeded", variant="b"),
    ]
    after = [
        row("keeps", "succeeded", 0),
        row("breaks", "failed"),
        row("heals", "succeeded", 0),
        row("drifts", "timed_out", variant="b"),
        row("new", "succeeded", 1, variant="b"),
    ]
    c = compare_rows("old-batch", before, after)
    assert [x.run_id for x in c.newly_failing] == ["breaks"]
    assert [x.run_id for x in c.newly_succeeding] == ["heals"]
    assert [(x.run_id, x.before, x.after) for x in c.changed] == [
        ("breaks", "succeeded", "failed"),
        ("heals", "failed", "succeeded"),
        ("drifts", "failed", "timed_out"),
    ]
    assert (c.only_here, c.only_there) == (("new",), ("gone",))
    [cell_a, cell_b] = c.means
    assert (cell_a.cell, cell_a.field, cell_a.before, cell_a.after) == ({"V": "a"}, "score", 1, 0)
    assert cell_a.delta == pytest.approx(-1.0)
    assert (cell_b.cell, cell_b.before, cell_b.after, cell_b.delta) == ({"V": "b"}, None, 1, None)
    data = c.to_json()
    assert data["baseline"] == "old-batch"
    assert data["means"][0]["delta"] == pytest.approx(-1.0)
    assert data["means"][0]["before"]["n"] == 2 and data["means"][0]["after"]["mean"] == 0
    assert data["newly_failing"] == [
        {"run_id": "breaks", "job": "j", "before": "succeeded", "after": "failed"}
    ]


def test_identical_batches_compare_as_no_change() -> None:
    rows = [row("r", "succeeded", 2)]
    c = compare_rows("same", rows, rows)
    assert c.changed == () and c.only_here == () and c.only_there == ()
    assert [m.delta for m in c.means] == [0.0]


def rate_scan(cells: dict[str, tuple[int, int]]) -> SampleScan:
    """Samples of a 0/1 field `refused`: per cell V=value, (refusals, samples)."""
    scan = SampleScan()
    for variant, (refused, n) in cells.items():
        summary = Summary()
        for i in range(n):
            summary.add(1.0 if i < refused else 0.0)
        scan.cells[("j", (variant,))] = {"refused": summary}
    return scan


def sampled_rows() -> list[ResultRow]:
    return [row("ra", "succeeded", variant="a"), row("rb", "succeeded", variant="b")]


def test_a_rate_that_moved_by_half_is_marked_and_noise_is_not() -> None:
    before = results(sampled_rows(), rate_scan({"a": (20, 100), "b": (50, 100)}))
    after = results(sampled_rows(), rate_scan({"a": (70, 100), "b": (54, 100)}))
    c = compare_results("old", before, after)
    moved, noise = c.means
    assert (moved.cell, moved.marked, noise.cell, noise.marked) == (
        {"V": "a"},
        True,
        {"V": "b"},
        False,
    )
    change = moved.change
    assert change is not None and change.low is not None and change.high is not None
    assert change.delta == pytest.approx(0.5) and 0.3 < change.low < 0.5 < change.high < 0.7
    data = c.to_json()
    assert data["marked"] == 1
    first = data["means"][0]
    assert (first["before"]["n"], first["before"]["method"], first["excludes_zero"]) == (
        100,
        "wilson",
        True,
    )
    assert first["delta_low"] == pytest.approx(change.low)


def test_an_identical_rerun_marks_nothing() -> None:
    scan = rate_scan({"a": (20, 100), "b": (50, 100)})
    c = compare_results("same", results(sampled_rows(), scan), results(sampled_rows(), scan))
    assert [m.marked for m in c.means] == [False, False]
    assert [m.delta for m in c.means] == [0.0, 0.0]
