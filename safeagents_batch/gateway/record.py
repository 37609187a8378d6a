"""One line of `model_calls.jsonl`: a call as the gateway saw it. Bodies are kept as JSON when
they are JSON (a stream as its text), each cut at BODY_LIMIT; the request's headers are never
kept (the token is there), and the upstream's credential never passes through here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from safeagents_batch.gateway.usage import Answered

BODY_LIMIT = 1024**2  # of each body in a record; the relayed answer itself is never cut
_ENCODER = msgspec.json.Encoder()


@dataclass(frozen=True)
class CallRecord:
    """What is known of a call when it arrives."""

    at: str
    model: str  # its name under `models:`
    method: str
    path: str  # below the model's base URL


def call_line(
    record: CallRecord,
    request: bytes,
    status: int,
    latency_ms: float,
    said: Answered,
    answer: bytes,
    error: str | None,
) -> bytes:
    """The JSON line of a finished call."""
    line: dict[str, Any] = {
        "at": record.at,
        "model": record.model,
        "method": record.method,
        "path": record.path,
        "status": status,
        "latency_ms": latency_ms,
        "answered_by": said.model,
        "usage": {
            "input_tokens": said.input_tokens,
            "output_tokens": said.output_tokens,
            "cached_tokens": said.cached_tokens,
        },
        "request": _body(request),
        "response": _body(answer),
    }
    if error is not None:
        line["error"] = error
    return _ENCODER.encode(line) + b"\n"


def _body(data: bytes) -> Any:
    """JSON as JSON (so the file reads as data), anything else as text; cut where too long."""
    if len(data) > BODY_LIMIT:
        text = data[:BODY_LIMIT].decode("utf-8", "replace")
        return {"truncated_at": BODY_LIMIT, "size": len(data), "text": text}
    if not data:
        return None
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError:
        return data.decode("utf-8", "replace")
