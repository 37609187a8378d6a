"""Model calls from real containers through the batch's gateway, on a real engine: the script
calls the stand-in upstream (tests/standin_llm.py, on the host's loopback) with nothing but the
variables the tool gave it; the real key never reaches the container, its output, the batch
dir or the engine's view of it; the gateway's counts equal the stand-in's own; and under
`network: models` the gateway is all the container reaches.
"""

from __future__ import annotations

import json
import secrets
import socket
import textwrap
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from engine_fixtures import (
    KEY_SEARCH,
    PLAIN_FRAMEWORK_YAML,
    CliBatch,
    cli_batch,
    remove_repository,
    write_project,
)
from standin_llm import MODEL_ANSWERING, StandIn

from safeagents_batch.cli import main as cli
from safeagents_batch.core.errors import EXIT_OK
from safeagents_batch.gateway.forward import PER_ADDRESS

pytestmark = pytest.mark.docker

MARKER = "REALKEYMARKER"  # inside the real key; the script looks for it everywhere it can read
KEY_VARIABLE = "SAB_TEST_UPSTREAM_KEY"
PRICE_IN, PRICE_OUT = 2.5, 10.0  # USD per million tokens, as the jobs file states them

# Calls the models as an agent would (stdlib only: the test image has no SDK), then looks for
# the real key's marker in its environment and in every file it can read, and tries to reach
# the host outside the gateway. One JSON line of facts out, and result.json.
SCRIPT = (
    """\
import json, os, socket, urllib.request

base, token = os.environ["OPENAI_BASE_URL"], os.environ["OPENAI_API_KEY"]


def post(path, body):
    request = urllib.request.Request(
        f"{base}/{path}", data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        return answer.read()


words = {"role": "user", "content": "one two three"}
chat = json.loads(post("chat/completions", {"model": "m", "messages": [words]}))
stream = post("chat/completions", {"model": "m", "messages": [words], "stream": True,
                                   "stream_options": {"include_usage": True}})
responses = json.loads(post("responses", {"model": "m", "input": "four five"}))

"""
    + KEY_SEARCH
    + """
def default_gateway():
    for line in open("/proc/net/route").read().splitlines()[1:]:
        fields = line.split()
        if fields[1] == "00000000":
            return socket.inet_ntoa(bytes.fromhex(fields[2])[::-1])
    return None


def reach(host, port):
    try:
        socket.create_connection((host, port), timeout=3).close()
        return "connected"
    except OSError as exc:
        return type(exc).__name__


facts = {
    "chat_model": chat["model"],
    "mapped": os.environ["AZURE_ENDPOINT"] == base,
    "streamed_events": stream.count(b"data: "),
    "responses_text": responses["output"][0]["content"][0]["text"],
    "found": found,
    "scanned": scanned,
    # A host service on every address, tried at each address of the host a container
    # might route to: its network's gateway, the default bridge's, the host's own.
    "host_service": {
        host: reach(host, int(os.environ["OTHER_PORT"]))
        for host in (default_gateway(), "172.17.0.1", os.environ["OUTSIDE_HOST"]) if host
    },
}
print(json.dumps(facts))
os.makedirs("/safeagents/logs", exist_ok=True)
json.dump(facts, open("/safeagents/logs/result.json", "w"))
"""
)


@pytest.fixture(scope="module")
def image_name(docker_client: docker.DockerClient) -> Iterator[str]:
    name = f"sab-models-test-{secrets.token_hex(4)}"
    yield name
    remove_repository(docker_client, name)


@pytest.fixture
def other_listener() -> Iterator[int]:
    """A host service outside the gateway (on every address, as many are): `network: models`
    must not reach it."""
    with socket.create_server(("0.0.0.0", 0)) as server:
        yield server.getsockname()[1]


def host_address() -> str:
    """An address of this host outside any Docker network (its outbound interface's)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: it only picks the route
        return str(probe.getsockname()[0])


def jobs_text(image_name: str, standin: StandIn, network: str) -> str:
    return (
        f"version: 1\nimage_name: {image_name}\n{PLAIN_FRAMEWORK_YAML}"
        "models:\n"
        f"  main: {{kind: openai, base_url: '{standin.url}/v1', api_key_env: {KEY_VARIABLE},"
        f" prices: {{input: {PRICE_IN}, output: {PRICE_OUT}}}}}\n"
        "jobs:\n"
        + textwrap.indent(
            textwrap.dedent(
                f"""\
                - name: agent
                  framework: plain
                  scripts: agent.py
                  models: [main]
                  model_env: {{AZURE_ENDPOINT: main}}
                  network: {network}
                  repeat: 2
                  env: {{MARKER_REVERSED: {MARKER[::-1]}}}
                  env_passthrough: [OTHER_PORT, OUTSIDE_HOST]
                """
            ),
            "  ",
        )
    )


def run_models_batch(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    text: str,
    script: str = SCRIPT,
    *args: str,
) -> CliBatch:
    jobs = write_project(tmp_path / "proj", text, {"agent.py": script})
    out_dir = tmp_path / "out"
    return cli_batch(capsys, out_dir, ["run", str(jobs), "-o", str(out_dir), *args])


def probe_batch(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    text: str,
    real_key: str,
    other_port: int,
) -> CliBatch:
    """The probe's batch, with the real key and the probe's targets in the host's env."""
    monkeypatch.setenv(KEY_VARIABLE, real_key)
    monkeypatch.setenv("OTHER_PORT", str(other_port))
    monkeypatch.setenv("OUTSIDE_HOST", host_address())
    batch = run_models_batch(tmp_path, capsys, text)
    assert batch.code == EXIT_OK, (batch.output, [r["error"] for r in batch.runs])
    return batch


def everything_under(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


def test_the_container_calls_its_model_through_the_gateway_and_never_holds_the_key(
    image_name: str,
    standin: StandIn,
    other_listener: int,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    docker_client: docker.DockerClient,
) -> None:
    real_key = f"sk-{MARKER}-{secrets.token_hex(16)}"
    text = jobs_text(image_name, standin, "models")

    batch = probe_batch(tmp_path, capsys, monkeypatch, text, real_key, other_listener)

    batch_dir, manifest, output = batch.batch_dir, batch.manifest, batch.output
    for run in manifest["runs"]:
        attempt_dir = batch_dir / run["log_dir"]
        facts = json.loads((attempt_dir / "result.json").read_text())
        assert facts["chat_model"] == MODEL_ANSWERING and facts["mapped"]
        assert facts["streamed_events"] == 6
        assert facts["responses_text"] == "the stand in answers"
        # The script looked everywhere it could read: the key is nowhere in the container.
        assert facts["found"] == [] and facts["scanned"] > 1000
        # network: models: no address of the host answers (the probe does reach it from
        # the bridge network: the test below).
        assert "connected" not in facts["host_service"].values(), facts
        assert host_address() in facts["host_service"], facts
        calls = [json.loads(line) for line in (attempt_dir / "model_calls.jsonl").open()]
        assert [c["path"] for c in calls] == ["chat/completions"] * 2 + ["responses"]
        assert all(c["status"] == 200 and c["answered_by"] == MODEL_ANSWERING for c in calls)
    # The gateway's counts are the upstream's own, and the real key is what it was sent.
    usage = [run["attempts"][-1]["outcome"]["usage"]["main"] for run in manifest["runs"]]
    assert sum(u["requests"] for u in usage) == standin.seen.requests == 6
    assert sum(u["input_tokens"] for u in usage) == standin.seen.input_tokens
    assert sum(u["output_tokens"] for u in usage) == standin.seen.output_tokens
    cost = (standin.seen.input_tokens * PRICE_IN + standin.seen.output_tokens * PRICE_OUT) / 1e6
    assert sum(u["cost_usd"] for u in usage) == pytest.approx(cost)
    assert set(standin.seen.credentials) == {f"Bearer {real_key}"}
    # The results table and the report carry the same figures.
    rows = [json.loads(line) for line in (batch_dir / "results.jsonl").open()]
    assert [r["model_requests"] for r in rows] == [3, 3]
    assert sum(r["input_tokens"] for r in rows) == standin.seen.input_tokens
    assert {r["model"] for r in rows} == {MODEL_ANSWERING}
    page = (batch_dir / "report.html").read_text()
    assert 'id="usage"' in page and MODEL_ANSWERING in page
    assert f">{standin.seen.output_tokens:,}<" in page  # the batch's output tokens
    assert f">${cost:.4f}<" in page
    assert cli.main(["status", str(batch_dir)]) == EXIT_OK
    assert (
        f"model calls: 6 (0 errors, 0 retried 429s), {standin.seen.input_tokens:,} input and "
        f"{standin.seen.output_tokens:,} output tokens, ${cost:.4f}"
    ) in capsys.readouterr().out
    # Nowhere on record: the batch dir, the tool's output, the engine's view of the batch.
    assert MARKER.encode() not in everything_under(batch_dir)
    assert MARKER not in output
    # Its own network and relay are gone (other batches on the engine are not this test's).
    own = {"label": f"safeagents-batch.batch={manifest['batch_id']}"}
    assert not docker_client.networks.list(filters=own), "network left over"
    assert not docker_client.containers.list(all=True, filters=own), "relay left over"


def test_on_the_bridge_network_the_calls_go_through_the_gateway_too(
    image_name: str,
    standin: StandIn,
    other_listener: int,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The default network: the gateway listens on the engine's bridge address. The probe
    reaches the host's other service here, so its "not reached" under `network: models`
    (above) is the network's doing, not the probe's."""
    real_key = f"sk-{MARKER}-{secrets.token_hex(16)}"
    text = jobs_text(image_name, standin, "bridge")

    batch = probe_batch(tmp_path, capsys, monkeypatch, text, real_key, other_listener)

    facts = json.loads((batch.batch_dir / batch.runs[0]["log_dir"] / "result.json").read_text())
    assert facts["chat_model"] == MODEL_ANSWERING and facts["found"] == []
    assert "connected" in facts["host_service"].values(), facts
    assert standin.seen.requests == 6


def test_clean_removes_a_models_network_left_by_a_dead_batch_and_keeps_a_running_ones(
    docker_client: docker.DockerClient,
) -> None:
    from safeagents_batch.backends.base import CleanRequest
    from safeagents_batch.backends.docker.clean import clean_engine
    from safeagents_batch.backends.docker.relay import network_name
    from safeagents_batch.core import labels

    dead, alive = f"dead-{secrets.token_hex(4)}", f"alive-{secrets.token_hex(4)}"
    gone_pid = {labels.PID: "999999999"}  # no such process: its batch has ended
    docker_client.networks.create(
        network_name(dead), internal=True, labels={**labels.owned(dead), **gone_pid}
    )
    docker_client.networks.create(network_name(alive), internal=True, labels=labels.owned(alive))
    try:
        lines = clean_engine(docker_client, CleanRequest())
        names = {n.name for n in docker_client.networks.list(names=["sab-models-"])}
        assert f"removed network {network_name(dead)}" in lines
        assert any(line.startswith(f"kept network {network_name(alive)}: ") for line in lines)
        assert network_name(dead) not in names and network_name(alive) in names
    finally:
        for name in (network_name(dead), network_name(alive)):
            for network in docker_client.networks.list(names=[name]):
                network.remove()


COSTLY_SCRIPT = """\
import json, os, urllib.error, urllib.request

statuses = []
for _ in range(3):
    request = urllib.request.Request(
        os.environ["OPENAI_BASE_URL"] + "/chat/completions",
        data=json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode(),
        headers={"Authorization": "Bearer " + os.environ["OPENAI_API_KEY"],
                 "Content-Type": "application/json"})
    try:
        statuses.append(urllib.request.urlopen(request, timeout=60).status)
    except urllib.error.HTTPError as exc:
        statuses.append(exc.code)
print(statuses)
"""


def test_a_run_past_its_cost_limit_gets_no_more_calls_and_ends_failed(
    image_name: str,
    standin: StandIn,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = (
        f"version: 1\nimage_name: {image_name}\n{PLAIN_FRAMEWORK_YAML}"
        "models:\n"
        f"  main: {{kind: openai, base_url: '{standin.url}/v1',"
        " prices: {input: 1000000, output: 1000000}}\n"  # $1 a token: one call costs $5
        "jobs:\n"
        "  - {name: costly, framework: plain, scripts: agent.py, models: [main],"
        " network: models, cost_limit: 4}\n"
    )
    batch = run_models_batch(tmp_path, capsys, text, COSTLY_SCRIPT)

    [run] = batch.runs
    assert batch.code != EXIT_OK
    assert run["status"] == "failed" and run["error"] == "cost limit: $5.0000 spent of $4"
    assert (batch.batch_dir / run["log_dir"] / "stdout.log").read_text() == "[200, 402, 402]\n"
    assert standin.seen.requests == 1


def test_a_batch_past_its_cost_limit_starts_nothing_new_and_rerun_continues_it(
    image_name: str,
    standin: StandIn,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def text(limit: int) -> str:
        return (
            f"version: 1\nimage_name: {image_name}\n{PLAIN_FRAMEWORK_YAML}cost_limit: {limit}\n"
            "models:\n"
            f"  main: {{kind: openai, base_url: '{standin.url}/v1',"
            " prices: {input: 1000000, output: 1000000}}\n"  # one call of the script: $5
            "jobs:\n"
            "  - {name: spend, framework: plain, scripts: agent.py, models: [main],"
            " network: models, repeat: 5}\n"
        )

    script = COSTLY_SCRIPT.replace("range(3)", "range(1)")

    batch = run_models_batch(tmp_path, capsys, text(12), script, "-j", "1")

    # $5, $10, then $15 >= $12: three ran, the other two were never started.
    assert [r["status"] for r in batch.runs] == ["succeeded"] * 3 + ["pending"] * 2
    assert batch.code != EXIT_OK and batch.manifest["state"] == "interrupted"
    assert "batch cost limit reached: $15.0000 spent of $12" in batch.output
    assert standin.seen.requests == 3

    jobs = tmp_path / "proj" / "jobs.yaml"
    jobs.write_text(text(100))
    args = ["rerun", "--jobs", str(jobs), str(batch.batch_dir)]
    rerun = cli_batch(capsys, tmp_path / "out", args)

    assert rerun.code == EXIT_OK and rerun.manifest["state"] == "finished"
    assert [r["status"] for r in rerun.runs] == ["succeeded"] * 5
    assert standin.seen.requests == 5  # the three that ran were not run again


PACED_SCRIPT = """\\
import json, os, urllib.request

body = json.dumps({"model": "m", "max_tokens": 4,
                   "messages": [{"role": "user", "content": " ".join(["tok"] * 800)}]})
for _ in range(2):
    request = urllib.request.Request(
        os.environ["OPENAI_BASE_URL"] + "/chat/completions", data=body.encode(),
        headers={"Authorization": "Bearer " + os.environ["OPENAI_API_KEY"],
                 "Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=300).read()  # a 429 fails the run
"""


def test_a_pool_paced_at_the_upstreams_quota_runs_every_call_without_a_429(
    image_name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Four runs of two calls, 804 tokens each: 6,432 tokens against a 6,000-token minute,
    so the pool's pace holds the last calls until the quota has room; none sees a 429."""
    standin = StandIn(tokens_per_minute=6000)
    try:
        text = (
            f"version: 1\nimage_name: {image_name}\n{PLAIN_FRAMEWORK_YAML}"
            "pools:\n  quota: {tokens_per_minute: 6000}\n"
            f"models:\n  main: {{kind: openai, base_url: '{standin.url}/v1'}}\n"
            "jobs:\n"
            "  - {name: paced, framework: plain, scripts: agent.py, models: [main],"
            " network: models, pool: quota, repeat: 4}\n"
        )
        batch = run_models_batch(tmp_path, capsys, text, PACED_SCRIPT)
    finally:
        standin.close()

    runs = batch.runs
    assert batch.code == EXIT_OK, [r["error"] for r in runs]
    assert standin.seen.requests == 8 and standin.seen.rejected == 0
    usage = [r["attempts"][-1]["outcome"]["usage"]["main"] for r in runs]
    assert sum(u["retries"] for u in usage) == 0
    assert sum(u["input_tokens"] for u in usage) == standin.seen.input_tokens == 6400


FLOOD_SCRIPT = """\
import json, os, socket, time, urllib.request

base = os.environ["OPENAI_BASE_URL"]
host, port = base.split("/")[2].rsplit(":", 1)


def answered(connection):
    try:
        connection.sendall(b"GET /m/main/models HTTP/1.1\\r\\nHost: gateway\\r\\n\\r\\n")
        return connection.recv(64).startswith(b"HTTP/1.1 401")
    except OSError:
        return False


flood = [socket.create_connection((host, int(port)), timeout=30) for _ in range(100)]
admitted = sum(answered(c) for c in flood)
for connection in flood:
    connection.close()
body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
request = urllib.request.Request(
    base + "/chat/completions", data=body,
    headers={"Authorization": "Bearer " + os.environ["OPENAI_API_KEY"],
             "Content-Type": "application/json"})
for _ in range(100):  # the door learns of the closes as they travel through it
    try:
        status = urllib.request.urlopen(request, timeout=60).status
        break
    except OSError:
        time.sleep(0.1)
print(json.dumps({"admitted": admitted, "status": status}))
"""


@pytest.mark.parametrize("network", ["models", "bridge"])
def test_an_agent_flooding_the_gateway_with_connections_gets_its_share_and_then_its_call(
    image_name: str,
    standin: StandIn,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    network: str,
) -> None:
    """A hundred connections at once: the relay (`models`) or the host's pipe (`bridge`)
    admits the container's share and closes the rest, so one agent cannot take the host's
    file descriptors or its batch mates' calls; once it lets go, its call goes through."""
    text = (
        f"version: 1\nimage_name: {image_name}\n{PLAIN_FRAMEWORK_YAML}"
        f"models:\n  main: {{kind: openai, base_url: '{standin.url}/v1'}}\n"
        "jobs:\n"
        f"  - {{name: flood, framework: plain, scripts: agent.py, models: [main],"
        f" network: {network}}}\n"
    )
    batch = run_models_batch(tmp_path, capsys, text, FLOOD_SCRIPT)

    assert batch.code == EXIT_OK, (batch.output, [r["error"] for r in batch.runs])
    [run] = batch.manifest["runs"]
    stdout = (batch.batch_dir / run["log_dir"] / "stdout.log").read_text()
    assert json.loads(stdout.splitlines()[-1]) == {"admitted": PER_ADDRESS, "status": 200}
    assert standin.seen.requests == 1
