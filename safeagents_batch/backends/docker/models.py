"""Model calls of the local engine's containers: the batch's gateway runs on the engine's host,
reached through a pipe on the bridge address of the network the container is on
(gateway/forward.py), so the container reaches it and the host's real credentials stay on the
host. `network: models` is a network of the batch's own where the gateway, through a relay, is
all a container can reach (relay.py). On a Ray node the pipes lead to the driver's gateway.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors
from docker.types import Mount

from safeagents_batch.backends.base import AttemptRequest, GatewayTicket, Sink
from safeagents_batch.backends.docker.relay import (
    SOCKET_NAME,
    ModelsNetwork,
    RelayError,
    remove_models_network,
    start_models_network,
)
from safeagents_batch.core.once import OncePerKey
from safeagents_batch.gateway.credentials import CredentialError
from safeagents_batch.gateway.env import AZ_SHIM_PATH, az_shim_text, container_env
from safeagents_batch.gateway.forward import UNIX_PREFIX, Door, Forwarder
from safeagents_batch.gateway.passes import AttemptCalls
from safeagents_batch.gateway.server import Gateway

MODELS_NETWORK = "models"  # `network: models`: the gateway and nothing else
HOST_NETWORKS = ("host",)  # the container shares the host's loopback


class ModelSetupError(Exception):
    """The attempt cannot be given its models; the message is its one-line error."""


@dataclass(frozen=True)
class ModelPass:
    """What one attempt's container gets: its network, its variables, the `az` shim's mount;
    `token` to close."""

    network: str
    env: dict[str, str] = field(repr=False)
    token: str = field(repr=False)
    mounts: tuple[Mount, ...] = ()
    isolated: bool = False  # on the batch's `models` network: no IPv6 either (relay.py)
    own: bool = True  # the token is this backend's gateway's, to close after the attempt


class ModelAccess:
    """The engine's side of the gateway: started on first use, one per backend (so per
    batch), stopped by `close`. Where a request carries a ticket for a gateway elsewhere
    (a Ray node's attempt: the driver holds the gateway), a forwarder to it takes the
    gateway's place here, and the pass is the driver's to close. Thread-safe."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client
        self._gateway: Gateway | None = None
        self._forwarders: dict[str, Forwarder] = {}  # by the gateway's address they pipe to
        self._socket_dir: Path | None = None
        self._networks: OncePerKey[str, ModelsNetwork] = OncePerKey()  # by batch id
        self._lock = threading.Lock()

    def open(self, request: AttemptRequest, sink: Sink) -> ModelPass:
        """Raises ModelSetupError (one line) when the container could not reach its models."""
        ticket = request.gateway
        network, url = self._reach(request, *self._doors(ticket))
        shim = Mount(AZ_SHIM_PATH, str(self._az_shim()), type="bind", read_only=True)
        token = ticket.token if ticket is not None else self.open_token(request, sink)
        env = container_env(url, token, request.models, request.model_env)
        isolated = request.network == MODELS_NETWORK
        return ModelPass(network, env, token, (shim,), isolated, own=ticket is None)

    def open_token(self, request: AttemptRequest, sink: Sink) -> str:
        """A pass at this backend's gateway for the attempt, its calls recorded in `sink`."""
        models = {upstream.name: upstream for upstream in request.models}
        pace = (request.pace.pool, request.pace.rate) if request.pace else None
        try:
            return self._gateway_now().open_attempt(
                models, sink.model_call, pace, request.cost_limit
            )
        except CredentialError as exc:
            raise ModelSetupError(str(exc)) from None

    def open_ticket(self, request: AttemptRequest, sink: Sink, host: str) -> GatewayTicket:
        """A pass for an attempt whose container runs elsewhere: the gateway's URL on `host`
        (an address of this machine the other one reaches) and a token; `close_token` ends it."""
        try:
            url = self._gateway_now().listen(host)
        except OSError as exc:
            raise ModelSetupError(
                f"the model gateway cannot listen on {host} ({exc.strerror or exc})"
            ) from None
        return GatewayTicket(url, self.open_token(request, sink))

    def close_token(self, token: str) -> AttemptCalls:
        return self._gateway_now().close_attempt(token)

    def close_attempt(self, model_pass: ModelPass) -> AttemptCalls | None:
        """The attempt's calls, its token dead; None for a pass that is not ours to close."""
        return self.close_token(model_pass.token) if model_pass.own else None

    def remove_network(self, batch_id: str) -> None:
        """The batch's `models` network, once its containers (the relay too) are gone."""
        remove_models_network(self.client, batch_id)

    def close(self) -> None:
        """Stops the gateway (or forwarders) and removes the socket dir; used again, it
        starts afresh (a Ray node's agent closes it at each sweep: its process may be
        killed rather than closed)."""
        with self._lock:
            gateway, self._gateway = self._gateway, None
            forwarders, self._forwarders = list(self._forwarders.values()), {}
            socket_dir, self._socket_dir = self._socket_dir, None
            self._networks = OncePerKey()
        doors: list[Door] = [*forwarders, *([gateway] if gateway is not None else [])]
        try:
            for door in doors:
                door.stop()
        finally:
            if socket_dir is not None:
                shutil.rmtree(socket_dir, ignore_errors=True)  # a socket and its dir: ours alone

    def _gateway_now(self) -> Gateway:
        with self._lock:
            if self._gateway is None:
                self._gateway = Gateway()
            return self._gateway

    def _forwarder(self, url: str) -> Forwarder:
        with self._lock:
            if url not in self._forwarders:
                self._forwarders[url] = Forwarder(url)
            return self._forwarders[url]

    def _doors(self, ticket: GatewayTicket | None) -> tuple[Door, Door]:
        """Where a relay's socket is served, and what listens on a network's bridge address.
        Here, the gateway serves the relay (which bounds each container's connections
        itself) and a pipe to the gateway's socket faces the bridge (gateway/forward.py); on
        a Ray node, a pipe to the driver's gateway does both."""
        if ticket is not None:
            pipe = self._forwarder(ticket.url)
            return pipe, pipe
        gateway = self._gateway_now()
        path = str(self._socket_dir_now() / SOCKET_NAME)
        gateway.listen_unix(path)
        return gateway, self._forwarder(f"{UNIX_PREFIX}{path}")

    def _reach(self, request: AttemptRequest, relayed: Door, bridged: Door) -> tuple[str, str]:
        """The network the container goes on, and the gateway's URL from there."""
        if request.network == "none":
            raise ModelSetupError(
                "a job with `models` cannot have network: none (its container could not "
                "reach the model gateway); use network: models"
            )
        if request.network == MODELS_NETWORK:
            made = self._networks.get(
                request.batch_id, lambda: self._models_network(request, relayed)
            )
            return made.name, made.url
        host = self._gateway_host(request.network)
        try:
            return request.network, bridged.listen(host)
        except OSError as exc:
            raise ModelSetupError(
                f"the model gateway cannot listen on {host}, where network "
                f"'{request.network}' reaches the host ({exc.strerror or exc}); "
                "is the engine on another machine?"
            ) from None

    def _models_network(self, request: AttemptRequest, door: Door) -> ModelsNetwork:
        socket_dir = self._socket_dir_now()
        door.listen_unix(str(socket_dir / SOCKET_NAME))
        try:
            return start_models_network(self.client, request.batch_id, request.image, socket_dir)
        except RelayError as exc:
            raise ModelSetupError(str(exc)) from None

    def _az_shim(self) -> Path:
        shim = self._socket_dir_now() / "az"
        with self._lock:
            if not shim.exists():
                shim.write_text(az_shim_text(), encoding="utf-8")
                shim.chmod(0o755)
        return shim

    def _socket_dir_now(self) -> Path:
        with self._lock:
            if self._socket_dir is None:
                # Private (0700): only this user, and the relay running as this user, connect.
                self._socket_dir = Path(tempfile.mkdtemp(prefix="sab-gateway-"))
            return self._socket_dir

    def _gateway_host(self, network: str) -> str:
        """The host's address on the network's bridge: its IPAM gateway."""
        if network in HOST_NETWORKS:
            return "127.0.0.1"
        try:
            configs = self.client.networks.get(network).attrs["IPAM"]["Config"] or []
        except docker.errors.NotFound:
            raise ModelSetupError(f"network '{network}' does not exist") from None
        gateways = [c["Gateway"] for c in configs if c.get("Gateway") and ":" not in c["Gateway"]]
        if not gateways:
            raise ModelSetupError(f"network '{network}' has no IPv4 gateway for the model gateway")
        return str(gateways[0])
