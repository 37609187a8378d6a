"""Model calls of a batch on the real local cluster (tests/ray_cluster.py): containers on both
nodes call the stand-in upstream (tests/standin_llm.py, on the driver's loopback) through the
driver's one gateway, each node piping its containers' calls there. So one pool's pace holds
for the cluster, every call is counted once, and the real key stays in the driver's process:
not in a container, the batch dir, the output, a process's command line or environment, or
Ray's temp dir. Marked `ray` and `docker`; never skipped."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path

import pytest
from engine_cli import SessionImage
from engine_fixtures import KEY_SEARCH
from ray_cluster import LocalRayCluster
from records import outcome_of
from standin_llm import MODEL_ANSWERING, StandIn
from test_ray_backend import only_batch, ray_cli
from test_ray_behaviour import node_names

pytestmark = [pytest.mark.ray, pytest.mark.docker]

MARKER = "RAYKEYMARKER"
KEY_VARIABLE = "SAB_TEST_RAY_UPSTREAM_KEY"
QUOTA = 6000  # the stand-in's tokens per minute, and the pool's

# One call of 800 words (804 tokens as the stand-in counts them: its answer is capped at 4),
# through nothing but the variables the tool gave; a 429 fails the run.
CALL = """\
import json, os, urllib.request

body = json.dumps({"model": "m", "max_tokens": 4,
                   "messages": [{"role": "user", "content": " ".join(["tok"] * 800)}]})
request = urllib.request.Request(
    os.environ["OPENAI_BASE_URL"] + "/chat/completions", data=body.encode(),
    headers={"Authorization": "Bearer " + os.environ["OPENAI_API_KEY"],
             "Content-Type": "application/json"})
urllib.request.urlopen(request, timeout=300).read()
"""
# The call, then the whole environment printed and every file the container can read
# searched for the key's marker (given reversed, so the variable itself does not match).
PROBE = (
    CALL
    + """
print(json.dumps(dict(os.environ)))
"""
    + KEY_SEARCH
    + """
print(json.dumps({"found": found, "scanned": scanned}))
"""
)


def jobs_text(standin: StandIn) -> str:
    """Eight runs in one paced pool, on the batch's `models` network: one probe, seven calls."""
    return (
        f"pools:\n  quota: {{tokens_per_minute: {QUOTA}}}\n"
        "models:\n"
        f"  main: {{kind: openai, base_url: '{standin.url}/v1', api_key_env: {KEY_VARIABLE}}}\n"
        "jobs:\n"
        "  - {name: probe, framework: plain, scripts: probe.py, models: [main],"
        f" network: models, pool: quota, env: {{MARKER_REVERSED: {MARKER[::-1]}}}}}\n"
        "  - {name: call, framework: plain, scripts: call.py, models: [main],"
        " network: models, pool: quota, repeat: 7}\n"
    )


def files_holding(root: Path, needle: bytes) -> list[Path]:
    found = []
    for path in root.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink() and needle in path.read_bytes():
                found.append(path)
        except OSError:
            continue  # a socket or a file removed meanwhile
    return found


def processes_holding(needle: bytes) -> list[str]:
    """Processes (other than this test's own) whose command line or environment holds it."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        for part in ("cmdline", "environ"):
            try:
                if needle in (proc / part).read_bytes():
                    found.append(f"{proc.name}/{part}")
            except OSError:
                continue  # gone meanwhile, or not ours to read
    return found


def test_calls_from_both_nodes_are_paced_as_one_pool_counted_once_and_the_key_stays_home(
    ray_cluster: LocalRayCluster,
    ray_image: SessionImage,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Eight calls of 804 tokens (6,432) against a 6,000-token minute: paced as one pool, the
    last call waits until the quota has room and the stand-in refuses none; paced per node
    (two pools of 6,000), the calls would overrun the quota and meet a 429."""
    standin = StandIn(tokens_per_minute=QUOTA)
    real_key = f"sk-{MARKER}-{secrets.token_hex(16)}"
    monkeypatch.setenv(KEY_VARIABLE, real_key)
    try:
        jobs = ray_image.project(tmp_path / "p", "models", "", {"probe.py": PROBE, "call.py": CALL})
        jobs.write_text(jobs.read_text().replace("jobs:\n", jobs_text(standin)), "utf-8")
        output = tmp_path / "out"
        done = ray_cli(ray_cluster, ["run", str(jobs), "-o", str(output), "--no-progress"])
    finally:
        standin.close()

    assert done.returncode == 0, done.stdout + done.stderr
    batch_dir = only_batch(output)
    manifest = json.loads((batch_dir / "manifest.json").read_text())
    runs = manifest["runs"]
    assert [r["status"] for r in runs] == ["succeeded"] * 8, [r["error"] for r in runs]
    # Both nodes ran calls; the driver's gateway counted them all, as the stand-in did.
    nodes = node_names(ray_cluster)
    outcomes = [outcome_of(r["attempts"][-1]) for r in runs]
    assert {nodes[o["node"]["node_id"]] for o in outcomes} == {"host", "private"}
    usage = [o["usage"]["main"] for o in outcomes]
    assert all(u["requests"] == 1 and u["answered_by"] == [MODEL_ANSWERING] for u in usage)
    assert sum(u["input_tokens"] for u in usage) == standin.seen.input_tokens == 8 * 800
    assert sum(u["output_tokens"] for u in usage) == standin.seen.output_tokens
    # One pool across the nodes: no call met the quota's 429, none was retried.
    assert standin.seen.requests == 8 and standin.seen.rejected == 0
    assert sum(u["retries"] for u in usage) == 0
    for run in runs:
        calls = (batch_dir / run["log_dir"] / "model_calls.jsonl").read_text().splitlines()
        assert len(calls) == 1 and json.loads(calls[0])["status"] == 200
    # The probe looked everywhere its container could read; the key went upstream only.
    [probe] = [r for r in runs if r["job"] == "probe"]
    facts = json.loads((batch_dir / probe["log_dir"] / "stdout.log").read_text().splitlines()[-1])
    assert facts["found"] == [] and facts["scanned"] > 1000, facts
    assert set(standin.seen.credentials) == {f"Bearer {real_key}"}
    needle = MARKER.encode()
    assert needle not in (done.stdout + done.stderr).encode()
    assert files_holding(batch_dir, needle) == []
    assert files_holding(ray_cluster.root, needle) == []
    assert processes_holding(needle) == []
    ps = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, check=True)
    assert needle not in ps.stdout
