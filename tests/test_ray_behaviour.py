"""What a batch on the real local cluster (tests/ray_cluster.py) does while and after it runs:
output reaches the driver's log files while the script still runs, on either node; the
artifact cap holds end to end; `max_parallel` and `pools` hold across the cluster, not per
node; a node's slots hold across two batches at once. Marked `ray` and `docker` (the nodes
run real containers); never skipped."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path

import docker
import pytest
from engine_cli import (
    EXIT_TIMEOUT,
    HOLD,
    SessionImage,
    containers_of,
    finish,
    read_stderr_until,
    runs_by_id,
    valid_manifest,
    wait_for,
)
from ray_cluster import LocalRayCluster
from records import outcome_of
from test_limits import most_at_once, spans
from test_ray_backend import only_batch
from test_ray_faults import start_ray_cli

from safeagents_batch.core.units import format_size
from safeagents_batch.records.manifest import load_manifest
from safeagents_batch.records.model import RunRecord

pytestmark = [pytest.mark.ray, pytest.mark.docker]

LOG_NAMES = {"console.log", "stdout.log", "stderr.log"}
# A line on each stream, then quiet while HOLD exists in its code snapshot (the node's cached
# copy, bind-mounted read-only: the test deletes the file there). Bounded: a script the test
# never releases ends `failed` after about a minute instead of hanging the batch.
HELD = (
    "import os, sys, time\n"
    "print('first out line', flush=True)\n"
    "print('first err line', file=sys.stderr, flush=True)\n"
    "for _ in range(600):\n"
    f"    if not os.path.exists('/safeagents/code/{HOLD}'):\n"
    "        print('released', flush=True)\n"
    "        break\n"
    "    time.sleep(0.1)\n"
    "else:\n"
    "    sys.exit('never released')\n"
)


def node_names(cluster: LocalRayCluster) -> dict[str | None, str]:
    return {cluster.nodes[name].node_id: name for name in ("host", "private")}


def release_all(cluster: LocalRayCluster, output: Path) -> None:
    """Deletes HOLD from every snapshot of the batch: the driver's and each node's copy."""
    caches = [node.cache / "code" for node in cluster.nodes.values() if node.cache is not None]
    for snapshot in output.glob("*/code/*"):
        for root in (snapshot.parent, *caches):
            (root / snapshot.name / HOLD).unlink(missing_ok=True)


def release_and_finish(
    cluster: LocalRayCluster, output: Path, proc: subprocess.Popen[str]
) -> tuple[int, str, str]:
    """Releases the held scripts until the batch ends (a node that unpacks the snapshot
    later gets the file back from the driver's tar), then its exit code and output."""
    for _ in range(int(EXIT_TIMEOUT / 0.2)):  # an upper bound for a hang, not a timing check
        release_all(cluster, output)
        try:
            out, err = proc.communicate(timeout=0.2)
            return proc.returncode, out, err
        except subprocess.TimeoutExpired:
            continue
    proc.kill()
    out, err = proc.communicate(timeout=EXIT_TIMEOUT)
    pytest.fail(f"the batch did not end once released:\n{out}\n{err}")


def read(path: Path) -> str:
    return path.read_text(errors="replace") if path.is_file() else ""


def assert_no_container(cluster: LocalRayCluster, host: docker.DockerClient, batch: Path) -> None:
    assert containers_of(host, batch) == []
    assert containers_of(cluster.private_engine.client(), batch) == []


# -- 1. output streams back while the run goes ------------------------------------------


def streamed_while_running(batch_dir: Path) -> dict[str, str]:
    """Runs the journal says are running whose three log files on the driver already hold
    the script's first lines; by run id, the attempt's log dir."""
    seen = {}
    for run in load_manifest(batch_dir).runs.values():
        attempt = run.latest
        if attempt is None or attempt.status != "running":
            continue
        log_dir = batch_dir / attempt.log_dir
        console = read(log_dir / "console.log")
        if (
            read(log_dir / "stdout.log") == "first out line\n"
            and read(log_dir / "stderr.log") == "first err line\n"
            # Both streams merged in arrival order, chunk by chunk: an unbuffered print's
            # newline can be its own chunk, with the other stream's line between them.
            and "first out line" in console
            and "first err line" in console
        ):
            seen[run.run_id] = attempt.log_dir
    return seen


def describe(batch_dir: Path) -> str:
    """Each run's state and log files as the test saw them (for a failure's message)."""
    lines = []
    for run in load_manifest(batch_dir).runs.values():
        attempt = run.latest
        if attempt is None:
            lines.append(f"{run.run_id}: {run.status}, no attempt")
            continue
        log_dir = batch_dir / attempt.log_dir
        files = {name: read(log_dir / name) for name in sorted(LOG_NAMES)}
        lines.append(f"{run.run_id}: {attempt.status} {files!r}")
    return "\n".join(lines)


def test_output_reaches_the_driver_while_the_script_runs_on_every_node(
    ray_cluster: LocalRayCluster,
    ray_image: SessionImage,
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    """Four held runs at -j 4 fill the cluster's four slots, two on each node: each run's
    first lines must be in the driver's files while it is still held."""
    jobs = ray_image.project(
        tmp_path / "p",
        "stream",
        "  - {name: q, framework: plain, scripts: q.py, repeat: 4, network: none}\n",
        {"q.py": HELD},
        held=True,
    )
    output = tmp_path / "out"
    proc = start_ray_cli(ray_cluster, ["run", str(jobs), "-o", str(output), "-j", "4"])
    seen: dict[str, str] = {}
    try:
        looked: list[str] = []

        def all_streamed() -> bool:
            batch_dir = next((p.parent for p in output.glob("*/manifest.json")), None)
            seen.update(streamed_while_running(batch_dir) if batch_dir else {})
            looked[:] = [describe(batch_dir)] if batch_dir else []
            return len(seen) == 4

        try:
            wait_for(all_streamed, "the first lines of 4 held runs in the driver's files", proc)
        except pytest.fail.Exception as failure:
            pytest.fail(f"{failure}\nseen while running: {seen}\nlast looked at: {looked}")
    finally:
        code, out, err = release_and_finish(ray_cluster, output, proc)

    assert code == 0, out + err
    batch_dir = only_batch(output)
    runs = runs_by_id(valid_manifest(batch_dir))
    assert sorted(seen) == sorted(runs)
    nodes = node_names(ray_cluster)
    used = {}
    for run_id, run in runs.items():
        [attempt] = run["attempts"]
        assert (run["status"], attempt["log_dir"]) == ("succeeded", seen[run_id]), run
        used[run_id] = nodes[outcome_of(attempt)["node"]["node_id"]]
        log_dir = batch_dir / attempt["log_dir"]
        assert read(log_dir / "stdout.log") == "first out line\nreleased\n"
        assert read(log_dir / "stderr.log") == "first err line\n"
        assert read(log_dir / "console.log").splitlines()[-1] == "released"
    # Four held at once on two slots a node: two on each, so each node streamed while held.
    assert sorted(used.values()) == ["host", "host", "private", "private"], used
    assert_no_container(ray_cluster, docker_client, batch_dir)


# -- 2. the artifact cap on the cluster -------------------------------------------------

CAP = 64 * 1024  # max_artifacts_size: 64k
SIZES = {
    "under": 20_000,  # under the cap: arrives whole
    "over": 200_000,  # over the cap: the node drops it, what follows arrives
    "far": 2 * 1024**2,  # far over: the same, and none of it crosses the network
}
# Deterministic bytes (a sha256 chain), so that the test knows what must arrive; then a small
# result after it in the archive (docker sorts names).
WRITER = (
    "import hashlib, os\n"
    "size = int(os.environ['SIZE'])\n"
    "blocks = (hashlib.sha256(i.to_bytes(8, 'big')).digest() for i in range(size // 32 + 1))\n"
    "with open('/safeagents/logs/data.bin', 'wb') as f:\n"
    "    f.write(b''.join(blocks)[:size])\n"
    "with open('/safeagents/logs/z-result.json', 'w') as f:\n"
    "    f.write('{\"score\": 1}')\n"
    "print('wrote', size, flush=True)\n"
)


def payload(size: int) -> bytes:
    blocks = (hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(size // 32 + 1))
    return b"".join(blocks)[:size]


def files_in(log_dir: Path) -> set[str]:
    return {p.relative_to(log_dir).as_posix() for p in log_dir.rglob("*")}


def test_the_artifact_cap_holds_on_the_cluster_and_what_follows_a_dropped_file_arrives(
    ray_cluster: LocalRayCluster,
    ray_image: SessionImage,
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    """As a local run: a file over the cap is dropped and named, the run stands, and the
    small result after it arrives; the node applies the rules, so the big file never leaves
    it."""
    body = "".join(
        f"  - {{name: {job}, framework: plain, scripts: w.py, repeat: 2, network: none,\n"
        f"     max_artifacts_size: 64k, env: {{SIZE: '{size}'}}}}\n"
        for job, size in SIZES.items()
    )
    jobs = ray_image.project(tmp_path / "p", "cap", body, {"w.py": WRITER})
    output = tmp_path / "out"
    code, out, err = finish(
        start_ray_cli(ray_cluster, ["run", str(jobs), "-o", str(output), "--no-progress"])
    )

    assert code == 0, out + err
    batch_dir = only_batch(output)
    runs = list(runs_by_id(valid_manifest(batch_dir)).values())
    assert sorted(r["job"] for r in runs) == sorted([*SIZES] * 2)
    nodes = node_names(ray_cluster)
    for run in runs:
        [attempt] = run["attempts"]
        where = f"{run['run_id']} on {nodes[outcome_of(attempt)['node']['node_id']]}"
        log_dir = batch_dir / attempt["log_dir"]
        size = SIZES[run["job"]]
        assert read(log_dir / "stdout.log") == f"wrote {size}\n", where
        assert run["status"] == "succeeded", where
        assert read(log_dir / "z-result.json") == '{"score": 1}', where
        if run["job"] == "under":
            assert attempt["dropped_artifacts"] == [], where
            assert files_in(log_dir) == {*LOG_NAMES, "data.bin", "z-result.json"}, where
            assert (log_dir / "data.bin").read_bytes() == payload(size), where
        else:
            assert attempt["dropped_artifacts"] == [
                f"data.bin: {format_size(size)}, over the artifact limit of 64.0 KiB "
                "(archive bytes, headers included)",
            ], where
            assert files_in(log_dir) == {*LOG_NAMES, "z-result.json"}, where
    assert_no_container(ray_cluster, docker_client, batch_dir)


# -- 3. max_parallel and pools across the cluster ---------------------------------------

# `one` may run one at a time, `x` and `y` two between them (pool `api`); `free` has no limit.
LIMITED = (
    "  - {name: one, framework: plain, scripts: held.py, repeat: 3, network: none,\n"
    "     max_parallel: 1}\n"
    "  - {name: x, framework: plain, scripts: held.py, repeat: 3, network: none, pool: api}\n"
    "  - {name: y, framework: plain, scripts: held.py, repeat: 3, network: none, pool: api}\n"
    "  - {name: free, framework: plain, scripts: free.py, repeat: 2, network: none}\n"
)


def batch_runs(output: Path) -> tuple[Path, list[RunRecord]] | None:
    """The batch dir under `output` and its runs, once its manifest is written."""
    batch_dir = next((p.parent for p in output.glob("*/manifest.json")), None)
    if batch_dir is None:
        return None
    return batch_dir, list(load_manifest(batch_dir).runs.values())


def on_runs(output: Path, check: Callable[[Path, list[RunRecord]], bool]) -> Callable[[], bool]:
    """A wait_for condition on the batch dir under `output` and its runs: false until its
    manifest is written."""

    def condition() -> bool:
        found = batch_runs(output)
        return found is not None and check(*found)

    return condition


def all_holding(batch_dir: Path, runs: Iterable[RunRecord]) -> bool:
    """Every one of `runs` printed its first line: its script is held, not starting."""
    return all(
        "first out line" in read(batch_dir / r.latest.log_dir / "stdout.log")
        for r in runs
        if r.latest is not None
    )


def of_jobs(runs: Iterable[RunRecord], *names: str) -> list[RunRecord]:
    return [r for r in runs if r.job in names]


def test_max_parallel_and_pools_hold_across_the_cluster(
    ray_cluster: LocalRayCluster,
    ray_image: SessionImage,
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    """While the limited runs are held, both `free` runs get a slot and end: a worker and a
    cluster slot are idle, yet only one run of `one` and two of the pool run (three in all,
    more than a node's two slots: the limits are the driver's, across nodes). Once released,
    the recorded intervals never overlap more than each limit."""
    jobs = ray_image.project(
        tmp_path / "p",
        "limits",
        LIMITED,
        {"held.py": HELD, "free.py": "print('free')\n"},
        held=True,
    )
    jobs.write_text(jobs.read_text().replace("jobs:\n", "pools: {api: 2}\njobs:\n", 1))
    output = tmp_path / "out"
    proc = start_ray_cli(ray_cluster, ["run", str(jobs), "-o", str(output), "-j", "4"])
    held: list[RunRecord] = []
    try:

        def steady(batch_dir: Path, runs: list[RunRecord]) -> bool:
            """Both free runs done while three limited ones hold; or a limit broken."""
            held[:] = [r for r in runs if r.status == "running"]
            if len(of_jobs(held, "one")) > 1 or len(of_jobs(held, "x", "y")) > 2:
                return True  # the assertions below say which
            holding = all_holding(batch_dir, held)
            free_done = [r.status for r in of_jobs(runs, "free")] == ["succeeded"] * 2
            return free_done and holding and len(held) == 3

        wait_for(on_runs(output, steady), "both free runs done while 3 limited runs hold", proc)
        # A worker of -j 4 and a slot stood idle: the runs left wait for their limits alone.
        running = sorted(r.run_id for r in held)
        assert len(of_jobs(held, "one")) == 1, running
        assert len(of_jobs(held, "x", "y")) == 2, running
        assert len(held) == 3, running
    finally:
        code, out, err = release_and_finish(ray_cluster, output, proc)

    assert code == 0, out + err
    batch_dir = only_batch(output)
    manifest = valid_manifest(batch_dir)
    runs = manifest["runs"]
    assert [len(r["attempts"]) for r in runs] == [1] * 11
    assert {r["status"] for r in runs} == {"succeeded"}
    assert most_at_once(spans(r for r in runs if r["job"] == "one")) == 1
    assert most_at_once(spans(r for r in runs if r["job"] in ("x", "y"))) == 2
    assert most_at_once(spans(runs)) <= 4
    nodes = node_names(ray_cluster)
    on_node = {
        name: [r for r in runs if nodes[outcome_of(r["attempts"][0])["node"]["node_id"]] == name]
        for name in ("host", "private")
    }
    for name, there in on_node.items():  # Ray's side: a node's `docker` slots are never exceeded
        assert most_at_once(spans(there)) <= 2, (name, [r["run_id"] for r in there])
    # Three held at once, two slots a node: the limited runs ran on both nodes, counted as one.
    held_ids = {h.run_id for h in held}
    held_nodes = {
        nodes[outcome_of(r["attempts"][0])["node"]["node_id"]]
        for r in runs
        if r["run_id"] in held_ids
    }
    assert held_nodes == {"host", "private"}, held
    assert_no_container(ray_cluster, docker_client, batch_dir)


# -- 4. a node's slots hold across batches ----------------------------------------------


def test_two_batches_on_one_cluster_never_run_more_containers_on_a_node_than_its_slots(
    ray_cluster: LocalRayCluster,
    ray_image: SessionImage,
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    """Batch A holds every slot of the cluster (2 nodes x 2) with held runs; batch B starts
    meanwhile. B's runs wait for A's slots: on each node, the containers of both batches,
    by their recorded intervals, never number more than the node's 2 slots."""
    held_jobs = ray_image.project(
        tmp_path / "a",
        "holder",
        "  - {name: h, framework: plain, scripts: held.py, repeat: 4, network: none}\n",
        {"held.py": HELD},
        held=True,
    )
    quick_jobs = ray_image.project(
        tmp_path / "b",
        "second",
        "  - {name: q, framework: plain, scripts: q.py, repeat: 4, network: none}\n",
        {"q.py": "print('quick')\n"},
    )
    out_a, out_b = tmp_path / "out-a", tmp_path / "out-b"
    first = start_ray_cli(ray_cluster, ["run", str(held_jobs), "-o", str(out_a), "-j", "4"])
    second: subprocess.Popen[str] | None = None
    try:

        def holding_every_slot(batch_dir: Path, runs: list[RunRecord]) -> bool:
            return [r.status for r in runs] == ["running"] * 4 and all_holding(batch_dir, runs)

        wait_for(on_runs(out_a, holding_every_slot), "batch A's 4 runs to hold every slot", first)
        second = start_ray_cli(ray_cluster, ["run", str(quick_jobs), "-o", str(out_b), "-j", "4"])
        wait_for(lambda: any(out_b.glob("*/manifest.json")), "batch B to begin", second)
        # B says why it waits, once its agents did not start in their time (10 s): time a
        # scheduler that ignored A's slots would have used to run B (4 quick runs) beside A.
        said = read_stderr_until(second, "no docker node is free yet")
        assert "held by another batch" in said, said
        assert second.poll() is None, "batch B ended while A held every slot"
        found = batch_runs(out_b)
        assert found is not None and "succeeded" not in {r.status for r in found[1]}, found
    finally:
        code_a, out_a_text, err_a = release_and_finish(ray_cluster, out_a, first)
        code_b, out_b_text, err_b = finish(second) if second is not None else (0, "", "")
    assert code_a == 0, out_a_text + err_a
    assert code_b == 0, out_b_text + err_b

    runs = [
        *valid_manifest(only_batch(out_a))["runs"],
        *valid_manifest(only_batch(out_b))["runs"],
    ]
    assert {r["status"] for r in runs} == {"succeeded"}
    nodes = node_names(ray_cluster)
    for name in ("host", "private"):
        on_node = [
            r for r in runs if nodes[outcome_of(r["attempts"][0])["node"]["node_id"]] == name
        ]
        assert most_at_once(spans(on_node)) <= 2, (name, spans(on_node))
    assert_no_container(ray_cluster, docker_client, only_batch(out_a))
    assert_no_container(ray_cluster, docker_client, only_batch(out_b))
