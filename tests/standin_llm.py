"""A stand-in OpenAI-compatible upstream for the gateway's tests: chat completions (JSON, or a
stream whose last event carries usage), responses, embeddings, and Azure OpenAI's deployment
paths. It answers with usage it computes itself (one token per word of the request's text) and
keeps its own totals, the credentials it was sent, and the requests it saw, so a test can
compare the gateway's figures with the upstream's. Runs on loopback, in a thread of the test.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

ANSWER_WORDS = ["the", "stand", "in", "answers"]
MODEL_ANSWERING = "standin-model-2026-01-01"


@dataclass
class Seen:
    """What the stand-in was sent and what it charged."""

    credentials: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    requests: int = 0
    rejected: int = 0  # answered 429: over its tokens-per-minute quota
    elsewhere: list[str] = field(default_factory=list)  # credentials a redirect brought to /stolen


def _words(value: Any) -> int:
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(_words(v) for v in value)
    if isinstance(value, dict):
        return sum(_words(v) for k, v in value.items() if k in ("content", "text", "input"))
    return 0


class Quota:
    """A provider's tokens per minute: a bucket refilled continuously, starting full. A call
    is admitted at its input plus its output cap (as providers count it), or refused."""

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.level = self.capacity
        self.at = time.monotonic()

    def admit(self, tokens: int) -> float:
        """0 when admitted (and taken), else the seconds until it would be."""
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.at) * self.rate)
        self.at = now
        if self.level >= tokens:
            self.level -= tokens
            return 0.0
        return (tokens - self.level) / self.rate


class StandIn:
    """Start with `StandIn()`; `url` is its base (`http://127.0.0.1:PORT`); `close()`. With
    `tokens_per_minute`, chat calls over the quota get 429 and a Retry-After."""

    def __init__(self, host: str = "127.0.0.1", tokens_per_minute: int | None = None) -> None:
        self.seen = Seen()
        self.quota = Quota(tokens_per_minute) if tokens_per_minute else None
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.url = asyncio.run_coroutine_threadsafe(self._start(host), self._loop).result(30)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()

    async def _start(self, host: str) -> str:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/responses", self._responses)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self._chat)
        app.router.add_route("*", "/stolen", self._stolen)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://{host}:{port}"

    def _charge(self, request: web.Request, input_tokens: int, output_tokens: int) -> None:
        with self._lock:
            self.seen.requests += 1
            self.seen.input_tokens += input_tokens
            self.seen.output_tokens += output_tokens
            self.seen.paths.append(request.path)
            credential = request.headers.get("Authorization") or request.headers.get("api-key")
            self.seen.credentials.append(credential or "")

    async def _stolen(self, request: web.Request) -> web.Response:
        credential = request.headers.get("Authorization") or request.headers.get("api-key")
        self.seen.elsewhere.append(credential or "")
        return web.json_response({"stolen": True})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("redirect"):  # an upstream path that redirects (to /stolen)
            raise web.HTTPTemporaryRedirect(f"{self.url}/stolen")
        if request.query.get("always_429"):
            return web.json_response(
                {"error": {"message": "busy"}}, status=429, headers={"Retry-After": "0"}
            )
        body = await request.json()
        input_tokens = _words(body.get("messages", []))
        output_tokens = len(ANSWER_WORDS)
        if self.quota is not None:
            cap = body.get("max_tokens") or output_tokens
            with self._lock:
                wait = self.quota.admit(input_tokens + cap)
                self.seen.rejected += wait > 0
            if wait > 0:
                error = {"error": {"message": "rate limit", "type": "rate_limit", "code": 429}}
                retry = {"Retry-After": str(math.ceil(wait))}
                return web.json_response(error, status=429, headers=retry)
        self._charge(request, input_tokens, output_tokens)
        usage = {
            "prompt_tokens": input_tokens,
            "completion_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
            "prompt_tokens_details": {"cached_tokens": 0},
        }
        if body.get("stream"):
            return await self._chat_stream(request, usage)
        return web.json_response(
            {
                "id": "chatcmpl-standin",
                "object": "chat.completion",
                "created": 0,
                "model": MODEL_ANSWERING,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": " ".join(ANSWER_WORDS)},
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            }
        )

    async def _chat_stream(self, request: web.Request, usage: dict[str, Any]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for word in ANSWER_WORDS:
            chunk = {
                "id": "chatcmpl-standin",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": MODEL_ANSWERING,
                "choices": [{"index": 0, "delta": {"content": word + " "}, "finish_reason": None}],
            }
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        last = {
            "id": "chatcmpl-standin",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": MODEL_ANSWERING,
            "choices": [],
            "usage": usage,
        }
        await response.write(f"data: {json.dumps(last)}\n\ndata: [DONE]\n\n".encode())
        await response.write_eof()
        return response

    async def _responses(self, request: web.Request) -> web.Response:
        body = await request.json()
        input_tokens = _words(body.get("input", ""))
        output_tokens = len(ANSWER_WORDS)
        self._charge(request, input_tokens, output_tokens)
        text = " ".join(ANSWER_WORDS)
        return web.json_response(
            {
                "id": "resp-standin",
                "object": "response",
                "created_at": 0,
                "status": "completed",
                "model": MODEL_ANSWERING,
                "parallel_tool_calls": True,
                "tool_choice": "auto",
                "tools": [],
                "output": [
                    {
                        "type": "message",
                        "id": "msg-standin",
                        "status": "completed",
                        "role": "assistant",
                        "content": [{"type": "output_text", "text": text, "annotations": []}],
                    }
                ],
                "usage": {
                    "input_tokens": input_tokens,
                    "output_tokens": output_tokens,
                    "total_tokens": input_tokens + output_tokens,
                    "input_tokens_details": {"cached_tokens": 0},
                    "output_tokens_details": {"reasoning_tokens": 0},
                },
            }
        )

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        input_tokens = _words(body.get("input", ""))
        self._charge(request, input_tokens, 0)
        return web.json_response(
            {
                "object": "list",
                "model": MODEL_ANSWERING,
                "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
                "usage": {"prompt_tokens": input_tokens, "total_tokens": input_tokens},
            }
        )
