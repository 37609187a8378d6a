"""The safety evaluation of openai_agents_safety_eval.py against a real OpenAI model.

OPENAI_API_KEY is the attempt's token for the batch's model gateway (with-api-key.yaml lists
`models`; the SDK also finds the gateway's URL in OPENAI_BASE_URL), or a key from
env_passthrough or an env_file; OPENAI_MODEL picks the model.
Without a key it says so on stderr and falls back to the offline stand-in model, so the script
still runs end to end. A failing API call (bad key, no network, quota) exits non-zero.
"""

from __future__ import annotations

import os
import sys

from agents import set_tracing_disabled

# The script's whole directory is mounted at /safeagents/code, so its neighbours are importable.
from openai_agents_safety_eval import RuleBasedModel, evaluate

if __name__ == "__main__":
    if os.environ.get("OPENAI_API_KEY"):
        sys.exit(evaluate(os.environ.get("OPENAI_MODEL", "gpt-4o-mini"), mode="live"))
    print("OPENAI_API_KEY is not set: using the offline stand-in model", file=sys.stderr)
    set_tracing_disabled(True)
    sys.exit(evaluate(RuleBasedModel(), mode="offline"))
