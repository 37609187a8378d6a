"""executor: the Scheduler (which run starts next, within per-job and pool limits) and
run_pool with limits, on threads held by Events. No engine, no timing assertions."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping

import records

from safeagents_batch.execution.executor import Limits, Scheduler, run_pool
from safeagents_batch.execution.reporting import SilentProgress
from safeagents_batch.records.model import RunRecord

PATIENCE_SECONDS = 10.0  # a bound on every wait for the other threads, never asserted on


def limits(capacity: dict[str, int], keys: Mapping[str, tuple[str, ...]]) -> Limits:
    return Limits(capacity, lambda run_id: keys.get(run_id, ()))


def take_all(scheduler: Scheduler, **options: bool) -> list[str]:
    """Runs taken until none may start now."""
    taken = []
    while (run_id := scheduler.take(**options)) is not None:
        taken.append(run_id)
    return taken


def test_without_limits_runs_start_in_batch_order() -> None:
    run_ids = [f"r{i}" for i in (5, 1, 9, 0, 3)]
    scheduler = Scheduler(run_ids, Limits())
    assert take_all(scheduler) == run_ids
    assert scheduler.pending == 0
    assert scheduler.take() is None


def test_a_job_at_its_limit_does_not_block_other_jobs() -> None:
    run_ids = ["a-1", "a-2", "a-3", "b-1", "b-2", "c-1"]
    keys = {"a-1": ("job:a",), "a-2": ("job:a",), "a-3": ("job:a",)}
    scheduler = Scheduler(run_ids, limits({"job:a": 1}, keys))

    assert take_all(scheduler) == ["a-1", "b-1", "b-2", "c-1"]
    assert scheduler.pending == 2

    scheduler.release("b-1")  # another job's run ending frees nothing of job a
    assert scheduler.take() is None
    scheduler.release("a-1")  # its own run ending frees its key
    assert take_all(scheduler) == ["a-2"]
    scheduler.release("a-2")
    assert take_all(scheduler) == ["a-3"]
    assert scheduler.pending == 0


def test_the_next_run_is_the_first_in_batch_order_among_those_with_room() -> None:
    run_ids = ["a-1", "b-1", "a-2", "b-2", "a-3", "c-1"]
    keys = {r: (f"job:{r[0]}",) for r in run_ids if r[0] in "ab"}
    scheduler = Scheduler(run_ids, limits({"job:a": 2, "job:b": 1}, keys))
    assert take_all(scheduler) == ["a-1", "b-1", "a-2", "c-1"]
    scheduler.release("a-1")
    scheduler.release("b-1")
    assert take_all(scheduler) == ["b-2", "a-3"]  # batch order among the freed


def test_a_pool_is_shared_between_jobs() -> None:
    run_ids = ["x-1", "y-1", "x-2", "y-2", "z-1"]
    keys = {r: ("pool:api",) for r in run_ids if r[0] in "xy"}
    scheduler = Scheduler(run_ids, limits({"pool:api": 2}, keys))

    assert take_all(scheduler) == ["x-1", "y-1", "z-1"]
    assert scheduler.running["pool:api"] == 2
    scheduler.release("y-1")  # a run of job y frees room for job x
    assert take_all(scheduler) == ["x-2"]
    scheduler.release("x-1")
    assert take_all(scheduler) == ["y-2"]


def test_a_run_needs_room_in_its_job_limit_and_its_pool() -> None:
    run_ids = ["a-1", "a-2", "b-1", "b-2"]
    keys = {
        "a-1": ("job:a", "pool:api"),
        "a-2": ("job:a", "pool:api"),
        "b-1": ("pool:api",),
        "b-2": ("pool:api",),
    }
    scheduler = Scheduler(run_ids, limits({"job:a": 1, "pool:api": 3}, keys))
    assert take_all(scheduler) == ["a-1", "b-1", "b-2"]  # a-2: its job is full
    scheduler.release("b-1")
    assert scheduler.take() is None  # the pool has room, the job has not
    scheduler.release("a-1")
    assert take_all(scheduler) == ["a-2"]
    assert scheduler.running == Counter({"job:a": 1, "pool:api": 2})


def test_ignore_limits_hands_out_every_run_in_batch_order() -> None:
    """After a cancel, the runs left go at once (they are recorded as not started)."""
    run_ids = ["a-1", "a-2", "b-1", "a-3"]
    keys = {r: ("job:a",) for r in run_ids if r.startswith("a")}
    scheduler = Scheduler(run_ids, limits({"job:a": 1}, keys))
    assert take_all(scheduler) == ["a-1", "b-1"]
    assert take_all(scheduler, ignore_limits=True) == ["a-2", "a-3"]
    assert scheduler.pending == 0


# -- run_pool with limits --------------------------------------------------------------


def record(run_id: str) -> RunRecord:
    return records.run(run_id, records.attempt(1, "succeeded"))


class Concurrency:
    """Counts tasks in flight, per limit key and in all, and keeps each peak. The first tasks
    wait until `full` are in flight at once (or the patience runs out), so each limit is
    filled before any run ends: a limit not reached shows as a peak below its capacity."""

    def __init__(self, keys_of: Callable[[str], tuple[str, ...]], full: int) -> None:
        self.keys_of = keys_of
        self.full = full
        self.lock = threading.Lock()
        self.now: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self.crowded = threading.Event()
        self.ran: list[str] = []

    def task(self, run_id: str, cancel: threading.Event) -> RunRecord:
        keys = (*self.keys_of(run_id), "all")
        with self.lock:
            self.ran.append(run_id)
            self.now.update(keys)
            for key in keys:
                self.peak[key] = max(self.peak[key], self.now[key])
            if self.now["all"] >= self.full:
                self.crowded.set()
        self.crowded.wait(PATIENCE_SECONDS)
        time.sleep(0.001)  # let others start while this one still counts
        with self.lock:
            self.now.subtract(keys)
        return record(run_id)


def test_run_pool_never_exceeds_a_limit_and_fills_each_one() -> None:
    run_ids = [
        *(f"a-{i}" for i in range(5)),
        *(f"b-{i}" for i in range(4)),
        *(f"{job}-{i}" for i in range(4) for job in "cd"),  # c and d interleaved
        *(f"e-{i}" for i in range(6)),
    ]
    keys = {}
    for run_id in run_ids:
        job = run_id[0]
        keys[run_id] = {"a": ("job:a",), "b": ("job:b",), "e": ()}.get(job, ("pool:api",))
    capacity = {"job:a": 2, "job:b": 1, "pool:api": 3}
    given = limits(capacity, keys)
    counting = Concurrency(given.keys_of, full=8)  # 2 + 1 + 3, and 2 of job e: 8 workers

    records = run_pool(
        run_ids,
        counting.task,
        workers=8,
        progress=SilentProgress(),
        cancel=threading.Event(),
        limits=given,
    )

    assert sorted(r.run_id for r in records) == sorted(run_ids)
    assert sorted(counting.ran) == sorted(run_ids)  # each ran once
    assert {k: counting.peak[k] for k in capacity} == capacity  # reached, never exceeded
    assert counting.peak["all"] == 8
    assert counting.now == Counter({k: 0 for k in counting.now})


def test_run_pool_with_a_limit_of_one_runs_that_job_one_at_a_time() -> None:
    run_ids = [f"a-{i}" for i in range(6)] + [f"b-{i}" for i in range(3)]
    given = limits({"job:a": 1}, {r: ("job:a",) for r in run_ids if r[0] == "a"})
    counting = Concurrency(given.keys_of, full=4)  # one of a, all three of b

    records = run_pool(
        run_ids,
        counting.task,
        workers=8,
        progress=SilentProgress(),
        cancel=threading.Event(),
        limits=given,
    )

    assert len(records) == 9
    assert counting.peak["job:a"] == 1
    assert counting.peak["all"] == 4  # b's runs did not wait behind a's (no head-of-line)


def test_a_cancelled_pool_hands_out_the_runs_left_whatever_the_limits() -> None:
    run_ids = [f"a-{i}" for i in range(4)]
    given = limits({"job:a": 1}, {r: ("job:a",) for r in run_ids})
    cancel = threading.Event()
    seen: list[tuple[str, bool]] = []

    def task(run_id: str, cancel: threading.Event) -> RunRecord:
        seen.append((run_id, cancel.is_set()))
        cancel.set()  # the first run is interrupted
        return record(run_id)

    records = run_pool(
        run_ids, task, workers=4, progress=SilentProgress(), cancel=cancel, limits=given
    )

    assert len(records) == 4
    assert seen[0] == ("a-0", False)
    assert sorted(seen[1:]) == [("a-1", True), ("a-2", True), ("a-3", True)]
