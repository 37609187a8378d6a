"""Pacing a batch to a provider's quota, side by side in one run: RUNS runs of CALLS model calls
each against the stand-in upstream (tests/standin_llm.py) enforcing TOKENS_PER_MINUTE with 429
and Retry-After,

- through the batch's gateway, the job in a pool with `tokens_per_minute` at the quota;
- directly (the stand-in's address and key in the job's environment, as people do today), at
  the same -j, the script failing its run on a 429 as a plain client does.

For each: wall time, runs failed, 429s the stand-in sent, and the quota used: the tokens the
stand-in charged over those it could have (its full bucket plus its refill over the batch).

    python benchmarks/gateway_pacing.py [--runs 200] [--calls 10] [--tokens-per-minute 60000]

The stand-in listens on the engine's bridge address (the direct runs reach it there). Speed is
measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import docker
from standin_llm import StandIn

from safeagents_batch.cli import main as cli

WORDS = 60  # words of input per call: the stand-in charges them plus the 4-token output cap

SCRIPT = f"""\
import json, os, sys, urllib.error, urllib.request

base, key = os.environ["OPENAI_BASE_URL"], os.environ["OPENAI_API_KEY"]
body = json.dumps({{"model": "m", "max_tokens": 4,
                   "messages": [{{"role": "user", "content": " ".join(["tok"] * {WORDS})}}]}})
for _ in range(int(os.environ["CALLS"])):
    request = urllib.request.Request(base + "/chat/completions", data=body.encode(),
        headers={{"Authorization": "Bearer " + key, "Content-Type": "application/json"}})
    try:
        urllib.request.urlopen(request, timeout=600).read()
    except urllib.error.HTTPError as exc:
        print("model call failed:", exc.code, file=sys.stderr)
        sys.exit(1)
"""


def jobs_text(side: str, url: str, runs: int, calls: int, tpm: int) -> str:
    head = "version: 1\nframeworks: {plain: {packages: []}}\n"
    job = (
        f"  - {{name: {side}, framework: plain, scripts: agent.py, repeat: {runs},"
        f" env: {{CALLS: '{calls}'"
    )
    if side == "direct":  # the key in the environment: what the gateway exists to avoid
        return head + f"jobs:\n{job}, OPENAI_BASE_URL: '{url}/v1', OPENAI_API_KEY: sk-x}}}}\n"
    models = f"models:\n  m: {{kind: openai, base_url: '{url}/v1'}}\n"
    pools = f"pools:\n  quota: {{tokens_per_minute: {tpm}}}\n"
    return head + models + pools + f"jobs:\n{job}}}, models: [m], pool: quota}}\n"


def measure(side: str, args: argparse.Namespace, host: str, root: Path) -> dict[str, float]:
    standin = StandIn(host=host, tokens_per_minute=args.tokens_per_minute)
    try:
        project = root / side
        project.mkdir()
        (project / "agent.py").write_text(SCRIPT, encoding="utf-8")
        jobs = project / "jobs.yaml"
        jobs.write_text(
            jobs_text(side, standin.url, args.runs, args.calls, args.tokens_per_minute),
            encoding="utf-8",
        )
        started = time.perf_counter()
        cli.main(["run", str(jobs), "-j", str(args.workers), "--no-progress", "-o", str(root)])
        seconds = time.perf_counter() - started
    finally:
        standin.close()
    [manifest] = root.glob("*/manifest.json")  # the batch dir; the project has none
    runs = json.loads(manifest.read_text())["runs"]
    charged = standin.seen.input_tokens + standin.seen.output_tokens
    could = args.tokens_per_minute + args.tokens_per_minute / 60 * seconds
    return {
        "seconds": round(seconds, 1),
        "runs_failed": sum(r["status"] != "succeeded" for r in runs),
        "calls_answered": standin.seen.requests,
        "rejected_429": standin.seen.rejected,
        "tokens_charged": charged,
        "quota_used": round(charged / could, 3),
    }


def bridge_address() -> str:
    client = docker.from_env()
    try:
        return str(client.networks.get("bridge").attrs["IPAM"]["Config"][0]["Gateway"])
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--tokens-per-minute", type=int, default=60_000)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()
    host = bridge_address()
    results = {}
    with tempfile.TemporaryDirectory(prefix="sab-pacing-") as tmp:
        for side in ("gateway", "direct"):
            (Path(tmp) / side).mkdir()
            results[side] = measure(side, args, host, Path(tmp) / side)
    print(json.dumps({"args": vars(args), **results}, indent=2))


if __name__ == "__main__":
    main()
