"""What an agent may ask an upstream through the gateway: the model endpoints, and nothing else
of the host the real credential opens (files, fine-tuning, batches: calls the gateway could not
count, and the upstream would charge later). A path is matched whole, as characters a model
endpoint uses, so `..`, `%`-escapes, a query or another host cannot be smuggled into it."""

from __future__ import annotations

import re

from safeagents_batch.jobs.model import ModelUpstream

_NAME = r"[A-Za-z0-9._:-]+"
ENDPOINTS = {
    "openai": (
        ("POST", r"(chat/completions|completions|responses|embeddings)"),
        ("GET", rf"models(/{_NAME})?"),
    ),
    "azure-openai": (
        ("POST", rf"openai/deployments/{_NAME}/(chat/completions|completions|embeddings)"),
        ("POST", r"openai/(v1/)?(responses|chat/completions|embeddings)"),
        ("GET", r"openai/(v1/)?models"),
    ),
}


def upstream_url(upstream: ModelUpstream, method: str, path: str) -> str | None:
    """The upstream URL of an allowed call (`path` below the model's base URL), or None."""
    for allowed_method, pattern in ENDPOINTS[upstream.kind]:
        if method == allowed_method and re.fullmatch(pattern, path):
            return f"{upstream.url}/{path}"
    return None


def allowed_text(upstream: ModelUpstream) -> str:
    return "; ".join(f"{m} {p}" for m, p in ENDPOINTS[upstream.kind])
