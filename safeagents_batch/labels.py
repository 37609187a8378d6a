"""Labels on every container and image the tool makes, so leftovers can be found by them."""

from __future__ import annotations

LABEL_PREFIX = "safeagents-batch"
MANAGED = f"{LABEL_PREFIX}.managed"
BATCH = f"{LABEL_PREFIX}.batch"
RUN = f"{LABEL_PREFIX}.run"
ATTEMPT = f"{LABEL_PREFIX}.attempt"
HOST = f"{LABEL_PREFIX}.host"
PID = f"{LABEL_PREFIX}.pid"
FRAMEWORK = f"{LABEL_PREFIX}.framework"
DIGEST = f"{LABEL_PREFIX}.digest"
BASE = f"{LABEL_PREFIX}.base"
VERSION = f"{LABEL_PREFIX}.version"


def batch_filter(batch_id: str | None = None) -> str:
    """The label filter for containers the tool created (of one batch, when given).

    By the batch label, which only a backend sets: image labels (`managed`) are copied onto
    every container made from our images, also ones a user starts by hand."""
    return f"{BATCH}={batch_id}" if batch_id else BATCH
