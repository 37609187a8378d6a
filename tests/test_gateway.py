"""The model gateway on loopback, against the stand-in upstream: a call with the attempt's token
is forwarded with the real key swapped in, streamed back, counted as the upstream counted it
and recorded without any credential; a wrong, closed or other model's token is refused."""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from standin_llm import MODEL_ANSWERING, StandIn

from safeagents_batch.gateway.credentials import CredentialError, Credentials
from safeagents_batch.gateway.env import az_shim_text, container_env
from safeagents_batch.gateway.pace import estimate_tokens
from safeagents_batch.gateway.server import Gateway
from safeagents_batch.jobs.model import ModelUpstream, PoolRate, Prices

REAL_KEY = "sk-real-key-never-in-a-container-0123456789"


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    gate = Gateway(Credentials({"UPSTREAM_KEY": REAL_KEY}))
    yield gate
    gate.stop()


def upstreams(standin: StandIn) -> dict[str, ModelUpstream]:
    return {
        "main": ModelUpstream(
            name="main", kind="openai", url=f"{standin.url}/v1", api_key_env="UPSTREAM_KEY"
        ),
        "azure": ModelUpstream(
            name="azure",
            kind="azure-openai",
            url=standin.url,
            api_key_env="UPSTREAM_KEY",
            api_version="2024-10-21",
        ),
    }


def post(url: str, token: str, body: dict[str, Any], header: str = "Authorization") -> Any:
    value = f"Bearer {token}" if header == "Authorization" else token
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", header: value},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return answer.read()


def status_of(url: str, token: str, body: dict[str, Any]) -> tuple[int, str]:
    try:
        post(url, token, body)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())["error"]["message"]
    return 200, ""


CHAT = {"model": "m", "messages": [{"role": "user", "content": "say three words please"}]}


def test_calls_are_forwarded_with_the_real_key_counted_and_recorded_without_it(
    standin: StandIn, gateway: Gateway
) -> None:
    lines: list[bytes] = []
    url = gateway.listen("127.0.0.1")
    token = gateway.open_attempt(upstreams(standin), lines.append)
    env = container_env(url, token, list(upstreams(standin).values()))
    base = env["OPENAI_BASE_URL"]

    chat = json.loads(post(f"{base}/chat/completions", token, CHAT))
    streamed = post(f"{base}/chat/completions", token, {**CHAT, "stream": True})
    post(f"{base}/responses", token, {"model": "m", "input": "one two"})
    post(f"{base}/embeddings", token, {"model": "m", "input": "a b c"})
    azure_url = f"{env['AZURE_OPENAI_ENDPOINT']}/openai/deployments/d/chat/completions"
    post(f"{azure_url}?api-version=2024-10-21", token, CHAT, header="api-key")
    usage = gateway.close_attempt(token).usage

    assert chat["model"] == MODEL_ANSWERING
    assert streamed.count(b"data: ") == 6 and streamed.endswith(b"data: [DONE]\n\n")
    assert standin.seen.credentials == [f"Bearer {REAL_KEY}"] * 4 + [REAL_KEY]
    assert standin.seen.paths[-1] == "/openai/deployments/d/chat/completions"
    main, azure = usage["main"], usage["azure"]
    assert (main.requests, azure.requests) == (4, 1)
    assert main.input_tokens + azure.input_tokens == standin.seen.input_tokens
    assert main.output_tokens + azure.output_tokens == standin.seen.output_tokens
    assert main.answered_by == (MODEL_ANSWERING,)
    assert main.errors == azure.errors == 0
    records = [json.loads(line) for line in lines]
    assert [r["path"] for r in records][:2] == ["chat/completions"] * 2
    assert records[1]["usage"]["output_tokens"] == 4  # from the stream's last event
    assert all(r["status"] == 200 for r in records)
    assert REAL_KEY not in b"".join(lines).decode() and token not in b"".join(lines).decode()


def test_a_token_is_refused_when_wrong_closed_or_for_a_model_its_job_does_not_list(
    standin: StandIn, gateway: Gateway
) -> None:
    url = gateway.listen("127.0.0.1")
    models = upstreams(standin)
    token = gateway.open_attempt({"main": models["main"]}, lambda line: None)
    chat_of = f"{url}/m/main/chat/completions"

    assert status_of(chat_of, "sab-not-a-token", CHAT)[0] == 401
    code, message = status_of(f"{url}/m/azure/chat/completions", token, CHAT)
    assert code == 403 and "'azure' is not one this job may use" in message
    assert status_of(chat_of, token, CHAT) == (200, "")
    gateway.close_attempt(token)
    assert status_of(chat_of, token, CHAT)[0] == 401
    assert standin.seen.requests == 1


def test_an_upstream_that_does_not_answer_is_a_502_naming_the_model_and_counted_as_an_error(
    gateway: Gateway,
) -> None:
    dead = ModelUpstream(name="dead", kind="openai", url="http://127.0.0.1:9/v1")
    url = gateway.listen("127.0.0.1")
    lines: list[bytes] = []
    token = gateway.open_attempt({"dead": dead}, lines.append)

    code, message = status_of(f"{url}/m/dead/chat/completions", token, CHAT)

    assert code == 502 and "model 'dead' did not answer" in message
    assert gateway.close_attempt(token).usage["dead"].errors == 1
    assert json.loads(lines[0])["status"] == 502


def test_a_missing_key_is_refused_before_the_attempt_naming_the_variable_not_a_value() -> None:
    needs = ModelUpstream(name="m", kind="openai", url="http://x/v1", api_key_env="NOT_SET_HERE")
    with pytest.raises(CredentialError, match=r"host variable NOT_SET_HERE .* is not set"):
        Credentials({}).check(needs)


def big_chat(words: int = 800) -> dict[str, Any]:
    """A call the stand-in counts at `words` input tokens plus its 4-token output cap (804);
    eight of them are 6,432 tokens, a little over a 6,000-token minute."""
    text = " ".join(["tok"] * words)
    return {"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": text}]}


def calls_at_once(url: str, token: str, count: int) -> list[tuple[int, str]]:
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda _: status_of(url, token, big_chat()), range(count)))


def test_a_429_is_waited_out_as_its_retry_after_says_and_the_agent_never_sees_it() -> None:
    standin = StandIn(tokens_per_minute=6000)  # 100 tokens a second: the eighth call waits
    gateway = Gateway(Credentials({}))
    try:
        upstream = ModelUpstream(name="m", kind="openai", url=f"{standin.url}/v1")
        token = gateway.open_attempt({"m": upstream}, lambda line: None)
        answers = calls_at_once(f"{gateway.listen('127.0.0.1')}/m/m/chat/completions", token, 8)
        usage = gateway.close_attempt(token).usage["m"]
    finally:
        gateway.stop()
        standin.close()
    assert answers == [(200, "")] * 8
    assert standin.seen.rejected > 0 and usage.retries == standin.seen.rejected
    assert usage.requests == 8 and usage.errors == 0


def test_a_pool_paced_at_the_providers_quota_gets_no_429_at_all() -> None:
    standin = StandIn(tokens_per_minute=6000)
    gateway = Gateway(Credentials({}))
    try:
        upstream = ModelUpstream(name="m", kind="openai", url=f"{standin.url}/v1")
        pace = ("api", PoolRate(tokens_per_minute=6000))
        url = f"{gateway.listen('127.0.0.1')}/m/m/chat/completions"
        # Two attempts of the pool: one pace for both.
        tokens = [gateway.open_attempt({"m": upstream}, lambda line: None, pace) for _ in "ab"]
        with ThreadPoolExecutor(2) as pool:
            answers = [
                a for part in pool.map(lambda t: calls_at_once(url, t, 4), tokens) for a in part
            ]
        usages = [gateway.close_attempt(t).usage["m"] for t in tokens]
    finally:
        gateway.stop()
        standin.close()
    assert answers == [(200, "")] * 8
    assert standin.seen.rejected == 0 and sum(u.retries for u in usages) == 0
    assert sum(u.input_tokens for u in usages) == standin.seen.input_tokens == 6400


def test_the_estimate_of_a_call_is_its_size_and_its_output_cap() -> None:
    body = json.dumps(big_chat()).encode()
    assert estimate_tokens(body) == -(-len(body) // 4) + 4
    assert estimate_tokens(b"not json") == 2


def test_cost_from_the_files_prices_and_the_runs_cost_limit_refuses_further_calls(
    standin: StandIn, gateway: Gateway
) -> None:
    prices = Prices(input=1_000_000.0, output=2_000_000.0)  # $1 an input token, $2 an output
    upstream = ModelUpstream(name="m", kind="openai", url=f"{standin.url}/v1", prices=prices)
    lines: list[bytes] = []
    token = gateway.open_attempt({"m": upstream}, lines.append, cost_limit=20.0)
    url = f"{gateway.listen('127.0.0.1')}/m/m/chat/completions"

    answers = [status_of(url, token, CHAT) for _ in range(3)]
    calls = gateway.close_attempt(token)

    # One call: 4 input words ($4) and 4 output tokens ($8) = $12; the second takes the run
    # to $24, past its $20; the third is refused before it leaves.
    assert [a[0] for a in answers] == [200, 200, 402]
    assert answers[2][1] == "cost limit: $24.0000 spent of $20"
    assert calls.usage["m"].cost_usd == 24.0 and calls.usage["m"].requests == 2
    assert calls.stopped == answers[2][1] and standin.seen.requests == 2
    assert json.loads(lines[-1])["status"] == 402


def test_a_cost_limit_with_no_known_price_refuses_after_the_first_call(
    standin: StandIn, gateway: Gateway
) -> None:
    upstream = ModelUpstream(name="local", kind="openai", url=f"{standin.url}/v1")
    token = gateway.open_attempt({"local": upstream}, lambda line: None, cost_limit=1.0)
    url = f"{gateway.listen('127.0.0.1')}/m/local/chat/completions"

    answers = [status_of(url, token, CHAT) for _ in range(2)]
    calls = gateway.close_attempt(token)

    assert calls.usage["local"].unpriced == 1  # the stand-in's model has no price
    assert answers[0] == (200, "") and answers[1][0] == 402
    assert "no price is known for model local" in answers[1][1]


def test_genai_prices_price_a_known_model_at_its_provider() -> None:
    from safeagents_batch.gateway.prices import call_cost
    from safeagents_batch.gateway.usage import Answered

    openai = ModelUpstream(name="o", kind="openai", url="https://api.openai.com/v1")
    said = Answered(model="gpt-4o-2024-08-06", input_tokens=1000, output_tokens=100, stated=True)
    cost = call_cost(openai, said, None, 200)
    # genai-prices' own figure for gpt-4o: $2.50 and $10 per million input and output tokens.
    assert cost == pytest.approx(1000 * 2.5e-6 + 100 * 10e-6)
    unknown = Answered(model="no-such-model-x", input_tokens=5, stated=True)
    assert call_cost(openai, unknown, None, 200) is None
    # An answer of success that states no usage (a stream without include_usage): unknown;
    # an error that states none cost nothing.
    assert call_cost(openai, Answered(model="gpt-4o"), None, 200) is None
    assert call_cost(openai, Answered(model="gpt-4o"), None, 500) == 0.0


def test_a_bucket_refills_by_the_minute_and_a_costlier_answer_is_taken_from_later_calls() -> None:
    from safeagents_batch.gateway.pace import Bucket

    now = [0.0]
    bucket = Bucket(600, clock=lambda: now[0])  # 10 a second
    assert bucket.wait_for(600) == 0 and bucket.wait_for(10_000) == 0  # capped at capacity
    bucket.take(550)
    assert bucket.wait_for(100) == pytest.approx(5.0)
    now[0] = 5.0
    assert bucket.wait_for(100) == 0
    bucket.take(100)
    bucket.take(60)  # the answer said more than the call was counted at
    assert bucket.wait_for(10) == pytest.approx(7.0)


def test_retry_after_in_milliseconds_wins_then_seconds_then_the_default() -> None:
    from safeagents_batch.gateway.pace import retry_after_seconds

    assert retry_after_seconds({"retry-after-ms": "250", "Retry-After": "3"}, 1.0) == 0.25
    assert retry_after_seconds({"Retry-After": "3"}, 1.0) == 3.0
    assert retry_after_seconds({"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}, 1.0) == 1.0
    assert retry_after_seconds({"Retry-After": "nan"}, 1.0) == 1.0


def test_an_azure_upstream_without_a_key_uses_the_hosts_azure_cli_login_renewed_near_expiry(
    standin: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """azure-identity's AzureCliCredential on the host, against a stand-in `az` that counts
    its calls and prints a token expiring in an hour: the upstream gets that token; a second
    call reuses it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "az-calls"
    az = bin_dir / "az"
    az.write_text(f"#!/bin/sh\necho x >> {calls}\n" + az_shim_text().split("\n", 1)[1])
    az.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("SAFEAGENTS_MODEL_TOKEN", "host-ad-token")  # what this `az` prints
    gateway = Gateway(Credentials())
    try:
        upstream = ModelUpstream(
            name="aoai", kind="azure-openai", url=standin.url, api_version="2024-10-21"
        )
        token = gateway.open_attempt({"aoai": upstream}, lambda line: None)
        url = f"{gateway.listen('127.0.0.1')}/m/aoai/openai/deployments/d/chat/completions"
        answers = [status_of(url, token, CHAT) for _ in range(2)]
        gateway.close_attempt(token)
    finally:
        gateway.stop()
    assert answers == [(200, "")] * 2
    assert standin.seen.credentials == ["Bearer host-ad-token"] * 2
    assert calls.read_text().count("x") == 1  # checked at open, then reused until near expiry


@pytest.mark.parametrize(
    "path",
    [
        "../../stolen",
        "%2e%2e/%2e%2e/stolen",
        "chat/completions/../../../stolen",
        "files",
        "chat%2Fcompletions%3Fx=1",
        "//127.0.0.1:9/v1/chat/completions",
    ],
)
def test_only_model_endpoints_go_out_and_no_path_leaves_the_upstreams_base(
    standin: StandIn, gateway: Gateway, path: str
) -> None:
    upstream = ModelUpstream(name="m", kind="openai", url=f"{standin.url}/v1", api_key_env="K")
    gate = Gateway(Credentials({"K": REAL_KEY}))
    try:
        token = gate.open_attempt({"m": upstream}, lambda line: None)
        code, message = status_of(f"{gate.listen('127.0.0.1')}/m/m/{path}", token, CHAT)
    finally:
        gate.stop()
    assert code in (403, 404), (code, message)
    assert standin.seen.requests == 0 and standin.seen.elsewhere == []


def test_a_redirect_of_the_upstream_is_relayed_never_followed_with_the_key(
    standin: StandIn,
) -> None:
    upstream = ModelUpstream(name="m", kind="openai", url=f"{standin.url}/v1", api_key_env="K")
    gate = Gateway(Credentials({"K": REAL_KEY}))
    try:
        token = gate.open_attempt({"m": upstream}, lambda line: None)
        url = f"{gate.listen('127.0.0.1')}/m/m/chat/completions?redirect=1"
        request = urllib.request.Request(
            url, data=json.dumps(CHAT).encode(), headers={"Authorization": f"Bearer {token}"}
        )
        opener = urllib.request.build_opener(NoRedirect())
        with pytest.raises(urllib.error.HTTPError) as answer:
            opener.open(request, timeout=30)
    finally:
        gate.stop()
    assert answer.value.code == 307
    assert standin.seen.elsewhere == []  # the gateway did not follow it


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def test_a_429_that_says_again_at_once_is_retried_a_bounded_number_of_times(
    standin: StandIn, gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safeagents_batch.gateway import server

    monkeypatch.setattr(server, "MAX_RETRIES", 3)
    upstream = ModelUpstream(name="m", kind="openai", url=f"{standin.url}/v1")
    token = gateway.open_attempt({"m": upstream}, lambda line: None)
    url = f"{gateway.listen('127.0.0.1')}/m/m/chat/completions?always_429=1"

    code, _ = status_of(url, token, CHAT)

    assert code == 429
    assert gateway.close_attempt(token).usage["m"].retries == 3


def test_a_call_asking_for_endless_output_whose_agent_leaves_does_not_hold_its_pool(
    standin: StandIn, gateway: Gateway
) -> None:
    """`max_tokens` of 10**15, and the agent gone before the answer: the call is counted at
    most a minute of the pool and settled by its answer all the same, so the pool's next call
    still goes out."""
    upstream = ModelUpstream(name="m", kind="openai", url=f"{standin.url}/v1")
    pace = ("api", PoolRate(tokens_per_minute=600_000))
    token = gateway.open_attempt({"m": upstream}, lambda line: None, pace)
    base = gateway.listen("127.0.0.1")
    body = json.dumps({**CHAT, "max_tokens": 10**15}).encode()
    parts = urllib.parse.urlsplit(base)
    with socket.create_connection((str(parts.hostname), int(parts.port or 0))) as gone:
        gone.sendall(
            b"POST /m/m/chat/completions HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n".encode()
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )

    answer = status_of(f"{base}/m/m/chat/completions", token, CHAT)

    assert answer == (200, "")
    assert gateway.close_attempt(token).usage["m"].requests == 2  # the first counted too
