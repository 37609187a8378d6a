"""The gateway's HTTP side (aiohttp, server and client): one application on its own event loop
thread, listening on every address a backend asks for (the engine's bridge, a batch's internal
network). A call is `/m/<model>/<path>`: the container's SDK was given `/m/<model>` as its base
URL, so `<path>` is what it would have sent the upstream (`chat/completions`, `responses`,
`openai/deployments/<d>/chat/completions`, ...).
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

import aiohttp
from aiohttp import web

from safeagents_batch.core.clock import now_iso
from safeagents_batch.gateway.calls import Arrived, UpstreamCall, refusal
from safeagents_batch.gateway.credentials import CredentialError, Credentials
from safeagents_batch.gateway.pace import PoolPacer, estimate_tokens, retry_after_seconds
from safeagents_batch.gateway.passes import AttemptCalls, AttemptPass, Recorder
from safeagents_batch.gateway.paths import allowed_text, upstream_url
from safeagents_batch.gateway.record import CallRecord
from safeagents_batch.jobs.model import ModelUpstream, PoolRate
from safeagents_batch.records.model import ModelUsage

TOKEN_PREFIX = "sab-"  # so a leaked token is recognisable as this tool's, and worthless
MAX_REQUEST_BYTES = 16 * 1024**2  # a request body larger than any model's context
UPSTREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=600)
START_SECONDS = 30
SETTLE_SECONDS = 10  # a closing attempt's calls still in flight get this long to be counted
# Headers of a request forwarded as they are; credentials and hop-by-hop ones never are.
PASSED_REQUEST_HEADERS = ("content-type", "accept", "openai-beta", "user-agent")

# A 429 is waited out and asked again, as its Retry-After says, for at most this long in all;
# past it the agent gets the 429 (its SDK may retry in turn).
RETRY_BUDGET = 120.0
MAX_RETRIES = 20
MIN_RETRY_SECONDS = 0.5  # a 429 that says "again at once" (or nothing) is waited out this long
INLINE_DECODE_BYTES = 256 * 1024  # a body up to this size is decoded on the loop (microseconds)
STOP_SECONDS = 90  # aiohttp gives calls in flight 60 s to end when the sites close


class Gateway:
    """Start once, `listen` on each address containers reach it by, `open_attempt` before a
    container starts and `close_attempt` after it ended (its token dies then), `stop` at the
    end of the batch. Thread-safe."""

    def __init__(self, credentials: Credentials | None = None) -> None:
        self.credentials = credentials or Credentials()
        self._passes: dict[str, AttemptPass] = {}
        self._pacers: dict[str, PoolPacer] = {}  # by pool name: one pace per pool
        self._urls: dict[str, str] = {}
        self._lock = threading.Lock()  # the passes and paces: taken briefly, on the loop too
        self._sites = threading.Lock()  # held while a site starts: never taken on the loop
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="gateway", daemon=True)
        self._thread.start()
        self._runner = self._call(self._setup())
        self._session: aiohttp.ClientSession | None = None

    # -- from the backend's threads -----------------------------------------------------

    def listen(self, host: str) -> str:
        """The gateway's base URL on `host` (started there on first use); OSError if the host
        has no such address."""
        with self._sites:
            if host not in self._urls:
                self._urls[host] = self._call(self._add_site(host))
            return self._urls[host]

    def listen_unix(self, path: str) -> None:
        """Also serves on a Unix socket at `path` (a relay brings it onto a network the host
        has no address on); once per path."""
        with self._sites:
            if path not in self._urls:
                self._urls[path] = self._call(self._add_unix_site(path))

    def open_attempt(
        self,
        models: Mapping[str, ModelUpstream],
        recorder: Recorder,
        pace: tuple[str, PoolRate] | None = None,
        cost_limit: float | None = None,
    ) -> str:
        """A fresh token for one attempt, its calls paced in `pace`'s pool (name, rate) when
        given, refused past `cost_limit` USD; CredentialError if a model's credential is
        missing."""
        for upstream in models.values():
            self.credentials.check(upstream)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._lock:
            pacer = self._pacers.setdefault(pace[0], PoolPacer(pace[1])) if pace else None
            self._passes[token] = AttemptPass(dict(models), recorder, pacer, cost_limit)
        return token

    def close_attempt(self, token: str) -> AttemptCalls:
        """Ends the token's life; the attempt's calls, once those in flight have ended."""
        with self._lock:
            attempt = self._passes.pop(token, None)
        if attempt is None:
            return AttemptCalls({})
        attempt.wait_settled(SETTLE_SECONDS)
        return attempt.totals()

    def stop(self) -> None:
        """Closes the sites and the client; calls still in flight get aiohttp's own grace."""
        try:
            self._call(self._cleanup(), STOP_SECONDS)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=START_SECONDS)
            if not self._thread.is_alive():
                self._loop.close()

    def _call(self, coroutine: Any, seconds: float = START_SECONDS) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout=seconds)

    # -- on the loop --------------------------------------------------------------------

    async def _setup(self) -> web.AppRunner:
        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        app.router.add_route("*", "/m/{model}/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        return runner

    async def _add_site(self, host: str) -> str:
        site = web.TCPSite(self._runner, host, 0)
        await site.start()
        server = site._server  # aiohttp has no public accessor for a site's bound port
        port = server.sockets[0].getsockname()[1] if server is not None else 0  # type: ignore[attr-defined]
        return f"http://{host}:{port}"

    async def _add_unix_site(self, path: str) -> str:
        site = web.UnixSite(self._runner, path)
        await site.start()
        return f"unix:{path}"

    async def _cleanup(self) -> None:
        if self._session is not None:
            await self._session.close()
        await self._runner.cleanup()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            # No proxy from the environment: the upstream is reached as the host reaches it.
            self._session = aiohttp.ClientSession(timeout=UPSTREAM_TIMEOUT, trust_env=False)
        return self._session

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        attempt = self._pass_of(request)
        model = request.match_info["model"]
        if attempt is None:
            return refusal(401, "no valid token for this gateway (each attempt has its own)")
        upstream = attempt.models.get(model)
        if upstream is None:
            allowed = ", ".join(sorted(attempt.models))
            return refusal(403, f"model '{model}' is not one this job may use ({allowed})")
        attempt.call_started()
        try:
            async with attempt.turns:
                return await self._forward(request, attempt, upstream, request.match_info["tail"])
        finally:
            attempt.call_ended()

    def _pass_of(self, request: web.Request) -> AttemptPass | None:
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else ""
        token = token or request.headers.get("api-key", "").strip()
        with self._lock:
            return self._passes.get(token) if token.startswith(TOKEN_PREFIX) else None

    async def _forward(
        self, request: web.Request, attempt: AttemptPass, upstream: ModelUpstream, tail: str
    ) -> web.StreamResponse:
        record = CallRecord(at=now_iso(), model=upstream.name, method=request.method, path=tail)
        call = Arrived(attempt, record, await request.read(), time.perf_counter())
        url = upstream_url(upstream, request.method, tail)
        if url is None:
            reason = f"{request.method} {tail} is not a model call the gateway forwards"
            return call.failed(403, f"{reason} ({allowed_text(upstream)})", reached_upstream=False)
        if (refused := attempt.refusal()) is not None:
            return call.failed(402, refused, reached_upstream=False)
        try:
            auth = await asyncio.to_thread(self.credentials.headers, upstream)
        except CredentialError as exc:
            # The agent is told no more: the host's CLI may name its account or tenant. The
            # reason is on record (model_calls.jsonl), for the operator.
            told = f"the gateway has no credential for model '{upstream.name}' now"
            return call.failed(502, told, on_record=str(exc))
        headers = {k: v for k, v in request.headers.items() if k.lower() in PASSED_REQUEST_HEADERS}
        headers["Accept-Encoding"] = "identity"  # the answer is read for its usage
        out = UpstreamCall(request.method, url, headers | auth, call.body)
        try:
            return await self._paced(request, out, call)
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = f"upstream of model '{upstream.name}' did not answer: {type(exc).__name__}"
            return call.failed(502, reason)

    async def _paced(
        self, request: web.Request, out: UpstreamCall, call: Arrived
    ) -> web.StreamResponse:
        """The call, held until its pool has room, and asked again after each 429 within
        RETRY_BUDGET seconds (as its Retry-After says) before the agent sees one."""
        pacer = call.attempt.pacer
        estimate = 0
        if pacer is not None:  # a big body is decoded off the loop: other calls go on meanwhile
            big = len(out.body) > INLINE_DECODE_BYTES
            count = await asyncio.to_thread(estimate_tokens, out.body) if big else None
            estimate = pacer.counted(count if count is not None else estimate_tokens(out.body))
        deadline = time.monotonic() + RETRY_BUDGET
        for retry in itertools.count():
            if pacer is not None:
                await pacer.admit(estimate)
            settled = False
            try:
                async with self._client().request(
                    out.method,
                    out.url,
                    params=request.query,
                    data=out.body,
                    headers=out.headers,
                    allow_redirects=False,  # a redirect would carry the credential elsewhere
                ) as answer:
                    wait = max(MIN_RETRY_SECONDS, retry_after_seconds(answer.headers, 1.0))
                    last = retry >= MAX_RETRIES or time.monotonic() + wait > deadline
                    if answer.status != 429 or last:
                        settled = True  # the relay settles the pace with the answer's usage
                        return await call.relay(request, answer, estimate)
                    await answer.read()
                if pacer is not None:
                    pacer.settle(estimate, 0)  # refused: it cost the quota nothing
                settled = True
            finally:
                if pacer is not None and not settled:
                    pacer.settle(estimate, estimate)  # broke off: counted as it was estimated
            call.attempt.count(call.record.model, ModelUsage(retries=1))
            await asyncio.sleep(wait)
        raise AssertionError("unreachable: itertools.count() does not end")
