"""compare: status changes matched by run id, and the change of each mean per cell."""

from __future__ import annotations

import pytest

from safeagents_batch.report.compare import compare_rows
from safeagents_batch.report.results import ResultFile, ResultRow, Scalar


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
    assert data["newly_failing"] == [
        {"run_id": "breaks", "job": "j", "before": "succeeded", "after": "failed"}
    ]


def test_identical_batches_compare_as_no_change() -> None:
    rows = [row("r", "succeeded", 2)]
    c = compare_rows("same", rows, rows)
    assert c.changed == () and c.only_here == () and c.only_there == ()
    assert [m.delta for m in c.means] == [0.0]
