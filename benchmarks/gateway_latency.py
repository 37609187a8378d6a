"""The model gateway's added latency per call: the same chat completion against the stand-in
upstream (tests/standin_llm.py), directly, through the gateway, and through the pipe a
container on a bridge network reaches the gateway by (gateway/forward.py, to the gateway's Unix
socket), alternating, on loopback. Prints the median and p99 of each and of the differences.

    python benchmarks/gateway_latency.py [--calls 2000]

Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from standin_llm import StandIn

from safeagents_batch.gateway.credentials import Credentials
from safeagents_batch.gateway.forward import Forwarder
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
    socket_dir = Path(tempfile.mkdtemp(prefix="sab-bench-"))
    pipe: Forwarder | None = None
    try:
        upstream = ModelUpstream(
            name="m", kind="openai", url=f"{standin.url}/v1", api_key_env="KEY"
        )
        token = gateway.open_attempt({"m": upstream}, lambda line: None)
        through = f"{gateway.listen('127.0.0.1')}/m/m"
        gateway.listen_unix(str(socket_dir / "gateway.sock"))
        pipe = Forwarder(f"unix:{socket_dir / 'gateway.sock'}")
        piped = f"{pipe.listen('127.0.0.1')}/m/m"
        times: dict[str, list[float]] = {"direct": [], "gateway": [], "pipe": []}
        per_round = args.calls // args.rounds
        timed_calls(through, token, 20)  # warm-up: connections, the price database's import
        for _ in range(args.rounds):  # alternating, so all see the same machine
            times["direct"] += timed_calls(f"{standin.url}/v1", "sk-benchmark", per_round)
            times["gateway"] += timed_calls(through, token, per_round)
            times["pipe"] += timed_calls(piped, token, per_round)
        gateway.close_attempt(token)
    finally:
        if pipe is not None:
            pipe.stop()
        gateway.stop()
        standin.close()
        shutil.rmtree(socket_dir, ignore_errors=True)
    print(json.dumps(report(times), indent=2))


def report(times: dict[str, list[float]]) -> dict[str, object]:
    summaries = {name: summary(seconds) for name, seconds in times.items()}
    direct = summaries["direct"]
    result: dict[str, object] = {"calls_each": len(times["direct"]), **summaries}
    for name in ("gateway", "pipe"):
        result[f"{name}_added_median_ms"] = round(
            summaries[name]["median_ms"] - direct["median_ms"], 3
        )
        result[f"{name}_added_p99_ms"] = round(summaries[name]["p99_ms"] - direct["p99_ms"], 3)
    return result


if __name__ == "__main__":
    main()
