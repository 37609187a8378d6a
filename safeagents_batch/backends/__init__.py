"""Execution backends behind one protocol (`base`); `docker` runs on one engine. Importing this
package loads no backend: the Docker SDK comes in only with `backends.docker`."""

from __future__ import annotations

from safeagents_batch.backends.base import (
    AttemptOutcome,
    AttemptRequest,
    Backend,
    ImageOutcome,
    Sink,
    StagedCode,
)

__all__ = ["AttemptOutcome", "AttemptRequest", "Backend", "ImageOutcome", "Sink", "StagedCode"]
