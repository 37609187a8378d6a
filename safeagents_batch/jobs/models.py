"""`models:`: the upstreams the batch's gateway forwards model calls to, checked beyond what the
schema sees (which keys each kind needs). No credential is read here: a key's value is read at
run time, by the gateway, from the host variable the entry names."""

from __future__ import annotations

from typing import Any

from safeagents_batch.jobs.check import Checker
from safeagents_batch.jobs.model import ModelUpstream, Prices

# What each kind needs besides `kind`: the key holding its URL, then any other.
NEEDED = {"openai": ("base_url",), "azure-openai": ("endpoint", "api_version")}
URL_KEY = {"openai": "base_url", "azure-openai": "endpoint"}
FORBIDDEN = {"openai": ("endpoint", "api_version"), "azure-openai": ("base_url",)}


def model_upstreams(checker: Checker, data: dict[str, Any]) -> dict[str, ModelUpstream]:
    """The sound entries of `models:`; each fault is a located problem."""
    entries = checker.clean_part(data.get("models"), ("models",))
    upstreams = {name: _upstream(checker, name, raw) for name, raw in entries.items()}
    return {name: u for name, u in upstreams.items() if u is not None}


def _upstream(checker: Checker, name: str, raw: dict[str, Any]) -> ModelUpstream | None:
    kind = raw["kind"]
    path = ("models", name)
    missing = [key for key in NEEDED[kind] if key not in raw]
    for key in missing:
        checker.add(path, f"a model of kind {kind} needs `{key}`")
    extra = [key for key in FORBIDDEN[kind] if key in raw]
    for key in extra:
        checker.add((*path, key), f"`{key}` is not a key of kind {kind}", of_key=True)
    if missing or extra:
        return None
    return ModelUpstream(
        name=name,
        kind=kind,
        url=str(raw[URL_KEY[kind]]).rstrip("/"),
        api_key_env=raw.get("api_key_env"),
        api_version=raw.get("api_version"),
        prices=_prices(raw.get("prices")),
    )


def _prices(raw: dict[str, float] | None) -> Prices | None:
    if raw is None:
        return None
    return Prices(
        float(raw["input"]), float(raw["output"]), _float_or_none(raw.get("cached_input"))
    )


def _float_or_none(value: float | None) -> float | None:
    return None if value is None else float(value)


def model_key_problems(values: dict[str, Any]) -> list[tuple[tuple[str, ...], str]]:
    """A job's model keys against each other, as (key path within the job, message)."""
    problems: list[tuple[tuple[str, ...], str]] = []
    if values["cost_limit"] is not None and not values["models"]:
        message = "cost_limit counts model calls through the gateway: the job lists no `models`"
        problems.append((("cost_limit",), message))
    for variable, model in values["model_env"].items():
        if model not in values["models"]:
            message = f"model '{model}' is not one the job lists under `models`"
            problems.append((("model_env", variable), message))
    if values["models"] and values["network"] == "none":
        message = (
            "a job with `models` needs a network to reach the model gateway by: "
            "use network: models (the gateway and nothing else)"
        )
        problems.append((("network",), message))
    return problems
