"""The real credentials, read on the host where the gateway runs, at the moment they are needed:
a key from the host variable an upstream names, or for an Azure OpenAI upstream without one,
an Azure AD token from the host's Azure CLI login (through `azure-identity`), renewed when it
nears expiry. Nothing here is written anywhere; a message names a variable, never a value."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping

from safeagents_batch.jobs.model import ModelUpstream

AZURE_SCOPE = "https://cognitiveservices.azure.com/.default"
RENEW_BEFORE_SECONDS = 300  # an AD token this close to its expiry is renewed first


class CredentialError(Exception):
    """An upstream's credential cannot be had on this host; the message says why."""


class Credentials:
    """The headers that authenticate the gateway to each upstream."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ
        self._azure_token: tuple[str, float] | None = None
        self._lock = threading.Lock()

    def check(self, upstream: ModelUpstream) -> None:
        """Raises CredentialError now if the upstream's credential is missing (before any
        container starts), by getting it once."""
        self.headers(upstream)

    def headers(self, upstream: ModelUpstream) -> dict[str, str]:
        """Blocking (an Azure CLI call may take seconds): run it off the event loop."""
        if upstream.api_key_env is not None:
            key = self._environ.get(upstream.api_key_env)
            if not key:
                raise CredentialError(
                    f"model '{upstream.name}': the host variable {upstream.api_key_env} "
                    "(its api_key_env) is not set"
                )
            if upstream.kind == "azure-openai":
                return {"api-key": key}
            return {"Authorization": f"Bearer {key}"}
        if upstream.kind == "azure-openai":
            return {"Authorization": f"Bearer {self._azure_ad_token(upstream)}"}
        return {}  # an upstream that needs no key (a local vLLM or Ollama server)

    def _azure_ad_token(self, upstream: ModelUpstream) -> str:
        with self._lock:
            cached = self._azure_token
            if cached is not None and cached[1] - RENEW_BEFORE_SECONDS > time.time():
                return cached[0]
            token, expires = _azure_cli_token(upstream)
            self._azure_token = (token, expires)
            return token


def _azure_cli_token(upstream: ModelUpstream) -> tuple[str, float]:
    try:
        from azure.identity import AzureCliCredential  # optional: only Azure AD upstreams
    except ImportError:
        raise CredentialError(
            f"model '{upstream.name}' authenticates with the host's Azure CLI login, which "
            "needs azure-identity: pip install 'safeagents-batch[azure]' (or set api_key_env)"
        ) from None
    try:
        got = AzureCliCredential().get_token(AZURE_SCOPE)
    except Exception as exc:  # azure-identity's errors carry the CLI's own message
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CredentialError(
            f"model '{upstream.name}': no token from the host's Azure CLI login: {first}"
        ) from None
    return got.token, float(got.expires_on)
