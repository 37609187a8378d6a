"""The gateway's door on a cluster node: a byte pipe from where the node's containers reach
it (the engine's bridge address, or a Unix socket a relay brings onto a `models` network) to
the batch's one gateway, on the driver. So the real credentials never leave the driver, and
every node's calls are paced in one pool and counted in one place. The pipe reads nothing it
carries: the gateway checks each call's attempt token.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from concurrent.futures import Future
from typing import Any, Protocol
from urllib.parse import urlsplit

PIPE_BYTES = 64 * 1024
START_SECONDS = 30
CONNECT_SECONDS = 10  # to the driver's gateway: a driver that does not answer is gone


class Door(Protocol):
    """Where a node's containers reach the model gateway: the gateway itself, or a pipe to it."""

    def listen(self, host: str) -> str:
        """The base URL on `host` (listening there on first use); OSError if it cannot."""
        ...

    def listen_unix(self, path: str) -> None: ...

    def stop(self) -> None: ...


class Forwarder:
    """Listens where asked, and pipes each connection to the gateway at `target_url`.
    Thread-safe; `stop` closes every listener and connection."""

    def __init__(self, target_url: str) -> None:
        parts = urlsplit(target_url)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"not a gateway address: {target_url!r}")
        self._target = (parts.hostname, parts.port)
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
        for pipe in list(self._pipes):
            pipe.cancel()
        for server in self._servers:
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._pipes.add(task)
        try:
            await self._connect_and_pipe(reader, writer)
        finally:
            self._pipes.discard(task)
            writer.close()

    async def _connect_and_pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(*self._target), CONNECT_SECONDS
            )
        except (OSError, TimeoutError):
            # The container's SDK sees its connection closed, as with any upstream gone.
            return
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            up_writer.close()


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
