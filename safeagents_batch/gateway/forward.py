"""The doors containers reach the model gateway by: byte pipes from where a container connects
(an engine's bridge address, or a Unix socket a relay brings onto a `models` network) to the
gateway's own socket. On the engine's host the gateway's Unix socket; on a Ray node the batch's
one gateway, on the driver, so the real credentials never leave it and every node's calls are
paced in one pool and counted in one place. A pipe reads nothing it carries (the gateway checks
each call's attempt token), but it bounds what one container can open: a connection past its
address's share, or past the door's, is closed at once, so an agent that floods the door with
connections cannot take the orchestrator's file descriptors or the other attempts' calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter
from collections.abc import Awaitable
from concurrent.futures import Future
from typing import Any, Protocol
from urllib.parse import urlsplit

PIPE_BYTES = 64 * 1024
START_SECONDS = 30
CONNECT_SECONDS = 10  # to the gateway: one that does not answer is gone
# An SDK keeps a few connections per concurrent call; the gateway serves 16 calls at once per
# attempt. A relay is one peer for a whole node's attempts: only the door's total applies to it.
PER_ADDRESS = 64
PER_DOOR = 1024
UNIX_PREFIX = "unix:"


class Door(Protocol):
    """Where a node's containers reach the model gateway: the gateway itself, or a pipe to it."""

    def listen(self, host: str) -> str:
        """The base URL on `host` (listening there on first use); OSError if it cannot."""
        ...

    def listen_unix(self, path: str) -> None: ...

    def stop(self) -> None: ...


class Forwarder:
    """Listens where asked, and pipes each connection to the gateway at `target`: its URL
    (`http://HOST:PORT`) or its Unix socket (`unix:PATH`). Thread-safe; `stop` closes every
    listener and connection."""

    def __init__(
        self, target: str, per_address: int = PER_ADDRESS, per_door: int = PER_DOOR
    ) -> None:
        self._target = _target(target)
        self._per_address, self._per_door = per_address, per_door
        self._open: Counter[str] = Counter()  # connections open, by the peer's address
        self._urls: dict[str, str] = {}
        self._servers: list[asyncio.Server] = []
        self._pipes: set[asyncio.Task[None]] = set()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="gateway-forward", daemon=True
        )
        self._thread.start()

    def listen(self, host: str) -> str:
        with self._lock:
            if host not in self._urls:
                server = self._call(asyncio.start_server(self._serve, host, 0))
                self._servers.append(server)
                port = server.sockets[0].getsockname()[1]
                self._urls[host] = f"http://{host}:{port}"
            return self._urls[host]

    def listen_unix(self, path: str) -> None:
        with self._lock:
            if path not in self._urls:
                self._servers.append(self._call(asyncio.start_unix_server(self._serve, path)))
                self._urls[path] = path

    def stop(self) -> None:
        try:
            self._call(self._close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=START_SECONDS)
            if not self._thread.is_alive():
                self._loop.close()

    def _call(self, coroutine: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout=START_SECONDS)

    # -- on the loop ----------------------------------------------------------------------

    async def _close(self) -> None:
        for server in self._servers:
            server.close()
        pipes = list(self._pipes)
        for pipe in pipes:
            pipe.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)  # each closes its connections
        for server in self._servers:
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        address = peer[0] if isinstance(peer, tuple) else None  # a Unix peer: the relay
        task = asyncio.current_task()
        assert task is not None
        if not self._admit(address):
            writer.close()
            return
        self._pipes.add(task)
        try:
            await self._connect_and_pipe(reader, writer)
        except asyncio.CancelledError:
            pass  # stop() ends it: its connections close below, and the task ends cleanly
        finally:
            self._pipes.discard(task)
            if address is not None:
                self._open[address] -= 1
            writer.close()

    def _admit(self, address: str | None) -> bool:
        """Room for one more connection from `address` (on the loop: no lock needed)."""
        if len(self._pipes) >= self._per_door:
            return False
        if address is None:
            return True
        if self._open[address] >= self._per_address:
            return False
        self._open[address] += 1
        return True

    async def _connect_and_pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            up_reader, up_writer = await asyncio.wait_for(self._connect(), CONNECT_SECONDS)
        except (OSError, TimeoutError):
            # The container's SDK sees its connection closed, as with any upstream gone.
            return
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            up_writer.close()

    def _connect(self) -> Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
        if isinstance(self._target, str):
            return asyncio.open_unix_connection(self._target)
        return asyncio.open_connection(*self._target)


def _target(target: str) -> str | tuple[str, int]:
    """A Unix socket's path, or a host and port."""
    if target.startswith(UNIX_PREFIX):
        return target.removeprefix(UNIX_PREFIX)
    parts = urlsplit(target)
    if parts.hostname is None or parts.port is None:
        raise ValueError(f"not a gateway address: {target!r}")
    return parts.hostname, parts.port


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Bytes from `reader` to `writer` until either side ends; then the other side learns
    the end (a half close, as HTTP clients send nothing more after their request)."""
    try:
        while data := await reader.read(PIPE_BYTES):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        with contextlib.suppress(Exception):
            writer.close()
