"""The Ray backend on a real local cluster (tests/ray_cluster.py): batches spread over two
nodes with their own engines, code and images shipped through Ray, output streamed back.
Marked `ray` (and `docker`: the nodes run real containers); never skipped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import docker
import pytest
from engine_cli import (
    CLI,
    SessionImage,
    cli,
    containers_of,
    runs_by_id,
    valid_manifest,
)
from private_engine import host_bridge_present
from ray_cluster import LocalRayCluster
from records import outcome_of

pytestmark = [pytest.mark.ray, pytest.mark.docker]

# Output on both streams over a second, so that attempts overlap and spread over the nodes,
# and a file left in /safeagents/logs.
TALKER = (
    "import json, os, sys, time\n"
    "print('out one', flush=True)\n"
    "print('err one', file=sys.stderr, flush=True)\n"
    "time.sleep(1)\n"
    "print('out two', flush=True)\n"
    "with open('/safeagents/logs/result.json', 'w') as f:\n"
    "    json.dump({'seen': os.environ['GREETING']}, f)\n"
)
FAILER = "import sys\nprint('failing', flush=True)\nsys.exit(3)\n"


def ray_cli(cluster: LocalRayCluster, args: list[str]) -> subprocess.CompletedProcess[str]:
    return cli([*args, "--backend", "ray", "--ray-address", cluster.address])


def only_batch(output: Path) -> Path:
    [batch_dir] = [p.parent for p in output.glob("*/manifest.json")]
    return batch_dir


def test_a_batch_spreads_over_both_engines_with_logs_and_artifacts(
    ray_cluster: LocalRayCluster,
    ray_image: SessionImage,
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    jobs = ray_image.project(
        tmp_path / "p",
        "spread",
        "  - {name: talk, framework: plain, scripts: talk.py, repeat: 8, network: none,\n"
        "     env: {GREETING: hello}}\n"
        "  - {name: fail, framework: plain, scripts: fail.py, repeat: 4, network: none}\n",
        {"talk.py": TALKER, "fail.py": FAILER},
    )
    output = tmp_path / "out"
    private = ray_cluster.private_engine.client()
    tag = f"{ray_image.image_name}:"
    assert not [t for i in private.images.list() for t in i.tags if t.startswith(tag)]

    done = ray_cli(ray_cluster, ["run", str(jobs), "-o", str(output), "-j", "4", "--no-progress"])

    assert done.returncode == 1, done.stdout + done.stderr
    batch_dir = only_batch(output)
    manifest = valid_manifest(batch_dir)
    assert manifest["backend"]["backend"] == "ray"
    runs = runs_by_id(manifest)
    assert len(runs) == 12
    nodes = {ray_cluster.nodes[n].node_id: n for n in ("host", "private")}
    used = set()
    for run in runs.values():
        [attempt] = run["attempts"]
        used.add(nodes[outcome_of(attempt)["node"]["node_id"]])
        log_dir = batch_dir / attempt["log_dir"]  # relative, or absolute (then `/` keeps it)
        if run["job"] == "talk":
            assert run["status"] == "succeeded", run
            assert (log_dir / "stdout.log").read_text() == "out one\nout two\n"
            assert (log_dir / "stderr.log").read_text() == "err one\n"
            console = (log_dir / "console.log").read_text()
            assert console.index("out one") < console.index("out two")
            assert json.loads((log_dir / "result.json").read_text()) == {"seen": "hello"}
        else:
            assert (run["status"], run["exit_code"]) == ("failed", 3), run
            assert (log_dir / "stdout.log").read_text() == "failing\n"
    assert used == {"host", "private"}
    # The private engine got the image through Ray (it had none), and keeps no container.
    assert [t for i in private.images.list() for t in i.tags if t.startswith(tag)]
    assert containers_of(private, batch_dir) == []
    assert containers_of(docker_client, batch_dir) == []
    assert host_bridge_present()


def test_the_isolated_node_sees_no_driver_file_and_caches_code_by_digest(
    ray_cluster: LocalRayCluster, ray_image: SessionImage, tmp_path: Path
) -> None:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    import safeagents_batch
    from safeagents_batch.backends.ray import boot as ray_boot

    jobs = ray_image.project(
        tmp_path / "p",
        "seen",
        "  - {name: t, framework: plain, scripts: t.py, repeat: 4, network: none}\n",
        {"t.py": "print('t')\n"},
    )
    output = tmp_path / "out"
    done = ray_cli(ray_cluster, ["run", str(jobs), "-o", str(output), "--no-progress"])
    assert done.returncode == 0, done.stdout + done.stderr
    manifest = valid_manifest(only_batch(output))
    [digest] = {a["code_digest"] for r in manifest["runs"] for a in r["attempts"]}

    def look(paths: list[str]) -> dict[str, bool]:
        return {p: os.path.exists(p) for p in paths}

    private = ray_cluster.nodes["private"]
    assert private.cache is not None and private.node_id is not None
    probe = ray.remote(num_cpus=0)(look).options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(private.node_id, soft=False)
    )
    batch_code = str(only_batch(output) / "code" / digest)
    cached = str(private.cache / "code" / digest)
    # The package came the same way, unpacked once into the node's cache.
    package_digest, _ = ray_boot.pack(Path(safeagents_batch.__file__).resolve().parent)
    package = str(private.cache / "package" / package_digest / "safeagents_batch")
    paths = [str(tmp_path), batch_code, "/work/main/README.md", cached, package]
    seen = ray.get(probe.remote(paths))
    assert seen == {
        str(tmp_path): False,
        batch_code: False,
        "/work/main/README.md": False,
        cached: True,
        package: True,
    }
    assert Path(batch_code).is_dir()  # the driver has it, of course


def _plain_project(root: Path) -> Path:
    jobs = root / "jobs.yaml"
    jobs.write_text(
        "version: 1\nframeworks:\n  plain: {packages: []}\n"
        "jobs:\n  - {name: a, framework: plain, scripts: a.py}\n"
    )
    (root / "a.py").write_text("print(1)\n")
    return jobs


def _cli_env(args: list[str], env: dict[str, str], *pre: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*pre, *CLI, *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def test_no_address_is_one_line_and_exit_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = _cli_env(["run", str(_plain_project(tmp_path)), "--backend", "ray"], env)
    assert (done.returncode, done.stderr.count("\n")) == (2, 1), done.stderr
    assert "--ray-address" in done.stderr and "RAY_ADDRESS" in done.stderr
    assert not (tmp_path / "logs").exists()  # nothing was started


def test_a_cluster_that_does_not_answer_is_one_line_and_exit_3(tmp_path: Path) -> None:
    from ray_cluster import free_port

    env = {**os.environ, "RAY_ADDRESS": f"127.0.0.1:{free_port()}"}  # nothing listens there
    done = _cli_env(["run", str(_plain_project(tmp_path)), "--backend", "ray"], env)
    assert (done.returncode, done.stderr.count("\n")) == (3, 1), done.stderr
    assert "does not answer" in done.stderr


def test_without_ray_installed_the_ray_backend_is_one_line_and_exit_2(tmp_path: Path) -> None:
    # `ray` made unimportable, as on a machine without the extra.
    probe = (
        "import sys; sys.modules['ray'] = None\n"
        "from safeagents_batch.cli.main import main\n"
        f"sys.exit(main(['run', {str(_plain_project(tmp_path))!r}, '--backend', 'ray',"
        " '--ray-address', '127.0.0.1:1']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    assert (done.returncode, done.stderr.count("\n")) == (2, 1), done.stderr
    assert "pip install 'safeagents-batch[ray]'" in done.stderr


AZURE_READER = (
    "import os\nprint(open(os.path.expanduser('~/.azure/token.txt')).read(), flush=True)\n"
)


@pytest.mark.usefixtures("azure_layer")
def test_azure_goes_to_the_nodes_only_with_ship_azure(
    ray_cluster: LocalRayCluster, ray_image: SessionImage, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    (home / ".azure").mkdir(parents=True, mode=0o700)
    (home / ".azure" / "token.txt").write_text("azure-token")
    jobs = ray_image.project(
        tmp_path / "p",
        "azure",
        "  - {name: z, framework: plain, scripts: z.py, repeat: 2, network: none,\n"
        "     bind_azure_folder: true}\n",
        {"z.py": AZURE_READER},
    )
    env = {**os.environ, "HOME": str(home)}
    ray = ["--backend", "ray", "--ray-address", ray_cluster.address, "--no-progress"]

    refused = _cli_env(["run", str(jobs), "-o", str(tmp_path / "no"), *ray], env)
    shipped = _cli_env(["run", str(jobs), "-o", str(tmp_path / "yes"), *ray, "--ship-azure"], env)

    assert refused.returncode == 1, refused.stderr
    runs = runs_by_id(valid_manifest(only_batch(tmp_path / "no"))).values()
    assert {(r["status"], "--ship-azure" in r["error"]) for r in runs} == {("error", True)}
    assert shipped.returncode == 0, shipped.stdout + shipped.stderr
    batch_dir = only_batch(tmp_path / "yes")
    for run in runs_by_id(valid_manifest(batch_dir)).values():
        assert (batch_dir / run["log_dir"] / "stdout.log").read_text() == "azure-token\n"
    for node in ("host", "private"):  # each attempt's copy is gone with it
        cache = ray_cluster.nodes[node].cache
        assert cache is not None and not list(cache.glob("azure-*"))
