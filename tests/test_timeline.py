"""timeline: each attempt's start and end from the batch's start, in lanes rebuilt per node by
greedy packing (no browser: the chart's own test is tests/test_report_charts_browser.py)."""

from __future__ import annotations

import records as made

from safeagents_batch.records.manifest import JobsFileRecord, Manifest
from safeagents_batch.records.model import Attempt, RunRecord, Status
from safeagents_batch.report.timeline import attempt_lanes, pack

CREATED = "2026-01-01T00:00:00+00:00"


def at(second: float) -> str:
    """A timestamp `second` seconds after CREATED, as the tool writes them."""
    minutes, rest = divmod(second, 60)
    return f"2026-01-01T00:{int(minutes):02d}:{rest:06.3f}+00:00"


def attempt(
    start: float,
    end: float | None,
    number: int = 1,
    node: dict[str, str] | None = None,
    status: Status = "succeeded",
) -> Attempt:
    ended = at(end) if end is not None else at(start)
    state: Status = "running" if end is None else status
    return made.attempt(number, state, started=at(start), ended=ended, node=node)


def manifest(*runs: RunRecord, created: str = CREATED) -> Manifest:
    return Manifest(
        batch_id="b-1",
        batch_dir="/x/b-1",
        jobs_file=JobsFileRecord(path="/x/jobs.yaml", sha256="0" * 64),
        created_at=created,
        runs={r.run_id: r for r in runs},
    )


def lanes(entries: list[dict[str, object]]) -> dict[str, str]:
    return {f"{e['run']}#{e['n']}": str(e["lane"]) for e in entries}


def test_an_attempt_is_its_run_number_status_and_seconds_from_the_batch_start() -> None:
    entries = attempt_lanes(
        manifest(
            made.run("a", attempt(1.5, 4.25, status="failed"), attempt(5, 7, number=2)),
            made.run("b", attempt(2, None)),
        )
    )
    assert entries == [
        {"run": "a", "n": 1, "st": "failed", "t0": 1.5, "t1": 4.25, "lane": "local · slot 1"},
        {"run": "a", "n": 2, "st": "succeeded", "t0": 5.0, "t1": 7.0, "lane": "local · slot 1"},
        {"run": "b", "n": 1, "st": "running", "t0": 2.0, "t1": None, "lane": "local · slot 2"},
    ]


def test_no_attempt_no_entry() -> None:
    assert attempt_lanes(manifest()) == []
    assert attempt_lanes(manifest(made.run("a"))) == []


def test_each_attempt_takes_the_lowest_slot_free_at_its_start() -> None:
    entries = attempt_lanes(
        manifest(
            made.run("a", attempt(0, 10)),
            made.run("b", attempt(0, 3)),
            made.run("c", attempt(1, 5)),
            made.run("d", attempt(3, 4)),  # b's slot ended at 3: free again at 3
            made.run("e", attempt(6, 8)),  # slots 2 and 3 free: the lower one
        )
    )
    assert [e["lane"].split(" · ")[1] for e in entries] == [
        "slot 1",
        "slot 2",
        "slot 3",
        "slot 2",
        "slot 2",
    ]


def test_a_running_attempt_keeps_its_slot() -> None:
    assert dict(pack([(0.0, None), (5.0, 6.0), (7.0, 8.0)])) == {0: 1, 1: 2, 2: 2}
    assert dict(pack([])) == {}


def test_nodes_have_lanes_of_their_own_named_by_host() -> None:
    one = {"node_id": "aaaaaaaaaaaa1111", "host": "gpu-1", "engine": "unix:///x"}
    two = {"node_id": "bbbbbbbbbbbb2222", "host": "gpu-2", "engine": "unix:///x"}
    entries = attempt_lanes(
        manifest(
            made.run("a", attempt(0, 10, node=one)),
            made.run("b", attempt(0, 10, node=two)),
            made.run("c", attempt(1, 10, node=one)),
            made.run("d", attempt(2, None)),  # running: its node is not known yet
        )
    )
    assert lanes(entries) == {
        "a#1": "gpu-1 · slot 1",
        "b#1": "gpu-2 · slot 1",
        "c#1": "gpu-1 · slot 2",
        "d#1": "node unknown · slot 1",
    }


def test_nodes_on_one_host_are_told_apart_by_id_and_a_node_without_host_by_its_id() -> None:
    one = {"node_id": "aaaaaaaaaaaa1111", "host": "box"}
    two = {"node_id": "bbbbbbbbbbbb2222", "host": "box"}
    bare = {"node_id": "cccccccccccc3333"}
    entries = attempt_lanes(
        manifest(
            made.run("a", attempt(0, 1, node=one)),
            made.run("b", attempt(0, 1, node=two)),
            made.run("c", attempt(0, 1, node=bare)),
        )
    )
    assert lanes(entries) == {
        "a#1": "box aaaaaaaa · slot 1",
        "b#1": "box bbbbbbbb · slot 1",
        "c#1": "cccccccc · slot 1",
    }


def test_the_batch_starts_at_its_creation_or_its_first_attempt_if_earlier() -> None:
    late = manifest(made.run("a", attempt(30, 40)), created=at(10))
    assert attempt_lanes(late)[0] | {"lane": ""} == {
        "run": "a", "n": 1, "st": "succeeded", "t0": 20.0, "t1": 30.0, "lane": ""
    }  # fmt: skip
    early = manifest(made.run("a", attempt(5, 6)), created=at(10))
    assert (attempt_lanes(early)[0]["t0"], attempt_lanes(early)[0]["t1"]) == (0.0, 1.0)


def test_an_unreadable_start_is_left_out_and_an_end_before_the_start_is_the_start() -> None:
    broken = Attempt(number=1, log_dir="logs", started_at="yesterday")  # running
    skewed = attempt(5, 4)  # another clock's end
    entries = attempt_lanes(manifest(made.run("a", broken), made.run("b", skewed)))
    assert [(e["run"], e["t0"], e["t1"]) for e in entries] == [("b", 5.0, 5.0)]


def test_10000_runs_at_once_take_10000_lanes_and_later_ones_reuse_them() -> None:
    """The scale of a big batch (its cost is measured with benchmarks/report_open.py's report,
    never asserted): 8 runs every 2 s lasting 1.5 to 3.5 s, then all 10,000 retried at once."""
    runs = [
        made.run(f"r{i}", attempt(i // 8 * 2.0, i // 8 * 2.0 + 1.5 + i % 3), attempt(3000, 3001, 2))
        for i in range(10_000)
    ]
    entries = attempt_lanes(manifest(*runs))
    assert len(entries) == 20_000
    first = {e["lane"] for e in entries if e["n"] == 1}
    # As many lanes as runs overlap at most: the 8 starting, and those of the 8 before them
    # that last 2.5 s or 3.5 s (i % 3 != 0: 6 of 8 consecutive ones at most).
    assert len(first) == 14
    assert len({e["lane"] for e in entries}) == 10_000
