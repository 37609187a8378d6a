"""The gateway's pipe on a cluster node (gateway/forward.py), on loopback against the real
gateway and the stand-in upstream: a call through it, by TCP or by the Unix socket a relay
uses, reaches the gateway as sent (token checked there, counted once, streamed back); a pipe
whose gateway is gone closes the caller's connection instead of holding it; once stopped it
takes no more connections."""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest
from standin_llm import MODEL_ANSWERING, StandIn
from test_gateway import CHAT, REAL_KEY, post, upstreams

from safeagents_batch.gateway.credentials import Credentials
from safeagents_batch.gateway.forward import Forwarder
from safeagents_batch.gateway.server import Gateway


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    gate = Gateway(Credentials({"UPSTREAM_KEY": REAL_KEY}))
    yield gate
    gate.stop()


@pytest.fixture
def forwarder(gateway: Gateway) -> Iterator[Forwarder]:
    pipe = Forwarder(gateway.listen("127.0.0.1"))
    yield pipe
    pipe.stop()


class UnixConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket, as the relay container's end of the pipe speaks it."""

    def __init__(self, path: str) -> None:
        super().__init__("gateway", timeout=30)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(self.path)


def post_unix(path: str, url_path: str, token: str, body: dict[str, object]) -> bytes:
    connection = UnixConnection(path)
    try:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        connection.request("POST", url_path, json.dumps(body), headers)
        answer = connection.getresponse()
        assert answer.status == 200, answer.read()
        return answer.read()
    finally:
        connection.close()


def test_calls_through_the_pipe_by_tcp_and_unix_socket_are_the_gateways_own(
    standin: StandIn, gateway: Gateway, forwarder: Forwarder, tmp_path: Path
) -> None:
    lines: list[bytes] = []
    token = gateway.open_attempt(upstreams(standin), lines.append)
    url = forwarder.listen("127.0.0.1")
    assert forwarder.listen("127.0.0.1") == url  # one listener per address
    socket_path = str(tmp_path / "gateway.sock")
    forwarder.listen_unix(socket_path)

    chat = json.loads(post(f"{url}/m/main/chat/completions", token, CHAT))
    streamed = post_unix(
        socket_path,
        "/m/main/chat/completions",
        token,
        {**CHAT, "stream": True, "stream_options": {"include_usage": True}},
    )
    # A wrong token goes through the pipe too, and the gateway refuses it.
    with pytest.raises(urllib.error.HTTPError) as refused:
        post(f"{url}/m/main/chat/completions", "sab-not-a-token", CHAT)
    calls = gateway.close_attempt(token)

    assert chat["model"] == MODEL_ANSWERING
    assert streamed.count(b"data: ") > 2 and streamed.rstrip().endswith(b"data: [DONE]")
    assert refused.value.code == 401
    assert calls.usage["main"].requests == standin.seen.requests == 2
    assert calls.usage["main"].input_tokens == standin.seen.input_tokens
    assert len(lines) == 2 and REAL_KEY.encode() not in b"".join(lines)


def test_a_pipe_whose_gateway_is_gone_closes_the_callers_connection() -> None:
    with socket.create_server(("127.0.0.1", 0)) as closed:
        gone = f"http://127.0.0.1:{closed.getsockname()[1]}"
    pipe = Forwarder(gone)  # nothing listens there any more
    try:
        url = pipe.listen("127.0.0.1")
        with pytest.raises(OSError) as failed:
            post(f"{url}/m/main/chat/completions", "sab-token", CHAT)
        # Closed by the pipe, not left to the caller's timeout.
        cause = getattr(failed.value, "reason", failed.value)
        assert isinstance(cause, ConnectionError | http.client.RemoteDisconnected), repr(cause)
    finally:
        pipe.stop()


def test_a_stopped_pipe_takes_no_more_connections(gateway: Gateway) -> None:
    pipe = Forwarder(gateway.listen("127.0.0.1"))
    port = int(pipe.listen("127.0.0.1").rsplit(":", 1)[1])
    pipe.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_a_gateway_address_without_a_port_is_refused_at_once() -> None:
    with pytest.raises(ValueError, match="not a gateway address"):
        Forwarder("http://127.0.0.1")


def answered(connection: socket.socket) -> bool:
    """Whether the door admitted this connection: a request on it gets the gateway's answer
    (a refusal of its missing token), where a connection the door refused reads its end."""
    try:
        connection.sendall(b"GET /m/main/models HTTP/1.1\r\nHost: gateway\r\n\r\n")
        return connection.recv(64).startswith(b"HTTP/1.1 401")
    except ConnectionResetError:  # closed by the door before the request arrived
        return False


def connect_from(address: str, url: str) -> socket.socket:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    connection = socket.create_connection(
        (host, int(port)), timeout=30, source_address=(address, 0)
    )
    return connection


def admitted_again(url: str, opened: list[socket.socket]) -> bool:
    """Whether a new connection from 127.0.0.1 is admitted once the door has seen a closed
    one go (it learns of it as the close travels through the pipe): tries for a while."""
    for _ in range(100):  # an upper bound for a close that never frees its room
        connection = connect_from("127.0.0.1", url)
        opened.append(connection)
        if answered(connection):
            return True
        time.sleep(0.1)
    return False


def test_a_door_admits_a_share_per_address_and_in_all_and_room_comes_back(
    gateway: Gateway,
) -> None:
    pipe = Forwarder(gateway.listen("127.0.0.1"), per_address=3, per_door=4)
    opened: list[socket.socket] = []
    try:
        url = pipe.listen("127.0.0.1")
        opened += [connect_from("127.0.0.1", url) for _ in range(4)]
        first = [answered(c) for c in opened]
        opened += [connect_from("127.0.0.2", url) for _ in range(2)]
        second = [answered(c) for c in opened[4:]]
        opened.pop(0).close()  # one of the first address's closes: room for one more
        readmitted = admitted_again(url, opened)
    finally:
        for connection in opened:
            connection.close()
        pipe.stop()

    assert first == [True, True, True, False]  # the first address's share is 3
    assert second == [True, False]  # the door's 4 in all
    assert readmitted
