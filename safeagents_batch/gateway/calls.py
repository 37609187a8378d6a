"""One model call through the gateway, from its arrival to its end: relayed from the upstream
as it streams (counted and recorded before the agent's call returns), or refused with a reason
in the shape OpenAI's SDKs parse."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import aiohttp
import msgspec
from aiohttp import web

from safeagents_batch.gateway.passes import AttemptPass
from safeagents_batch.gateway.prices import call_cost
from safeagents_batch.gateway.record import CallRecord, call_line
from safeagents_batch.gateway.usage import Answered, answered
from safeagents_batch.jobs.model import ModelUpstream

# Headers of an answer the SDKs use (rate limits, request ids); the rest stay with the gateway.
# Not `openai-organization` or `openai-project`: they name the account behind the real key.
PASSED_ANSWER_HEADERS = (
    "content-type",
    "retry-after",
    "retry-after-ms",
    "x-request-id",
    "apim-request-id",
    "openai-processing-ms",
)
PASSED_ANSWER_PREFIXES = ("x-ratelimit-",)


@dataclass(frozen=True)
class UpstreamCall:
    """A call as it goes to the upstream: credential in, the agent's token out."""

    method: str
    url: str
    headers: dict[str, str] = field(repr=False)
    body: bytes = field(repr=False)


@dataclass(frozen=True)
class Arrived:
    """One call from its arrival: whose it is, what it asked, since when; it ends relayed or
    failed, counted and recorded either way."""

    attempt: AttemptPass
    record: CallRecord
    body: bytes = field(repr=False)
    started: float

    async def relay(
        self, request: web.Request, answer: aiohttp.ClientResponse, estimate: int
    ) -> web.StreamResponse:
        """The answer to the agent as it comes. An agent that goes away mid-answer does not
        end the reading: the upstream charges the whole answer, so the whole is counted."""
        response = web.StreamResponse(status=answer.status, headers=passed_headers(answer.headers))
        listening = await _prepared(response, request)
        kept = KeptAnswer()
        broke: str | None = None
        try:
            async for chunk in answer.content.iter_any():
                kept.add(chunk)
                listening = listening and await _written(response, chunk)
        except (aiohttp.ClientError, TimeoutError) as exc:  # the upstream's side, mid-answer
            broke = f"the upstream's answer broke off: {type(exc).__name__}"
        said = answered(kept.for_usage(), answer.headers.get("Content-Type", ""))
        if self.attempt.pacer is not None:
            self.attempt.pacer.settle(estimate, said.input_tokens + said.output_tokens)
        upstream = self.attempt.models[self.record.model]
        cost = (
            self._cost(upstream, said, answer.status)  # the file's prices: arithmetic only
            if upstream.prices is not None
            else await asyncio.to_thread(self._cost, upstream, said, answer.status)
        )
        # Counted and recorded before the answer ends: the agent's call returns after that.
        error = answer.status >= 400 or broke is not None
        self.attempt.count(self.record.model, said.as_usage(error=error, cost=cost))
        self._record(answer.status, said, kept.head(), error=broke)
        if listening:
            with contextlib.suppress(ConnectionError):
                await response.write_eof()
        return response

    def _cost(self, upstream: ModelUpstream, said: Answered, status: int) -> float | None:
        needed = upstream.prices is None and said.model is None  # else the body is not read
        return call_cost(upstream, said, requested_model(self.body) if needed else None, status)

    def failed(
        self,
        status: int,
        reason: str,
        *,
        reached_upstream: bool = True,
        on_record: str | None = None,
    ) -> web.Response:
        """The agent gets `reason`, the record `on_record` (default: the same); a call that
        never left (refused) is recorded, not counted."""
        if reached_upstream:
            self.attempt.count(self.record.model, Answered().as_usage(error=True))
        self._record(status, Answered(), b"", error=on_record or reason)
        return refusal(status, reason)

    def _record(self, status: int, said: Answered, answer: bytes, error: str | None = None) -> None:
        latency = round((time.perf_counter() - self.started) * 1000, 2)
        line = call_line(self.record, self.body, status, latency, said, answer, error)
        # A call still streaming when its attempt ended finds the sink closed (ValueError) or
        # its dir gone (OSError): it is counted all the same; only its line is lost.
        with contextlib.suppress(OSError, ValueError):
            self.attempt.recorder(line)


class KeptAnswer:
    """What the gateway keeps of an answer it relays: its head for the record, and its tail,
    where a stream states its usage, however long the answer is."""

    HEAD = 8 * 1024**2
    TAIL = 256 * 1024

    def __init__(self) -> None:
        self._head = bytearray()
        self._tail = bytearray()
        self.size = 0

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        room = self.HEAD - len(self._head)
        self._head += chunk[:room]
        self._tail += chunk[room:] if room > 0 else chunk
        if len(self._tail) > 2 * self.TAIL:
            del self._tail[: len(self._tail) - self.TAIL]

    def head(self) -> bytes:
        return bytes(self._head)

    def for_usage(self) -> bytes:
        """The head, or for a longer answer its tail from the first whole line."""
        if not self._tail:
            return bytes(self._head)
        tail = bytes(self._tail[-self.TAIL :])
        return tail[tail.find(b"\n") + 1 :]


async def _prepared(response: web.StreamResponse, request: web.Request) -> bool:
    try:
        await response.prepare(request)
    except ConnectionError:
        return False
    return True


async def _written(response: web.StreamResponse, chunk: bytes) -> bool:
    """Whether the agent is still there to be written to."""
    try:
        await response.write(chunk)  # the agent sees each chunk as the upstream sends it
    except ConnectionError:
        return False
    return True


def requested_model(body: bytes) -> str | None:
    """The `model` a request names (a deployment's calls name it in their path instead)."""
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None
    model = data.get("model") if isinstance(data, dict) else None
    return model if isinstance(model, str) else None


def passed_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {
        k: v
        for k, v in headers.items()
        if k.lower() in PASSED_ANSWER_HEADERS or k.lower().startswith(PASSED_ANSWER_PREFIXES)
    }


def refusal(status: int, message: str) -> web.Response:
    """An error in the shape OpenAI's SDKs parse, so the agent sees the gateway's reason."""
    return web.json_response(
        {"error": {"message": message, "type": "safeagents_gateway", "code": status}},
        status=status,
    )
