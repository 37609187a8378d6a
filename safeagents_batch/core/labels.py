"""Labels on every container and image the tool makes, so leftovers can be found by them."""

from __future__ import annotations

import os
import socket

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
# An image's resolved packages (`pip freeze --all`, a JSON list), of its Python and of the
# Azure CLI's venv: a cached image carries what it holds, as a built one does.
PACKAGES = f"{LABEL_PREFIX}.packages"
AZURE_CLI_PACKAGES = f"{LABEL_PREFIX}.azure-cli-packages"


def batch_filter(batch_id: str | None = None) -> str:
    """The label filter for containers the tool created (of one batch, when given).

    By the batch label, which only a backend sets: image labels (`managed`) are copied onto
    every container made from our images, also ones a user starts by hand."""
    return f"{BATCH}={batch_id}" if batch_id else BATCH


def owned(batch_id: str) -> dict[str, str]:
    """What a container or network of a batch carries: its batch, and the host and pid of the
    orchestrator that made it, so `clean` tells a leftover from a part of a running batch."""
    return {
        MANAGED: "true",
        BATCH: batch_id,
        HOST: socket.gethostname(),
        PID: str(os.getpid()),
    }
