"""cli_output: LineProgress and BarProgress stay quiet at scale; runs that never started are
one summary line; the bar counts cancelled apart from failed and stops where the batch did."""

from __future__ import annotations

import io

import pytest
import records

from safeagents_batch.cli.output import BarProgress, ConsoleReporter, LineProgress
from safeagents_batch.records.model import RunRecord, Status


def run(run_id: str, status: Status = "succeeded") -> RunRecord:
    """A run that started: one attempt ending in `status`."""
    error = None if status == "succeeded" else f"it {status}"
    return records.run(run_id, records.attempt(1, status, exit_code=0, error=error))


def never_started(run_id: str, status: Status = "cancelled") -> RunRecord:
    record = records.run(run_id)
    if status == "pending":
        return record
    return record.not_started(status, "cancelled before it started")


def lines_of(progress: LineProgress, records: list[RunRecord]) -> list[str]:
    stream = progress.stream
    assert isinstance(stream, io.StringIO)
    for record in records:
        progress.finished(record)
    progress.close()
    return stream.getvalue().splitlines()


def test_a_small_batch_has_a_line_per_run() -> None:
    records = [run(f"r{i:02}") for i in range(11)] + [run("r11", "failed")]
    lines = lines_of(LineProgress(12, io.StringIO()), records)
    assert len(lines) == 12
    assert lines[0] == "[ 1/12] succeeded r00 1.5s"
    assert lines[-1] == "[12/12] failed    r11 1.5s  (it failed)"


def test_a_thousand_succeeded_runs_print_a_line_per_twentieth() -> None:
    records = [run(f"r{i}") for i in range(1000)]
    lines = lines_of(LineProgress(1000, io.StringIO()), records)
    assert 1 <= len(lines) <= 25
    assert lines[-1] == "[1000/1000] 1000 succeeded"
    assert not any("r5" in line for line in lines)  # no line names a run


def test_each_failure_of_a_big_batch_has_its_line() -> None:
    bad: dict[str, Status] = {"r17": "failed", "r500": "timed_out", "r999": "error"}
    records = [run(f"r{i}", bad.get(f"r{i}", "succeeded")) for i in range(1000)]
    lines = lines_of(LineProgress(1000, io.StringIO()), records)
    assert len(lines) <= 25 + len(bad)
    for run_id, status in bad.items():
        (line,) = [x for x in lines if f" {run_id} " in x]
        assert status in line and f"(it {status})" in line


def test_runs_cancelled_before_they_started_are_one_line() -> None:
    records = [run(f"ok{i}") for i in range(18)]
    records += [never_started(f"never{i}") for i in range(82)]
    lines = lines_of(LineProgress(100, io.StringIO()), records)
    assert len(lines) == 18 + 1
    assert lines[-1] == "runs not started: 82 cancelled before they started"
    assert [x for x in lines if "82" in x] == [lines[-1]]
    assert not any("never" in line for line in lines)


def test_runs_left_pending_are_one_line_too() -> None:
    records = [run("ok")] + [never_started(f"p{i}", "pending") for i in range(40)]
    records += [never_started(f"c{i}") for i in range(5)]
    lines = lines_of(LineProgress(46, io.StringIO()), records)
    assert lines[1:] == [
        "runs not started: 5 cancelled before they started; 40 not started (still pending)"
    ]
    assert len(lines) == 2


def test_a_run_cancelled_while_it_ran_has_its_own_line() -> None:
    lines = lines_of(LineProgress(2, io.StringIO()), [run("a", "cancelled"), never_started("b")])
    assert lines == [
        "[1/2] cancelled a 1.5s  (it cancelled)",
        "runs not started: 1 cancelled before they started",
    ]


def test_nothing_unstarted_no_summary_line() -> None:
    lines = lines_of(LineProgress(3, io.StringIO()), [run("a"), run("b"), run("c")])
    assert len(lines) == 3 and not any("not started" in line for line in lines)


# -- the bar ------------------------------------------------------------------------------


def test_the_bar_counts_cancelled_apart_and_stops_where_the_batch_stopped() -> None:
    stream = io.StringIO()
    progress = BarProgress(100, stream)
    for i in range(12):
        progress.finished(run(f"ok{i}"))
    ended: list[Status] = ["failed", "timed_out", "cancelled"]
    for status in ended:
        progress.finished(run(f"r-{status}", status))
    for i in range(82):
        progress.finished(never_started(f"never{i}"))
    for i in range(3):
        progress.finished(never_started(f"wait{i}", "pending"))

    assert progress.bar.n == 15  # never-started runs do not move it
    postfix = str(progress.bar.postfix)
    assert set(postfix.split(", ")) == {"ok=12", "failed=2", "cancelled=1"}

    progress.close()
    text = stream.getvalue()
    summary = "runs not started: 82 cancelled before they started; 3 not started (still pending)"
    assert text.splitlines()[-1] == summary
    # (not a bare "82": the bar's rate, e.g. "82.1run/s", may hold it too)
    assert text.count("82 cancelled") == 1 and "100/100" not in text and "15/100" in text


def test_the_bar_without_unstarted_runs_ends_without_a_summary() -> None:
    stream = io.StringIO()
    progress = BarProgress(2, stream)
    progress.finished(run("a"))
    progress.finished(run("b"))
    progress.close()
    assert progress.bar.n == 2
    assert "not started" not in stream.getvalue()


def test_a_failed_run_is_named_on_the_bar_stream(capsys: pytest.CaptureFixture[str]) -> None:
    stream = io.StringIO()
    progress = BarProgress(2, stream)
    progress.finished(run("bad", "failed"))
    progress.close()
    assert "failed: bad  (it failed)" in stream.getvalue()
    assert capsys.readouterr().out == ""


def test_the_first_finished_run_calls_the_hook_once() -> None:
    calls: list[str] = []
    reporter = ConsoleReporter(bar=False, on_first_finish=lambda: calls.append("warm"))
    progress = reporter.progress(3)
    assert calls == []
    for n in range(3):
        progress.finished(run(f"r{n}"))
    progress.close()
    assert calls == ["warm"]
