"""What an upstream's answer says about the call: the model that answered and the tokens it
counted. Pure: bytes in, numbers out. An answer is a JSON object (chat completions, responses,
embeddings) or a stream of server-sent events whose last usage-bearing event counts (chat
completions with `stream_options.include_usage`, the responses API's `response.completed`).
Anything else (an error page, a torn stream) counts no tokens; it is never an exception."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from safeagents_batch.records.model import ModelUsage


@dataclass(frozen=True)
class Answered:
    """The model name and token counts one answer states (zeros where it states none)."""

    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    stated: bool = False  # whether the answer stated its usage at all

    def as_usage(self, *, error: bool, cost: float | None = 0.0) -> ModelUsage:
        """`cost` None: not known (the call is counted as unpriced)."""
        return ModelUsage(
            requests=1,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cached_tokens=self.cached_tokens,
            errors=int(error),
            cost_usd=cost or 0.0,
            unpriced=int(cost is None),
            answered_by=(self.model,) if self.model else (),
        )


def answered(body: bytes, content_type: str) -> Answered:
    """The answer's model and usage, from a JSON body or an event stream."""
    if content_type.startswith("text/event-stream"):
        return _from_events(body)
    return _from_object(_decoded(body))


def _from_events(body: bytes) -> Answered:
    """The last event that states usage, with the last model named before it."""
    found = Answered()
    for line in body.splitlines():
        if not line.startswith(b"data:"):
            continue
        event = _from_object(_decoded(line[5:].strip()))
        if event.model is not None or event.stated:
            found = Answered(
                model=event.model or found.model,
                input_tokens=event.input_tokens or found.input_tokens,
                output_tokens=event.output_tokens or found.output_tokens,
                cached_tokens=event.cached_tokens or found.cached_tokens,
                stated=event.stated or found.stated,
            )
    return found


def _decoded(data: bytes) -> Any:
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError:
        return None


def _from_object(data: Any) -> Answered:
    if not isinstance(data, dict):
        return Answered()
    if isinstance(data.get("response"), dict):  # a responses-API event wraps the response
        data = data["response"]
    stated = isinstance(data.get("usage"), dict)
    usage = data["usage"] if stated else {}
    details = _first_dict(usage, "prompt_tokens_details", "input_tokens_details")
    model = data.get("model")
    return Answered(
        model=model if isinstance(model, str) and model else None,
        input_tokens=_count(usage, "prompt_tokens", "input_tokens"),
        output_tokens=_count(usage, "completion_tokens", "output_tokens"),
        cached_tokens=_count(details, "cached_tokens"),
        stated=stated,
    )


def _first_dict(data: dict[str, Any], *keys: str) -> dict[str, Any]:
    for key in keys:
        if isinstance(data.get(key), dict):
            found: dict[str, Any] = data[key]
            return found
    return {}


def _count(data: dict[str, Any], *keys: str) -> int:
    """The first key holding a plausible count: an upstream's text is input too."""
    for key in keys:
        value = data.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**12:
            return value
    return 0
