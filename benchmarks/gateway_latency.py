"""The model gateway's added latency per call: the same chat completion against the stand-in
upstream (tests/standin_llm.py), directly and through the gateway, alternating, on loopback.
Prints the median and p99 of each and of the difference.

    python benchmarks/gateway_latency.py [--calls 2000]

Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from standin_llm import StandIn

from safeagents_batch.gateway.credentials import Credentials
from safeagents_batch.gateway.server import Gateway
from safeagents_batch.jobs.model import ModelUpstream

BODY = json.dumps(
    {"model": "m", "messages": [{"role": "user", "content": "how many words is this"}]}
).encode()


def timed_calls(url: str, token: str, count: int) -> list[float]:
    """`count` calls on one kept-alive connection, as an SDK makes them; seconds each."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(str(parts.hostname), parts.port, timeout=30)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    seconds = []
    for _ in range(count):
        started = time.perf_counter()
        connection.request("POST", f"{parts.path}/chat/completions", BODY, headers)
        answer = connection.getresponse()
        answer.read()
        seconds.append(time.perf_counter() - started)
        assert answer.status == 200, answer.status
    connection.close()
    return seconds


def summary(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    standin = StandIn()
    gateway = Gateway(Credentials({"KEY": "sk-benchmark"}))
    try:
        upstream = ModelUpstream(
            name="m", kind="openai", url=f"{standin.url}/v1", api_key_env="KEY"
        )
        token = gateway.open_attempt({"m": upstream}, lambda line: None)
        through = f"{gateway.listen('127.0.0.1')}/m/m"
        direct_all: list[float] = []
        gateway_all: list[float] = []
        per_round = args.calls // args.rounds
        timed_calls(through, token, 20)  # warm-up: connections, the price database's import
        for _ in range(args.rounds):  # alternating, so both see the same machine
            direct_all += timed_calls(f"{standin.url}/v1", "sk-benchmark", per_round)
            gateway_all += timed_calls(through, token, per_round)
        gateway.close_attempt(token)
    finally:
        gateway.stop()
        standin.close()
    direct, via = summary(direct_all), summary(gateway_all)
    result = {
        "calls_each": len(direct_all),
        "direct": direct,
        "gateway": via,
        "added_median_ms": round(via["median_ms"] - direct["median_ms"], 3),
        "added_p99_ms": round(via["p99_ms"] - direct["p99_ms"], 3),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
