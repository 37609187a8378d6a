"""Samples (report/samples.py) and the statistics they feed (report/stats.py), on batches of
the in-memory backend: results.jsonl per run becomes samples.csv/samples.jsonl with the run's
columns first, malformed lines are counted not fatal, and the matrix counts samples."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import pytest
from conftest import Project
from fakes import Behaviour, tar_of
from report_batches import run_fake_batch

from safeagents_batch.jobs.plan import RunSpec
from safeagents_batch.report import samples as samples_module
from safeagents_batch.report.batch import open_batch, read_results
from safeagents_batch.report.page import write_report
from safeagents_batch.report.stats import Summary, difference, t_quantile, wilson

GRID = """\
version: 1
frameworks:
  plain: {packages: []}
jobs:
  - name: grid
    framework: plain
    scripts: [scripts/a.py]
    matrix: {VARIANT: [benign, harmful], MODEL: [small, large]}
    repeat: 2
"""


def writes_samples(lines: list[bytes], result: dict[str, object] | None = None) -> Behaviour:
    files = {"results.jsonl": b"".join(line + b"\n" for line in lines)}
    if result is not None:
        files["result.json"] = json.dumps(result).encode()
    return Behaviour(stdout=b"done\n", artifacts=tar_of(files))


def fifty(spec: RunSpec) -> Behaviour:
    """50 samples a run; harmful ones refused at 0.8, benign at 0.2 (by sample number)."""
    rate = 0.8 if dict(spec.matrix_env)["VARIANT"] == "harmful" else 0.2
    lines = [
        json.dumps({"sample_id": f"t{i}", "refused": i < rate * 50, "score": i % 5}).encode()
        for i in range(50)
    ]
    return writes_samples(lines, {"refused": True})


def test_every_sample_is_a_row_with_its_runs_columns_first(project: Project) -> None:
    batch = run_fake_batch(project, fifty, GRID)
    write_report(batch)
    with (batch / "samples.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 50 * 8
    assert list(rows[0])[:8] == [
        "run_id",
        "job",
        "VARIANT",
        "MODEL",
        "attempt",
        "status",
        "sample_id",
        "refused",
    ]
    first = rows[0]
    assert (first["job"], first["status"], first["attempt"], first["sample_id"]) == (
        "grid",
        "succeeded",
        "1",
        "t0",
    )
    lines = (batch / "samples.jsonl").read_text("utf-8").splitlines()
    assert len(lines) == 400 and json.loads(lines[0])["refused"] is True


def test_the_matrix_counts_samples_with_intervals(project: Project) -> None:
    batch = run_fake_batch(project, fifty, GRID)
    view = open_batch(batch)
    try:
        [matrix] = read_results(view).matrices
    finally:
        view.close()
    harmful = next(c for c in matrix.cells if c.key == ("harmful", "small"))
    refused = harmful.stats["refused"]
    # Two repeats of 50 samples: the run's own result.json (one value) is not what counts.
    assert harmful.over_samples and refused.n == 100 and refused.mean == pytest.approx(0.8)
    assert refused.method == "wilson"
    assert (refused.low, refused.high) == pytest.approx(wilson(80, 100))
    score = harmful.stats["score"]
    assert score.method == "t" and score.n == 100 and score.mean == pytest.approx(2.0)
    assert score.low is not None and score.low < 2.0 < (score.high or 0)


def test_a_page_shows_each_cells_count_mean_and_interval(project: Project) -> None:
    batch = run_fake_batch(project, fifty, GRID)
    html = write_report(batch).html.read_text("utf-8")
    low, high = wilson(80, 100)
    assert f'0.8 <span class="ci">[{low:.3g}, {high:.3g}]</span>' in html
    assert "n=100" in html and "means over samples" in html
    assert '<a href="samples.csv">samples.csv</a> <span class="dim">400 samples</span>' in html


def test_malformed_lines_are_counted_in_the_runs_note_and_the_rest_kept(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(samples_module, "MAX_LINE_BYTES", 64)
    lines = [
        b'{"id": 1, "refused": true}',
        b"not json",
        b'{"id": 2, "pad": "' + b"x" * 100 + b'"}',  # over the (lowered) line cap
        b"[1, 2]",
        b"",
        b'{"id": 3, "refused": false, "=cmd": "=HYPERLINK(1)"}',
    ]
    batch = run_fake_batch(project, lambda spec: writes_samples(lines), GRID)
    write_report(batch)
    rows = list(csv.DictReader((batch / "samples.csv").open(newline="", encoding="utf-8")))
    assert [r["sample_id"] for r in rows[:2]] == ["1", "3"]
    # A cell that would run as a formula in a spreadsheet is quoted, as in results.csv.
    assert rows[1]["'=cmd"] == "'=HYPERLINK(1)"
    view = open_batch(batch)
    try:
        results = read_results(view)
    finally:
        view.close()
    note = next(iter(results.samples.notes.values()))
    assert note.startswith("3 sample line(s) not read; the first: results.jsonl:2: not valid JSON")


def test_a_run_without_samples_counts_its_result_and_no_sample_files_appear(
    project: Project,
) -> None:
    batch = run_fake_batch(
        project,
        lambda spec: Behaviour(artifacts=tar_of({"result.json": b'{"refused": true}'})),
        GRID,
    )
    write_report(batch)
    assert not (batch / "samples.csv").exists()
    view = open_batch(batch)
    try:
        [matrix] = read_results(view).matrices
    finally:
        view.close()
    cell = matrix.cells[0]
    assert not cell.over_samples and cell.stats["refused"].n == 2


def test_a_planted_link_is_not_read(project: Project, tmp_path: Path) -> None:
    batch = run_fake_batch(project, fifty, GRID)
    secret = tmp_path / "secret.jsonl"
    secret.write_text('{"id": "stolen"}\n')
    [first] = sorted(batch.glob("runs/*/attempt-1/results.jsonl"))[:1]
    first.unlink()
    first.symlink_to(secret)
    write_report(batch)
    assert "stolen" not in (batch / "samples.csv").read_text("utf-8")


# -- the statistics, against published values --------------------------------------------------


def test_wilson_and_t_match_published_values() -> None:
    assert wilson(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert [round(t_quantile(df), 4) for df in (1, 9, 30, 31, 100)] == [
        12.7062,
        2.2622,
        2.0423,
        2.0395,
        1.984,
    ]


def test_newcombes_interval_matches_his_example() -> None:
    """Newcombe (1998), example (a): 56/70 against 48/80 gives 0.0524 to 0.3339."""
    before, after = Summary(), Summary()
    for i in range(80):
        before.add(1.0 if i < 48 else 0.0)
    for i in range(70):
        after.add(1.0 if i < 56 else 0.0)
    change = difference(before.estimate(), after.estimate())
    assert (change.delta, change.low, change.high) == pytest.approx((0.2, 0.0524, 0.3339), abs=1e-4)
    assert change.excludes_zero


def test_summaries_merge_as_if_taken_together() -> None:
    values = [1.0, 2.5, 3.0, 7.25, -1.0, 4.0]
    whole, left, right = Summary(), Summary(), Summary()
    for v in values:
        whole.add(v)
    for v in values[:2]:
        left.add(v)
    for v in values[2:]:
        right.add(v)
    left.merge(right)
    assert (left.n, left.mean, left.variance) == pytest.approx(
        (whole.n, whole.mean, whole.variance)
    )
    estimate = whole.estimate()
    half = t_quantile(5) * math.sqrt(whole.variance / 6)
    assert (estimate.low, estimate.high) == pytest.approx((whole.mean - half, whole.mean + half))
    assert not whole.binary


def test_numbers_too_large_to_average_never_reach_a_mean_or_the_page(project: Project) -> None:
    """Squares of 1e308 overflow: a mean and interval of them would be inf or NaN, and a NaN
    in the page's data leaves the page dead. Such numbers are carried, not averaged."""

    def huge(spec: RunSpec) -> Behaviour:
        sign = 1 if spec.repeat_index == 1 else -1
        lines = [json.dumps({"id": i, "x": sign * 1e308, "ok": 1.0}).encode() for i in range(3)]
        return writes_samples(lines, {"y": sign * 1e308})

    batch = run_fake_batch(project, huge, GRID)
    files = write_report(batch)
    view = open_batch(batch)
    try:
        [matrix] = read_results(view).matrices
    finally:
        view.close()
    assert matrix.fields == ("ok",)  # x is in samples.csv, not in a mean
    html = files.html.read_text("utf-8")
    found = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html)
    assert found is not None

    def refuse(name: str) -> None:
        raise AssertionError(f"{name} in the page's data")

    json.loads(found.group(1), parse_constant=refuse)  # strict JSON, as JSON.parse wants it
    rows = list(csv.DictReader((batch / "samples.csv").open(newline="", encoding="utf-8")))
    assert float(rows[0]["x"]) in (1e308, -1e308)


def test_a_field_that_looks_prefixed_gets_a_column_of_its_own(project: Project) -> None:
    line = json.dumps({"id": 1, "status": "mine", "sample": {"status": "nested"}}).encode()
    batch = run_fake_batch(project, lambda spec: writes_samples([line]), GRID)
    write_report(batch)
    with (batch / "samples.csv").open(newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle))
    assert len(header) == len(set(header))
    first = json.loads((batch / "samples.jsonl").read_text("utf-8").splitlines()[0])
    assert (first["status"], first["sample.status"], first["sample.sample.status"]) == (
        "succeeded",
        "mine",
        "nested",
    )


def test_sample_files_of_an_earlier_report_go_when_there_are_none_now(project: Project) -> None:
    batch = run_fake_batch(project, fifty, GRID)
    write_report(batch)
    for path in batch.glob("runs/*/attempt-1/results.jsonl"):
        path.unlink()
    write_report(batch)
    assert not (batch / "samples.csv").exists() and not (batch / "samples.jsonl").exists()
