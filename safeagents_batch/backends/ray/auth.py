"""Token authentication of the Ray cluster a batch joins (Ray 2.52 and later).

A Ray cluster that asks for no token runs the code of anyone who reaches its port, and the
tool ships credentials and runs containers there. So the driver asks the head's GCS one
question twice before it joins: without a token (a cluster that answers is open: refused,
unless the user says `--insecure-cluster`), and with the driver's token (a cluster that
refuses it has another token: one line saying so, not Ray's retries).
"""

from __future__ import annotations

import os
from pathlib import Path

import grpc
from ray._raylet import Config as RayConfig  # type: ignore[attr-defined]  # not in Ray's stub

from safeagents_batch.core.errors import EngineUnavailable, UsageError, one_line

PROBE = "/ray.rpc.NodeInfoGcsService/GetClusterId"  # cheap, and behind the auth interceptor
PROBE_SECONDS = 10.0
DEFAULT_TOKEN_FILE = Path("~/.ray/auth_token")
OPEN_CLUSTER = (
    "asks for no token: whoever reaches its port runs code on its nodes; start it with "
    "RAY_AUTH_MODE=token (docs/ray.md), or pass --insecure-cluster to use it as it is"
)
NO_TOKEN = (
    "needs its token on this machine: set RAY_AUTH_TOKEN, or RAY_AUTH_TOKEN_PATH, or put it "
    "in ~/.ray/auth_token (`ray get-auth-token` on the head prints it)"
)


def require_token_auth(address: str) -> None:
    """Returns once the cluster at `address` asks for a token and takes the driver's; then
    Ray in this process uses it (RAY_AUTH_MODE=token)."""
    if _answers(address, ()):
        raise UsageError(f"the Ray cluster at {address} {OPEN_CLUSTER}")
    token = driver_token()
    if token is None:
        raise UsageError(f"the Ray cluster at {address} {NO_TOKEN}")
    if not _answers(address, (("authorization", f"Bearer {token}"),)):
        raise UsageError(
            f"the Ray cluster at {address} refuses this machine's token: it has another one "
            "(`ray get-auth-token` on the head prints it; set RAY_AUTH_TOKEN to it)"
        )
    use_token_mode()


def use_token_mode() -> None:
    """Ray in this process, and the processes it starts, send the token. Ray reads its mode
    once, when it is imported; so it is read again, as Ray's own `ray start` does."""
    os.environ["RAY_AUTH_MODE"] = "token"
    reread_ray_config()


def reread_ray_config() -> None:
    """Ray's settings in this process read again from its environment."""
    RayConfig.initialize("")


def driver_token() -> str | None:
    """The token Ray would send, where Ray looks for it, in Ray's order."""
    if token := os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return token
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or DEFAULT_TOKEN_FILE).expanduser()
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def _answers(address: str, metadata: tuple[tuple[str, str], ...]) -> bool:
    """Whether the GCS answers the probe with this metadata; False when it says the caller is
    not authenticated; EngineUnavailable when it does not answer at all."""
    with grpc.insecure_channel(address) as channel:
        probe = channel.unary_unary(
            PROBE, request_serializer=lambda raw: raw, response_deserializer=lambda raw: raw
        )
        try:
            probe(b"", timeout=PROBE_SECONDS, metadata=metadata)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                return False
            raise EngineUnavailable(
                f"the Ray cluster at {address} does not answer: {one_line(exc)}"
            ) from None
    return True
