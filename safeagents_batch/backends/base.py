"""The seam between the orchestrator and whatever runs containers: no Docker, no Ray here.

A backend gets images where runs will go, runs one attempt at a time (feeding its output to a
sink that owns the attempt's directory), sweeps a batch's leftovers and says where it ran.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from safeagents_batch.images import ImageSpec
from safeagents_batch.model import DEFAULT_ARTIFACT_LIMIT, Hardening, Resources
from safeagents_batch.records import ImageRecord, ImageStatus, Status, recorded_path


@dataclass(frozen=True)
class StagedCode:
    """A snapshot of a script directory, named by the digest of its contents. `path` is a local
    tree of exactly those files, readable by any uid; a remote backend ships it by digest."""

    digest: str
    path: Path


@dataclass(frozen=True)
class AttemptRequest:
    """Everything a backend needs for one attempt. `env` holds real values (secrets too): it
    lives only in memory and goes to the engine through its API, never onto a command line."""

    run_id: str
    batch_id: str
    attempt: int
    image: str
    code: StagedCode
    script: str  # path of the script inside the code snapshot, POSIX, relative
    env: dict[str, str] = field(repr=False, default_factory=dict)
    timeout: int | None = None
    azure_dir: Path | None = None
    azure_mode: str = "ro"
    resources: Resources = Resources()
    network: str = "bridge"
    read_only_rootfs: bool = False
    hardening: Hardening = Hardening()
    artifact_limit: int = DEFAULT_ARTIFACT_LIMIT


@dataclass(frozen=True)
class AttemptOutcome:
    """How one attempt ended; `error` says why when it was not a success. `engine_lost` means
    the engine stopped answering during the attempt: the pool pauses until it is back."""

    status: Status
    exit_code: int | None
    started_at: str
    ended_at: str
    error: str | None = None
    engine_lost: bool = False
    # Where a remote backend ran it (Ray: node id, host name, engine); None when local.
    node: dict[str, str] | None = None


@dataclass(frozen=True)
class ImageOutcome:
    tag: str
    framework: str
    status: ImageStatus  # built | cached | failed
    build_seconds: float | None
    build_log: Path | None
    error: str | None = None
    # `pip freeze --all` inside the image (its Python; the Azure CLI's own venv), built or found.
    packages: tuple[str, ...] = ()
    azure_cli_packages: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    def record(self, batch_dir: Path) -> ImageRecord:
        """The manifest's record of this image, its build log named as the records of the batch
        at `batch_dir` name paths (relative when inside it)."""
        return ImageRecord(
            self.tag,
            self.framework,
            self.status,
            self.build_seconds,
            recorded_path(self.build_log, batch_dir) if self.build_log else None,
            self.error,
            self.packages,
            self.azure_cli_packages,
        )


class Sink(Protocol):
    """Owns one attempt's directory; the backend hands it what the container produced."""

    def stdout(self, chunk: bytes) -> None: ...

    def stderr(self, chunk: bytes) -> None: ...

    def traceback(self, text: str) -> None:
        """The whole traceback of an error raised where the attempt ran, kept beside its logs
        (the attempt's record has the one-line cause)."""
        ...

    def artifacts(self, tar_chunks: Iterable[bytes]) -> None:
        """The files the script left in /safeagents/logs, as a tar stream whose members are
        under one top directory (what `docker cp` of that directory gives)."""
        ...

    def close(self) -> None: ...


class Backend(Protocol):
    """What an execution backend does for a batch. Implementations must be safe to call from
    many worker threads at once."""

    name: str

    def ensure_images(
        self, specs: Sequence[ImageSpec], build_logs: Path, *, rebuild: bool = False
    ) -> dict[str, ImageOutcome]:
        """Each spec's image present (built, or found by its tag) where runs will go."""
        ...

    def run(self, request: AttemptRequest, sink: Sink, cancel: threading.Event) -> AttemptOutcome:
        """One attempt to its end; a set `cancel` kills it. Never raises for engine trouble:
        that is an `error` outcome (with `engine_lost` when the engine stopped answering)."""
        ...

    def sweep(self, batch_id: str) -> int:
        """Removes every container of the batch the engines still hold; returns how many."""
        ...

    def available(self) -> bool:
        """Whether the engine answers now (polled while the pool waits after an engine loss)."""
        ...

    def where(self) -> dict[str, str]:
        """The backend's name and where it runs, for the manifest."""
        ...
