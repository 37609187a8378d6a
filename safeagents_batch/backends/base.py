"""The seam between the orchestrator and whatever runs containers: no Docker, no Ray here.

A backend gets images where runs will go, runs one attempt at a time (feeding its output to a
sink that owns the attempt's directory), sweeps a batch's leftovers and says where it ran.
What comes back is a record (records.model): an attempt's `AttemptOutcome`, an image's
`ImageRecord` (its build log by absolute path until the batch records it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from safeagents_batch.jobs.model import (
    DEFAULT_ARTIFACT_FILES,
    DEFAULT_ARTIFACT_LIMIT,
    Hardening,
    ModelUpstream,
    PoolRate,
    Resources,
    SlurmSettings,
)
from safeagents_batch.records.model import AttemptOutcome, ImageRecord
from safeagents_batch.staging.code import StagedCode
from safeagents_batch.staging.images import ImageSpec


class BuildProgress(Protocol):
    """What a backend says while it builds an image (never for one it finds): called from
    the thread that builds, maybe several at once for different tags."""

    def started(self, tag: str) -> None: ...

    def output(self, tag: str, line: str) -> None:
        """One whole line of the build's output (a step, what the step prints), no colours."""
        ...

    def finished(self, record: ImageRecord) -> None: ...


class QuietBuild:
    """The progress of a build no one watches."""

    def started(self, tag: str) -> None:
        pass

    def output(self, tag: str, line: str) -> None:
        pass

    def finished(self, record: ImageRecord) -> None:
        pass


QUIET_BUILD = QuietBuild()


@dataclass(frozen=True)
class Pace:
    """The pool an attempt's model calls are paced in, shared with every attempt in it."""

    pool: str
    rate: PoolRate


@dataclass(frozen=True)
class GatewayTicket:
    """An attempt's pass at a model gateway that runs elsewhere (a Ray driver's): the node
    pipes its container's calls to `url`, where `token` is valid while the attempt runs."""

    url: str
    token: str = field(repr=False)


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
    runtime: str | None = None  # the engine's OCI runtime; None: the engine's default
    job: str = ""  # the run's job, as errors name it
    enforce_limits: bool = True  # refuse when the engine drops a `resources` limit
    read_only_rootfs: bool = False
    hardening: Hardening = Hardening()
    artifact_limit: int = DEFAULT_ARTIFACT_LIMIT
    artifact_files: int = DEFAULT_ARTIFACT_FILES
    # The upstreams the attempt may call through the batch's model gateway (`models:`): the
    # backend starts the gateway where the container runs and tells the container its URL.
    models: tuple[ModelUpstream, ...] = ()
    pace: Pace | None = None  # the pool's requests and tokens per minute, when it sets them
    cost_limit: float | None = None  # USD the run's model calls may cost
    model_env: dict[str, str] = field(default_factory=dict)  # VARIABLE -> model: its URL
    # Set by a backend whose gateway runs away from the engine (Ray: on the driver, which
    # opened the attempt's pass there and closes it): the engine's side only reaches it.
    gateway: GatewayTicket | None = None
    # The batch dir, for a backend whose wire is the shared filesystem (Slurm).
    batch_dir: Path | None = None
    slurm: SlurmSettings = SlurmSettings()  # the job's `slurm:` (--backend slurm only)


class Sink(Protocol):
    """Owns one attempt's directory; the backend hands it what the container produced."""

    def stdout(self, chunk: bytes) -> None: ...

    def stderr(self, chunk: bytes) -> None: ...

    def traceback(self, text: str) -> None:
        """The whole traceback of an error raised where the attempt ran, kept beside its logs
        (the attempt's record has the one-line cause)."""
        ...

    def artifacts(self, tar_chunks: Iterable[bytes], *, selected: bool = False) -> None:
        """The files the script left in /safeagents/logs, as a tar stream whose members are
        under one top directory (what `docker cp` of that directory gives). `selected`: the
        artifact rules (records/artifacts.py) were applied where the archive was made (a Ray
        node), which wrote it again: its caps are not counted a second time."""
        ...

    def model_call(self, line: bytes) -> None:
        """One JSON line of `model_calls.jsonl`: a call the attempt made through the model
        gateway (gateway/record.py); called from the gateway's thread."""
        ...

    def not_kept(self, line: str) -> None:
        """One entry of that archive the backend did not hand over, and why (a Ray node
        applies the artifact rules itself, records/artifacts.py, and sends only what they
        keep)."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class CleanRequest:
    """What `clean` removes where a backend runs containers: the tool's leftover containers
    (those whose batch no longer runs) and, with `images`, the tool's images but those
    tagged in `keep_tags`, of the `repositories` only when given."""

    dry_run: bool = False
    images: bool = False
    keep_tags: frozenset[str] = frozenset()
    repositories: frozenset[str] | None = None


class Backend(Protocol):
    """What an execution backend does for a batch. Implementations must be safe to call from
    many worker threads at once."""

    name: str

    def ensure_images(
        self,
        specs: Sequence[ImageSpec],
        build_logs: Path,
        *,
        rebuild: bool = False,
        progress: BuildProgress = QUIET_BUILD,
    ) -> dict[str, ImageRecord]:
        """Each spec's image present (built, or found by its tag) where runs will go; a
        build's start, output and end go to `progress` as they happen."""
        ...

    def run(self, request: AttemptRequest, sink: Sink, cancel: threading.Event) -> AttemptOutcome:
        """One attempt to its end; a set `cancel` kills it. Never raises for engine trouble:
        that is an `error` outcome (with `engine_lost` when the engine stopped answering)."""
        ...

    def reattach(
        self,
        batch_dir: Path,
        run_id: str,
        attempt: int,
        open_sink: Callable[[], Sink],
        cancel: threading.Event,
    ) -> AttemptOutcome | None:
        """An attempt that a driver which died left `running`: followed to its end where it
        still runs without the driver (a Slurm job), or its end read where it ended meanwhile
        (the job's outcome file), through the sink `open_sink` gives once it knows the attempt
        (it replaces what the attempt's dir held). None: the backend knows nothing of it (a
        local container died with its driver); `rerun` then closes it as interrupted."""
        ...

    def sweep(self, batch_id: str) -> int:
        """Removes every container of the batch the engines still hold; returns how many."""
        ...

    def clean(self, request: CleanRequest) -> list[str]:
        """`clean`: removes what the request names on every engine the backend runs on;
        returns one line per item (and a total). A backend that cannot do a part of it
        (images on a cluster's nodes) raises a UsageError saying so."""
        ...

    def available(self) -> bool:
        """Whether the engine answers now (polled while the pool waits after an engine loss)."""
        ...

    def where(self) -> dict[str, str]:
        """The backend's name and where it runs, for the manifest."""
        ...
