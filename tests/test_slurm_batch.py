"""Batches on the real local Slurm cluster (tests/slurm_cluster.py): runs spread over both
nodes (node B sees the batch dir but none of the driver's other files, and its engine lacks
the image until the driver ships it); Ctrl-C cancels every job and leaves no container; a
timeout kills the container; a node whose slurmd dies loses its attempts, which are retried
on the other; a driver killed mid-batch leaves jobs that `rerun` folds in, running only what
had not finished. Marked `slurm` and `docker` (the nodes run real containers); never
skipped."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

import docker
import docker.errors
import pytest
from engine_cli import (
    CLI,
    SessionImage,
    containers_of,
    finish,
    kill_hard,
    runs_by_id,
    valid_manifest,
    wait_for,
)
from engine_fixtures import only_batch, own_tags
from slurm_cluster import LocalSlurmCluster

from safeagents_batch.core import labels

pytestmark = [pytest.mark.slurm, pytest.mark.docker]

QUICK = "import socket\nprint('ran on', socket.gethostname())\n"


def held(name: str, seconds: int = 600) -> str:
    """Prints, then waits while the file `name` exists in its code snapshot (deleted by the
    test in the batch dir: the nodes bind-mount the batch dir's snapshot), then succeeds."""
    return (
        "import os, time\n"
        "print('holding', flush=True)\n"
        f"for _ in range({seconds * 10}):\n"
        f"    if not os.path.exists('/safeagents/code/{name}'):\n"
        "        break\n"
        "    time.sleep(0.1)\n"
        "print('released', flush=True)\n"
    )


def project(image: SessionImage, root: Path, jobs: str, scripts: dict[str, str]) -> Path:
    return image.project(root, "slurm", jobs, scripts, workers=4)


def start(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLI, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def run_args(jobs: Path, out: Path, *extra: str) -> list[str]:
    return ["run", str(jobs), "--backend", "slurm", "-o", str(out), "--no-progress", *extra]


def release(batch_dir: Path, name: str) -> None:
    for snapshot in batch_dir.glob("code/*"):
        (snapshot / name).unlink(missing_ok=True)


def running(cluster: LocalSlurmCluster, prefix: str) -> int:
    """Running jobs whose name (their run's id) starts with `prefix`."""
    return sum(
        1
        for line in cluster.jobs()
        if line.split()[1] == "RUNNING" and line.split()[2].startswith(prefix)
    )


def no_leftovers(
    cluster: LocalSlurmCluster, batch_dir: Path, *clients: docker.DockerClient
) -> None:
    """Nothing of the batch still runs: no pending or running job, no container."""
    assert cluster.jobs() == []
    for client in clients:

        def gone(engine: docker.DockerClient = client) -> bool:
            return not containers_of(engine, batch_dir)

        wait_for(gone, "the containers to go")


def attempt_node(attempt: dict[str, object]) -> str:
    outcome = attempt["outcome"]
    assert isinstance(outcome, dict)
    return str(outcome["node"]["slurm_node"])


def test_runs_spread_over_both_nodes(
    slurm_cluster: LocalSlurmCluster,
    slurm_image: SessionImage,
    docker_client: docker.DockerClient,
    node_b: docker.DockerClient,
    tmp_path: Path,
    out_dir: Path,
) -> None:
    scripts = {f"s/r{i}.py": held("hold", 30) for i in range(4)}
    scripts["s/hold"] = ""
    jobs = project(
        slurm_image,
        tmp_path,
        "  - {name: spread, framework: plain, scripts: 's/r*.py', timeout: 120}\n",
        scripts,
    )
    proc = start(run_args(jobs, out_dir))
    prefix = "spread-"
    # Each attempt asks for the node's 2 CPUs: the batch's 4 at once need both nodes.
    wait_for(lambda: running(slurm_cluster, prefix) == 2, "2 running jobs", proc)
    batch_dir = only_batch(out_dir)
    release(batch_dir, "hold")
    code, out, err = finish(proc)
    assert code == 0, out + err
    manifest = valid_manifest(batch_dir)
    runs = runs_by_id(manifest)
    assert {r["status"] for r in runs.values()} == {"succeeded"}
    nodes = {attempt_node(r["attempts"][-1]) for r in runs.values()}
    assert nodes == {"nodea", "nodeb"}
    for run_id, run in runs.items():
        log = batch_dir / run["attempts"][-1]["log_dir"] / "stdout.log"
        assert log.read_text() == "holding\nreleased\n", run_id
    assert manifest["backend"]["backend"] == "slurm"
    # Each job was named after its run: what squeue, sacct and scancel show.
    completed = (slurm_cluster.root / "jobcomp.txt").read_text()
    for run_id in runs:
        assert f"Name={run_id} " in completed
    no_leftovers(slurm_cluster, batch_dir, docker_client, node_b)
    # The image reached node B through the batch dir, and its archive went at the end.
    assert node_b.images.list(name=slurm_image.image_name)
    assert not list(batch_dir.glob("slurm/images/*.tar"))


def test_ctrl_c_cancels_every_job(
    slurm_cluster: LocalSlurmCluster,
    slurm_image: SessionImage,
    docker_client: docker.DockerClient,
    node_b: docker.DockerClient,
    tmp_path: Path,
    out_dir: Path,
) -> None:
    scripts = {f"s/r{i}.py": held("hold") for i in range(5)}
    scripts["s/hold"] = ""
    jobs = project(
        slurm_image, tmp_path, "  - {name: cc, framework: plain, scripts: 's/r*.py'}\n", scripts
    )
    proc = start(run_args(jobs, out_dir, "-j", "5"))
    prefix = "cc-"
    wait_for(lambda: running(slurm_cluster, prefix) == 2, "2 running jobs", proc)
    batch_dir = only_batch(out_dir)
    wait_for(lambda: len(containers_of(docker_client, batch_dir)) >= 1, "a container", proc)
    proc.send_signal(signal.SIGINT)
    code, out, err = finish(proc)
    assert code == 130, out + err
    runs = runs_by_id(valid_manifest(batch_dir))
    assert {r["status"] for r in runs.values()} == {"cancelled"}
    no_leftovers(slurm_cluster, batch_dir, docker_client, node_b)


def test_timeout_kills_the_container(
    slurm_cluster: LocalSlurmCluster,
    slurm_image: SessionImage,
    docker_client: docker.DockerClient,
    node_b: docker.DockerClient,
    tmp_path: Path,
    out_dir: Path,
) -> None:
    jobs = project(
        slurm_image,
        tmp_path,
        "  - {name: to, framework: plain, scripts: s/t.py, timeout: 3}\n",
        {"s/t.py": held("hold"), "s/hold": ""},
    )
    code, out, err = finish(start(run_args(jobs, out_dir)))
    assert code == 1, out + err
    batch_dir = only_batch(out_dir)
    [run] = runs_by_id(valid_manifest(batch_dir)).values()
    assert run["status"] == "timed_out"
    no_leftovers(slurm_cluster, batch_dir, docker_client, node_b)


def test_lost_node_attempts_end_error_and_are_retried(
    slurm_cluster: LocalSlurmCluster,
    slurm_image: SessionImage,
    docker_client: docker.DockerClient,
    node_b: docker.DockerClient,
    tmp_path: Path,
    out_dir: Path,
) -> None:
    jobs = project(
        slurm_image,
        tmp_path,
        "  - {name: ln, framework: plain, scripts: 's/r*.py', retries: 1}\n",
        {"s/r1.py": held("hold"), "s/r2.py": held("hold"), "s/hold": ""},
    )
    proc = start(run_args(jobs, out_dir))
    batch_dir: list[Path] = []

    def on_node_b() -> bool:
        found = [d for d in out_dir.glob("*/manifest.json")]
        batch_dir[:] = [f.parent for f in found]
        return bool(found) and bool(containers_of(node_b, batch_dir[0]))

    wait_for(on_node_b, "a container on node B", proc)
    slurm_cluster.kill_node("nodeb")
    try:

        def lost() -> bool:
            runs = runs_by_id(valid_manifest(batch_dir[0])).values()
            return any(len(r["attempts"]) == 2 for r in runs)

        # Slurm marks the node down (SlurmdTimeout) and fails its job: the run is retried.
        wait_for(lost, "the lost attempt's retry", proc)
        release(batch_dir[0], "hold")
        code, out, err = finish(proc)
    finally:
        slurm_cluster.start_node("nodeb")
        slurm_cluster.wait_idle(["nodea", "nodeb"])
    assert code == 0, out + err
    runs = runs_by_id(valid_manifest(batch_dir[0]))
    [retried] = [r for r in runs.values() if len(r["attempts"]) == 2]
    first, second = retried["attempts"]
    assert first["outcome"]["status"] == "error"
    assert "NODE_FAIL" in first["outcome"]["error"] and "nodeb" in first["outcome"]["error"]
    assert second["outcome"]["status"] == "succeeded"
    assert attempt_node(second) == "nodea"
    no_leftovers(slurm_cluster, batch_dir[0], docker_client, node_b)


def test_rerun_after_the_driver_is_killed_runs_only_what_had_not_finished(
    slurm_cluster: LocalSlurmCluster,
    slurm_image: SessionImage,
    docker_client: docker.DockerClient,
    node_b: docker.DockerClient,
    tmp_path: Path,
    out_dir: Path,
) -> None:
    """Two quick runs finish; two held ones run on when the driver dies. One ends while no
    driver watches; `rerun` follows the other to its end. Nothing runs twice."""
    jobs = project(
        slurm_image,
        tmp_path,
        "  - {name: q, framework: plain, scripts: 's/q*.py'}\n"
        "  - {name: h, framework: plain, scripts: 'h/h*.py', resources: {cpus: 1}}\n",
        {
            "s/q1.py": QUICK,
            "s/q2.py": QUICK,
            "h/h1.py": held("hold1"),
            "h/h2.py": held("hold2"),
            "h/hold1": "",
            "h/hold2": "",
        },
    )
    proc = start(run_args(jobs, out_dir))

    def ready() -> bool:
        found = list(out_dir.glob("*/manifest.json"))
        if not found:
            return False
        runs = runs_by_id(valid_manifest(found[0].parent))
        done = [r for r in runs.values() if r["status"] == "succeeded"]
        output = list(found[0].parent.glob("runs/h-h*/attempt-1/stdout.log"))
        return len(done) == 2 and len([o for o in output if o.read_text()]) == 2

    wait_for(ready, "2 runs done and 2 held", proc)
    kill_hard(proc)
    batch_dir = only_batch(out_dir)
    release(batch_dir, "hold1")
    wait_for(lambda: len(slurm_cluster.jobs()) == 1, "the first held job to end")
    rerun = start(["rerun", str(batch_dir), "--backend", "slurm", "--no-progress"])
    # The rerun follows the job that still runs once it has made the attempt's dir afresh
    # (the dead driver's copy of its logs moved aside).
    following = "runs/h-h2/.attempt-1.stale-*"
    wait_for(lambda: bool(list(batch_dir.glob(following))), "rerun to follow the job", rerun)
    release(batch_dir, "hold2")
    code, out, err = finish(rerun)
    assert code == 0, out + err
    assert "rerunning 0 of 4 runs" in err
    runs = runs_by_id(valid_manifest(batch_dir))
    for run_id, run in runs.items():
        assert run["status"] == "succeeded", run_id
        assert len(run["attempts"]) == 1, run_id  # nothing ran twice
    for run_id in ("h-h1", "h-h2"):
        log = batch_dir / runs[run_id]["attempts"][0]["log_dir"] / "stdout.log"
        assert log.read_text() == "holding\nreleased\n"
    no_leftovers(slurm_cluster, batch_dir, docker_client, node_b)


def test_a_detached_batch_runs_without_the_command_that_submitted_it(
    slurm_cluster: LocalSlurmCluster,
    slurm_image: SessionImage,
    docker_client: docker.DockerClient,
    node_b: docker.DockerClient,
    tmp_path: Path,
    out_dir: Path,
) -> None:
    """`run --detach` returns once the driver's job is queued; the batch dir it names fills
    while no command of ours runs here, and `status` reads it from this ("login") machine."""
    jobs = project(
        slurm_image,
        tmp_path,
        "  - {name: d, framework: plain, scripts: 's/d*.py', resources: {cpus: 1}}\n",
        {"s/d1.py": QUICK, "s/d2.py": QUICK, "s/d3.py": QUICK},
    )
    # The driver on node A, where the image was built (node B's engine has no base image).
    submitted = start([*run_args(jobs, out_dir, "--detach", "--driver-arg=--nodelist=nodea")])
    code, out, err = finish(submitted)
    assert code == 0, out + err
    [line] = [x for x in out.splitlines() if x.startswith("batch ")]
    batch_dir = Path(line.split()[1].rstrip(":"))
    assert batch_dir.parent == out_dir.absolute()

    def finished() -> bool:
        manifest = batch_dir / "manifest.json"
        return manifest.is_file() and valid_manifest(batch_dir)["state"] == "finished"

    wait_for(finished, "the detached batch to finish")
    status = subprocess.run(
        [*CLI, "status", str(batch_dir)], capture_output=True, text=True, check=False
    )
    assert status.returncode == 0, status.stdout + status.stderr
    runs = runs_by_id(valid_manifest(batch_dir))
    assert sorted(runs) == ["d-d1", "d-d2", "d-d3"]
    assert {r["status"] for r in runs.values()} == {"succeeded"}
    wait_for(lambda: slurm_cluster.jobs() == [], "the driver's job to end")
    no_leftovers(slurm_cluster, batch_dir, docker_client, node_b)
    assert (batch_dir / "report.html").is_file()


AZURE_READER = (
    "import os\nprint(open(os.path.expanduser('~/.azure/token.txt')).read(), flush=True)\n"
)


@pytest.mark.usefixtures("azure_layer")
def test_azure_goes_to_the_nodes_only_with_ship_azure(
    slurm_cluster: LocalSlurmCluster,
    slurm_image: SessionImage,
    docker_client: docker.DockerClient,
    node_b: docker.DockerClient,
    tmp_path: Path,
    out_dir: Path,
) -> None:
    home = tmp_path / "home"
    (home / ".azure").mkdir(parents=True, mode=0o700)
    (home / ".azure" / "token.txt").write_text("azure-token")
    jobs = project(
        slurm_image,
        tmp_path / "p",
        # One job per node, placed by the jobs file's own `slurm:` key.
        "  - {name: za, framework: plain, scripts: z.py, network: none,\n"
        "     bind_azure_folder: true, slurm: {sbatch_args: [--nodelist=nodea]}}\n"
        "  - {name: zb, framework: plain, scripts: z.py, network: none,\n"
        "     bind_azure_folder: true, slurm: {sbatch_args: [--nodelist=nodeb]}}\n",
        {"z.py": AZURE_READER},
    )
    env = {**os.environ, "HOME": str(home)}
    before = set(Path("/tmp").glob("sab-azure-*"))

    def cli(*extra: str) -> subprocess.CompletedProcess[str]:
        argv = [*CLI, *run_args(jobs, out_dir / extra[0]), *extra[1:]]
        return subprocess.run(argv, capture_output=True, text=True, env=env, check=False)

    refused = cli("no")
    shipped = cli("yes", "--ship-azure")
    assert refused.returncode == 1, refused.stderr
    runs = runs_by_id(valid_manifest(only_batch(out_dir / "no"))).values()
    assert {(r["status"], "--ship-azure" in r["error"]) for r in runs} == {("error", True)}
    assert shipped.returncode == 0, shipped.stdout + shipped.stderr
    batch_dir = only_batch(out_dir / "yes")
    runs = runs_by_id(valid_manifest(batch_dir)).values()
    assert {r["run_id"]: attempt_node(r["attempts"][-1]) for r in runs} == {
        "za-z": "nodea",
        "zb-z": "nodeb",
    }
    for run in runs:
        assert (batch_dir / run["log_dir"] / "stdout.log").read_text() == "azure-token\n"
    # Each attempt's copy went with it, on the node.
    assert set(Path("/tmp").glob("sab-azure-*")) == before
    no_leftovers(slurm_cluster, batch_dir, docker_client, node_b)


def test_clean_removes_what_a_batch_left_on_every_node(
    slurm_cluster: LocalSlurmCluster,
    slurm_image: SessionImage,
    docker_client: docker.DockerClient,
    node_b: docker.DockerClient,
    out_dir: Path,
) -> None:
    """A container whose batch's process is gone (a node's process killed outright), on node
    B's engine: `clean --backend slurm` finds it there, through a step on each node."""
    tag = own_tags(docker_client, slurm_image.image_name)[0]
    slurm_cluster.engine.load_images(docker_client, [tag])
    gone = subprocess.Popen(["true"])
    gone.wait()
    batch_labels = {**labels.owned("gone-batch-1"), labels.PID: str(gone.pid)}
    left = node_b.containers.create(tag, ["true"], labels=batch_labels)
    try:
        out_dir.mkdir(parents=True)
        argv = [*CLI, "clean", "--backend", "slurm", "--slurm-share", str(out_dir)]
        dry = subprocess.run([*argv, "--dry-run"], capture_output=True, text=True, check=False)
        assert dry.returncode == 0, dry.stderr
        assert f"node nodeb: would remove container {left.name}" in dry.stdout.splitlines()
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        assert f"node nodeb: removed container {left.name}" in done.stdout.splitlines()
        assert [c for c in node_b.containers.list(all=True) if c.id == left.id] == []
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            left.remove(force=True)


def test_an_output_dir_a_node_cannot_see_is_one_error_before_anything_is_submitted(
    slurm_cluster: LocalSlurmCluster, slurm_image: SessionImage, tmp_path: Path
) -> None:
    """pytest's temp root is hidden from node B: an output dir there is bad input (exit 2),
    named in one line with the node, and leaves no job and no directory behind."""
    jobs = project(
        slurm_image, tmp_path / "p", "  - {name: v, framework: plain, scripts: v.py}\n",
        {"v.py": QUICK},
    )  # fmt: skip
    out = tmp_path / "out"
    code, stdout, stderr = finish(start(run_args(jobs, out)))
    assert code == 2, stdout + stderr
    [line] = stderr.strip().splitlines()
    assert "not usable at the same path on slurm node(s) nodeb" in line, line
    assert "the shared directory is not there" in line
    assert not out.exists()
    assert slurm_cluster.jobs() == []
