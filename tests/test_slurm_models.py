"""Model calls of a batch on the real local Slurm cluster (tests/slurm_cluster.py): containers
on both nodes call the stand-in upstream (tests/standin_llm.py, on the driver's loopback)
through the driver's one gateway, each node piping its containers' calls there over the
cluster's network. Every call is counted once, and the real key stays in the driver's process:
not in a container, the batch dir (the attempts' orders included), the output, or a process's
command line or environment. Marked `slurm` and `docker`; never skipped."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import docker
import pytest
from engine_cli import SessionImage, finish, runs_by_id, valid_manifest
from engine_fixtures import only_batch
from records import outcome_of
from slurm_cluster import LocalSlurmCluster
from standin_llm import MODEL_ANSWERING, StandIn
from test_ray_models import CALL, PROBE, files_holding, processes_holding
from test_slurm_batch import no_leftovers, run_args, start

pytestmark = [pytest.mark.slurm, pytest.mark.docker]

MARKER = "RAYKEYMARKER"  # what the probe searches for (reversed in its env)
KEY_VARIABLE = "SAB_TEST_SLURM_UPSTREAM_KEY"


def test_calls_from_both_nodes_go_through_the_drivers_gateway_and_the_key_stays_home(
    slurm_cluster: LocalSlurmCluster,
    slurm_image: SessionImage,
    docker_client: docker.DockerClient,
    node_b: docker.DockerClient,
    tmp_path: Path,
    out_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    standin = StandIn()
    real_key = f"sk-{MARKER}-{secrets.token_hex(16)}"
    monkeypatch.setenv(KEY_VARIABLE, real_key)
    models = (
        "models:\n"
        f"  main: {{kind: openai, base_url: '{standin.url}/v1', api_key_env: {KEY_VARIABLE}}}\n"
        "jobs:\n"
        "  - {name: probe, framework: plain, scripts: probe.py, models: [main],"
        f" network: models, env: {{MARKER_REVERSED: {MARKER[::-1]}}}}}\n"
        "  - {name: call, framework: plain, scripts: call.py, models: [main],"
        " network: models, repeat: 3}\n"
    )
    try:
        jobs = slurm_image.project(
            tmp_path / "p", "models", "", {"probe.py": PROBE, "call.py": CALL}
        )
        jobs.write_text(jobs.read_text().replace("jobs:\n", models), "utf-8")
        proc = start(run_args(jobs, out_dir))
        code, out, err = finish(proc)
        assert code == 0, out + err
        assert processes_holding(real_key.encode()) == []
    finally:
        standin.close()
    batch_dir = only_batch(out_dir)
    runs = runs_by_id(valid_manifest(batch_dir))
    assert {r["status"] for r in runs.values()} == {"succeeded"}
    outcomes = [outcome_of(r["attempts"][-1]) for r in runs.values()]
    # Each attempt asks for a node's 2 CPUs: two at once ran on the two nodes.
    assert {o["node"]["slurm_node"] for o in outcomes} == {"nodea", "nodeb"}
    usage = [o["usage"]["main"] for o in outcomes]
    assert all(u["requests"] == 1 and u["answered_by"] == [MODEL_ANSWERING] for u in usage)
    assert sum(u["input_tokens"] for u in usage) == standin.seen.input_tokens == 4 * 800
    for run in runs.values():
        calls = (batch_dir / run["log_dir"] / "model_calls.jsonl").read_text().splitlines()
        assert len(calls) == 1 and json.loads(calls[0])["status"] == 200
    [probe] = [r for r in runs.values() if r["job"] == "probe"]
    facts = json.loads((batch_dir / probe["log_dir"] / "stdout.log").read_text().splitlines()[-1])
    assert facts["found"] == [] and facts["scanned"] > 1000, facts
    assert files_holding(batch_dir, real_key.encode()) == []
    assert files_holding(out_dir, MARKER.encode()) == []
    no_leftovers(slurm_cluster, batch_dir, docker_client, node_b)
