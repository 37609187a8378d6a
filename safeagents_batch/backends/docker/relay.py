"""`network: models`: a network of the batch's own on which the model gateway is the only
thing outside the batch a container can reach.

Docker's `internal` networks drop forwarded traffic, but the host keeps an address on their
bridge and answers there on every port it listens on (measured: a container on one reached a
host service on 0.0.0.0 through the bridge address and through the host's own address). So the
network is internal *and* its bridge has no host address (`inhibit_ipv4`): a container on it
reaches other containers on it (the relay, and the batch's other attempts on it) and nothing
else; IPv6 is off in them. The gateway comes onto it as a relay container of the batch: a byte
pipe from a TCP port on the network to the gateway's Unix socket, mounted in from the host.
The relay holds no credential (the gateway on the host swaps them in), runs
with every capability dropped, bounds the connections each container may hold open as the
host's pipes do (gateway/forward.py), and is removed with the batch's other containers.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors

from safeagents_batch.core import labels
from safeagents_batch.core.names import safe_name
from safeagents_batch.gateway.forward import PER_ADDRESS, PER_DOOR

RELAY_PORT = 8080
# Containers on the network get no IPv6: `inhibit_ipv4` leaves the bridge an IPv6 link-local
# address, by which the host's services on `[::]` could still be reached.
NO_IPV6 = {"net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1"}
RELAY_RUN = "model-gateway-relay"  # its run label: no run of the batch has this id
SOCKET_DIR = "/safeagents/gateway"
SOCKET_NAME = "gateway.sock"
READY_LINE = b"relay ready"
READY_SECONDS = 60
# Python's standard library only: it runs in the batch's own image, whatever that holds.
RELAY_SCRIPT = f"""\
import asyncio, collections

open_by_peer = collections.Counter()


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


def admit(peer):
    if sum(open_by_peer.values()) >= {PER_DOOR} or open_by_peer[peer] >= {PER_ADDRESS}:
        return False
    open_by_peer[peer] += 1
    return True


async def serve(client_reader, client_writer):
    peer = (client_writer.get_extra_info("peername") or ("?",))[0]
    if not admit(peer):
        client_writer.close()
        return
    try:
        reader, writer = await asyncio.open_unix_connection("{SOCKET_DIR}/{SOCKET_NAME}")
    except OSError:
        open_by_peer[peer] -= 1
        client_writer.close()
        return
    try:
        await asyncio.gather(pipe(client_reader, writer), pipe(reader, client_writer))
    finally:
        open_by_peer[peer] -= 1
        writer.close()
        client_writer.close()


async def main():
    server = await asyncio.start_server(serve, "0.0.0.0", {RELAY_PORT})
    print("{READY_LINE.decode()}", flush=True)
    await server.serve_forever()

asyncio.run(main())
"""


class RelayError(Exception):
    """The batch's models network or its relay could not be set up; the message says why."""


@dataclass(frozen=True)
class ModelsNetwork:
    """A batch's models network and the gateway's URL on it."""

    name: str
    url: str


def network_name(batch_id: str) -> str:
    return f"sab-models-{safe_name(batch_id, 60)}"


def start_models_network(
    client: docker.DockerClient, batch_id: str, image: str, socket_dir: Path
) -> ModelsNetwork:
    """The network (made if missing) with the batch's relay on it, answering."""
    name = network_name(batch_id)
    _ensure_network(client, name, batch_id)
    relay = client.containers.run(
        image,
        ["python", "-c", RELAY_SCRIPT],
        name=f"sab-gateway-{safe_name(batch_id, 60)}-{os.urandom(3).hex()}",
        detach=True,
        network=name,
        user=f"{os.getuid()}:{os.getgid()}",  # the socket's owner: it may connect
        labels={**labels.owned(batch_id), labels.RUN: RELAY_RUN},
        mounts=[docker.types.Mount(SOCKET_DIR, str(socket_dir), type="bind")],
        cap_drop=["ALL"],
        security_opt=["no-new-privileges:true"],
        pids_limit=64,
        mem_limit=256 * 1024**2,
        read_only=True,
        sysctls=NO_IPV6,
    )
    _wait_ready(client, relay.id)
    relay.reload()
    address = relay.attrs["NetworkSettings"]["Networks"][name]["IPAddress"]
    return ModelsNetwork(name, f"http://{address}:{RELAY_PORT}")


def _ensure_network(client: docker.DockerClient, name: str, batch_id: str) -> None:
    with contextlib.suppress(docker.errors.NotFound):
        client.networks.get(name)
        return  # a rerun's, or one an earlier attempt of this process made
    client.networks.create(
        name,
        driver="bridge",
        internal=True,
        options={"com.docker.network.bridge.inhibit_ipv4": "true"},
        labels=labels.owned(batch_id),
    )


def _wait_ready(client: docker.DockerClient, container_id: str) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        state = client.api.inspect_container(container_id)["State"]
        logs = client.api.logs(container_id, stdout=True, stderr=True)
        if READY_LINE in logs:
            return
        if not state.get("Running"):
            last = logs.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
            raise RelayError(f"the model gateway's relay exited: {last[0][:200]}")
        time.sleep(0.1)
    raise RelayError(f"the model gateway's relay did not start within {READY_SECONDS} s")


def batch_networks(client: docker.DockerClient) -> list[dict[str, Any]]:
    """The engine's listing of networks the tool made (`network: models`), every batch's."""
    found: list[dict[str, Any]] = client.api.networks(
        filters={"label": f"{labels.MANAGED}=true", "name": "sab-models-"}
    )
    return found


def remove_models_network(client: docker.DockerClient, batch_id: str) -> None:
    """The batch's network, once its containers (the relay too) are gone."""
    with contextlib.suppress(docker.errors.NotFound):  # none was made, or it is gone
        client.networks.get(network_name(batch_id)).remove()
