"""The SDKs agents are written with, unchanged, in a real container, calling the stand-in
upstream through the batch's gateway: the official `openai` client (chat, a stream, responses),
`langchain-openai`, `openai-agents`, and `azure-identity`'s AzureCliCredential with an
`AzureOpenAI` client (through the tool's `az` shim: no Azure login in the container). Each
finds its endpoint and token in the variables the tool set; none holds the real key.

The image (these SDKs on the stock base) is built once and kept under its content tag, as any
user's would be: `safeagents-batch clean --images` removes it.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
from engine_fixtures import cli_batch, write_project
from standin_llm import MODEL_ANSWERING, StandIn

from safeagents_batch.core.errors import EXIT_OK

pytestmark = [pytest.mark.docker, pytest.mark.sdk]

KEY_VARIABLE = "SAB_TEST_SDK_KEY"
IMAGE_NAME = "sab-models-sdk-test"

SCRIPT = """\
import json, os

from openai import AsyncOpenAI, AzureOpenAI, OpenAI

said = {}
client = OpenAI()  # OPENAI_BASE_URL and OPENAI_API_KEY, as the tool set them
said["chat"] = client.chat.completions.create(
    model="m", messages=[{"role": "user", "content": "one two"}]).choices[0].message.content
chunks = client.chat.completions.create(
    model="m", messages=[{"role": "user", "content": "three"}], stream=True,
    stream_options={"include_usage": True})
said["stream"] = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
said["responses"] = client.responses.create(model="m", input="four five").output_text

from langchain_openai import ChatOpenAI

said["langchain"] = ChatOpenAI(model="m").invoke("six seven").content

from agents import Agent, OpenAIChatCompletionsModel, Runner, set_tracing_disabled

set_tracing_disabled(True)
agent = Agent(name="probe", instructions="be brief",
              model=OpenAIChatCompletionsModel(model="m", openai_client=AsyncOpenAI()))
said["agents"] = Runner.run_sync(agent, "eight nine").final_output

from azure.identity import AzureCliCredential, get_bearer_token_provider

provider = get_bearer_token_provider(
    AzureCliCredential(), "https://cognitiveservices.azure.com/.default")
azure = AzureOpenAI(azure_endpoint=os.environ["AZURE_OPENAI_ENDPOINT"],
                    api_version=os.environ["OPENAI_API_VERSION"], azure_ad_token_provider=provider)
said["azure"] = azure.chat.completions.create(
    model="deployment", messages=[{"role": "user", "content": "ten"}]).choices[0].message.content

print(json.dumps(said))
os.makedirs("/safeagents/logs", exist_ok=True)
json.dump(said, open("/safeagents/logs/result.json", "w"))
"""


def test_the_sdks_agents_use_work_unchanged_through_the_gateway(
    standin: StandIn,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_key = f"sk-sdk-{secrets.token_hex(16)}"
    monkeypatch.setenv(KEY_VARIABLE, real_key)
    text = (
        f"version: 1\nimage_name: {IMAGE_NAME}\n"
        "frameworks:\n  sdks: {packages: [openai-agents, langchain-openai, azure-identity]}\n"
        "models:\n"
        f"  main: {{kind: openai, base_url: '{standin.url}/v1', api_key_env: {KEY_VARIABLE}}}\n"
        f"  aoai: {{kind: azure-openai, endpoint: '{standin.url}', api_version: '2024-10-21',"
        f" api_key_env: {KEY_VARIABLE}}}\n"
        "jobs:\n"
        "  - {name: sdks, framework: sdks, scripts: agent.py, models: [main, aoai],"
        " network: models, timeout: 600}\n"
    )
    jobs = write_project(tmp_path / "proj", text, {"agent.py": SCRIPT})
    out_dir = tmp_path / "out"

    batch = cli_batch(capsys, out_dir, ["run", str(jobs), "-o", str(out_dir)])

    batch_dir = batch.batch_dir
    [run] = batch.runs
    attempt_dir = batch_dir / run["log_dir"]
    stderr = (attempt_dir / "stderr.log").read_text()[-3000:]
    assert batch.code == EXIT_OK, (batch.output[-2000:], run["error"], stderr)
    said = json.loads((attempt_dir / "result.json").read_text())
    answer = "the stand in answers"
    assert said == dict.fromkeys(
        ("chat", "stream", "responses", "langchain", "agents", "azure"), answer
    )
    usage = run["attempts"][-1]["outcome"]["usage"]
    assert usage["main"]["requests"] == 5 and usage["aoai"]["requests"] == 1
    assert sum(u["input_tokens"] for u in usage.values()) == standin.seen.input_tokens
    assert sum(u["output_tokens"] for u in usage.values()) == standin.seen.output_tokens
    assert usage["main"]["answered_by"] == [MODEL_ANSWERING]
    # The real key reached the upstream only (as OpenAI's bearer, as Azure's api-key).
    assert set(standin.seen.credentials) == {f"Bearer {real_key}", real_key}
    everything = b"".join(p.read_bytes() for p in batch_dir.rglob("*") if p.is_file())
    assert real_key.encode() not in everything
    assert real_key not in batch.output
