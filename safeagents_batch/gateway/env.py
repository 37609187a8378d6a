"""What a container is told about its models: the gateway's URL in the variables each SDK
reads, and its attempt's token where the SDK looks for a key. The first model of each kind a
job lists is the default those variables point at; every model also has its own variable,
`SAFEAGENTS_MODEL_URL_<NAME>` (the name upper-cased, other characters as `_`)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from importlib import resources

from safeagents_batch.jobs.model import ModelUpstream

TOKEN_VARIABLE = "SAFEAGENTS_MODEL_TOKEN"
AZ_SHIM_PATH = "/usr/local/bin/az"  # where a container finds the shim (az_shim.sh)


def az_shim_text() -> str:
    """An `az` whose `account get-access-token` prints the attempt's token, so that
    azure-identity's AzureCliCredential works unchanged against the gateway."""
    return resources.files("safeagents_batch.gateway").joinpath("az_shim.sh").read_text("utf-8")


def model_base_url(gateway_url: str, name: str) -> str:
    return f"{gateway_url}/m/{name}"


def container_env(
    gateway_url: str,
    token: str,
    upstreams: Sequence[ModelUpstream],
    mapped: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """`mapped`: VARIABLE -> model name, for code that reads a URL under its own name."""
    env = {TOKEN_VARIABLE: token}
    for upstream in reversed(upstreams):  # the first of each kind is written last: it wins
        env.update(_sdk_variables(model_base_url(gateway_url, upstream.name), token, upstream))
    for upstream in upstreams:
        env[f"SAFEAGENTS_MODEL_URL_{_variable_part(upstream.name)}"] = model_base_url(
            gateway_url, upstream.name
        )
    for variable, name in (mapped or {}).items():
        env[variable] = model_base_url(gateway_url, name)
    return env


def _sdk_variables(url: str, token: str, upstream: ModelUpstream) -> dict[str, str]:
    if upstream.kind == "openai":
        return {"OPENAI_BASE_URL": url, "OPENAI_API_KEY": token}
    variables = {"AZURE_OPENAI_ENDPOINT": url, "AZURE_OPENAI_API_KEY": token}
    if upstream.api_version is not None:
        variables["OPENAI_API_VERSION"] = upstream.api_version
    return variables


def _variable_part(name: str) -> str:
    return re.sub(r"[^A-Z0-9_]", "_", name.upper())
