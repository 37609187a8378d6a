"""What a call cost, in USD: from the prices the jobs file gives its upstream, else from
genai-prices (a kept price database) for the model that answered, at its provider when the
upstream is OpenAI's or Azure's own. None when no price is known (a local model, a name the
database does not have): unknown, never guessed as zero."""

from __future__ import annotations

from functools import cache
from typing import Any

from safeagents_batch.gateway.usage import Answered
from safeagents_batch.jobs.model import ModelUpstream, Prices

PER_MILLION = 1_000_000


def call_cost(
    upstream: ModelUpstream, said: Answered, requested: str | None, status: int
) -> float | None:
    """Blocking on first use (genai-prices loads its data): call it off the event loop. An
    answer of success that states no usage (a stream asked without `include_usage`) has an
    unknown cost, never a cost of zero."""
    if not said.stated:
        return 0.0 if status >= 400 else None
    if not (said.input_tokens or said.output_tokens):
        return 0.0
    if upstream.prices is not None:
        return _priced(upstream.prices, said)
    model = said.model or requested
    return _database_cost(upstream, said, model) if model else None


def _priced(prices: Prices, said: Answered) -> float:
    cached = min(said.cached_tokens, said.input_tokens)
    cached_price = prices.input if prices.cached_input is None else prices.cached_input
    return (
        (said.input_tokens - cached) * prices.input
        + cached * cached_price
        + said.output_tokens * prices.output
    ) / PER_MILLION


_UNKNOWN: set[tuple[str | None, str]] = set()  # (provider, model) the database does not have


def _database_cost(upstream: ModelUpstream, said: Answered, model: str) -> float | None:
    provider = _provider(upstream)
    if (provider, model) in _UNKNOWN:
        return None  # asked before: a miss searches every provider's models, each call
    genai_prices = _genai_prices()
    usage = genai_prices.Usage(
        input_tokens=said.input_tokens,
        output_tokens=said.output_tokens,
        cache_read_tokens=min(said.cached_tokens, said.input_tokens),
    )
    try:
        found = genai_prices.calc_price(usage, model, provider_id=provider)
    except LookupError:
        _UNKNOWN.add((provider, model))
        return None
    return float(found.total_price)


def _provider(upstream: ModelUpstream) -> str | None:
    if upstream.kind == "azure-openai":
        return "azure"
    return "openai" if "api.openai.com" in upstream.url else None  # else: by the model's name


@cache
def _genai_prices() -> Any:
    import genai_prices  # imported once, when a price is first needed (it loads pydantic)

    return genai_prices
