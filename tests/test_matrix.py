"""matrix: per job, cells of matrix values with succeeded/total and numeric result means."""

from __future__ import annotations

from safeagents_batch.report.matrix import job_matrices
from safeagents_batch.report.results import ResultFile, ResultRow, Scalar


def row(job: str, status: str, fields: dict[str, Scalar], **matrix: str) -> ResultRow:
    return ResultRow({"run_id": "x", "job": job, "status": status}, matrix, ResultFile(fields))


def test_repeats_share_a_cell_with_counts_and_means_of_numbers_and_booleans() -> None:
    rows = [
        row("j", "succeeded", {"score": 1, "refused": True, "label": "a"}, V="x", M="s"),
        row("j", "succeeded", {"score": 3, "refused": False}, V="x", M="s"),
        row("j", "failed", {}, V="x", M="s"),
        row("j", "succeeded", {"score": 10}, V="y", M="s"),
        row("j", "succeeded", {"score": 4}, V="x", M="l"),
    ]
    [matrix] = job_matrices(rows)
    assert matrix.variables == ("V", "M")
    assert matrix.fields == ("score", "refused")
    cell = matrix.cell("x", ("s",))
    assert cell is not None
    assert (cell.succeeded, cell.total) == (2, 3)
    assert cell.means == {"score": 2.0, "refused": 0.5}
    other = matrix.cell("y", ("s",))
    assert other is not None and other.means == {"score": 10.0}
    assert matrix.row_keys == ["x", "y"]
    assert matrix.column_keys == [("s",), ("l",)]
    assert matrix.column_label(("l",)) == "M=l"
    assert matrix.cell("y", ("l",)) is None


def test_a_job_without_a_matrix_is_one_cell_and_jobs_keep_their_order() -> None:
    rows = [row("b", "succeeded", {}), row("a", "failed", {"s": 1}), row("b", "failed", {})]
    first, second = job_matrices(rows)
    assert (first.job, second.job) == ("b", "a")
    assert first.variables == () and first.row_keys == [""] and first.column_keys == [()]
    cell = first.cell("", ())
    assert cell is not None and (cell.succeeded, cell.total) == (1, 2)
