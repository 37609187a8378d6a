"""An in-memory backend: the orchestrator's tests run against it, with no engine.

Each run id can be given a script of behaviours, one per attempt (the last one repeats): what
the "container" prints, how it ends, whether the engine is lost meanwhile, which artifacts it
leaves. The backend records every request, the peak of attempts at once, images ensured and
sweeps, so tests can check what the orchestrator asked for.
"""

from __future__ import annotations

import io
import tarfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from safeagents_batch.backends.base import (
    QUIET_BUILD,
    AttemptRequest,
    BuildProgress,
    CleanRequest,
    Sink,
)
from safeagents_batch.core.clock import now_iso
from safeagents_batch.records.model import AttemptOutcome, ImageRecord, Status
from safeagents_batch.staging.images import ImageSpec


@dataclass(frozen=True)
class Behaviour:
    """What one attempt does in the fake engine."""

    status: Status = "succeeded"
    exit_code: int | None = 0
    stdout: bytes = b""
    stderr: bytes = b""
    error: str | None = None
    engine_lost: bool = False  # the engine goes away during this attempt
    hold: threading.Event | None = None  # runs until this is set (or cancelled)
    artifacts: bytes | None = None  # a tar stream, as `docker cp` of /safeagents/logs gives

    def outcome(self, started: str) -> AttemptOutcome:
        if self.engine_lost:
            return AttemptOutcome(
                status="error",
                started_at=started,
                ended_at=now_iso(),
                error="engine lost: fake",
                engine_lost=True,
            )
        return AttemptOutcome(
            status=self.status,
            exit_code=self.exit_code,
            started_at=started,
            ended_at=now_iso(),
            error=self.error,
        )


def failed(code: int = 1) -> Behaviour:
    return Behaviour("failed", code, error=f"script exited with code {code}")


@dataclass
class FakeBackend:
    """A Backend whose containers are Behaviours; thread-safe like a real one."""

    behaviours: dict[str, list[Behaviour]] = field(default_factory=dict)
    failing_images: set[str] = field(default_factory=set)  # frameworks whose build fails
    name: str = "fake"
    requests: list[AttemptRequest] = field(default_factory=list)
    ensured: list[str] = field(default_factory=list)
    swept: list[str] = field(default_factory=list)
    leftovers: dict[str, int] = field(default_factory=dict)  # batch id -> containers left
    peak: int = 0
    up: bool = True  # what available() says; a lost engine sets it False
    on_lost: Callable[[FakeBackend], None] | None = None  # e.g. bring it back later
    write_build_logs: bool = False  # a log per image in `build_logs`, as a real build leaves

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0
        self._attempts: dict[str, int] = {}

    # -- Backend -------------------------------------------------------------------------

    def ensure_images(
        self,
        specs: Sequence[ImageSpec],
        build_logs: Path,
        *,
        rebuild: bool = False,
        progress: BuildProgress = QUIET_BUILD,
    ) -> dict[str, ImageRecord]:
        outcomes = {}
        for spec in specs:
            with self._lock:
                self.ensured.append(spec.tag)
            framework = spec.config.framework
            progress.started(spec.tag)
            progress.output(spec.tag, "Step 1/1 : FROM fake")
            log = self._build_log(spec, build_logs)
            if framework in self.failing_images:
                outcomes[spec.tag] = ImageRecord(
                    tag=spec.tag,
                    framework=framework,
                    status="failed",
                    build_seconds=0.1,
                    build_log=str(log) if log else None,
                    error="image build failed: fake",
                )
            else:
                outcomes[spec.tag] = ImageRecord(
                    tag=spec.tag,
                    framework=framework,
                    status="built",
                    build_seconds=0.1,
                    build_log=str(log) if log else None,
                )
            progress.finished(outcomes[spec.tag])
        return outcomes

    def _build_log(self, spec: ImageSpec, build_logs: Path) -> Path | None:
        if not self.write_build_logs:
            return None
        build_logs.mkdir(parents=True, exist_ok=True)
        log = build_logs / f"{spec.tag.replace('/', '_').replace(':', '_')}.log"
        log.write_text(f"# building {spec.tag}\n", encoding="utf-8")
        return log

    def run(self, request: AttemptRequest, sink: Sink, cancel: threading.Event) -> AttemptOutcome:
        started = now_iso()
        behaviour = self._next(request)
        with self._running_one():
            if behaviour.stdout:
                sink.stdout(behaviour.stdout)
            if behaviour.stderr:
                sink.stderr(behaviour.stderr)
            if behaviour.hold is not None:
                while not behaviour.hold.wait(0.01):
                    if cancel.is_set():
                        return AttemptOutcome(
                            status="cancelled",
                            started_at=started,
                            ended_at=now_iso(),
                            error="cancelled by the user",
                        )
            if behaviour.artifacts is not None:
                sink.artifacts(_chunks(behaviour.artifacts))
            if behaviour.engine_lost:
                self._lose_engine(request.batch_id)
            return behaviour.outcome(started)

    def reattach(
        self,
        batch_dir: Path,
        run_id: str,
        attempt: int,
        open_sink: Callable[[], Sink],
        cancel: threading.Event,
    ) -> AttemptOutcome | None:
        """Its containers do not outlive the driver's process (the sweep removes them)."""
        return None

    def sweep(self, batch_id: str) -> int:
        if not self.up:
            raise ConnectionError("fake engine is down")
        with self._lock:
            self.swept.append(batch_id)
            return self.leftovers.pop(batch_id, 0)

    def clean(self, request: CleanRequest) -> list[str]:
        return [f"would clean ({request})"]

    def available(self) -> bool:
        return self.up

    def where(self) -> dict[str, str]:
        return {"backend": self.name, "host": "memory"}

    # -- helpers -------------------------------------------------------------------------

    def attempts_of(self, run_id: str) -> list[AttemptRequest]:
        with self._lock:
            return [r for r in self.requests if r.run_id == run_id]

    def _next(self, request: AttemptRequest) -> Behaviour:
        with self._lock:
            self.requests.append(request)
            index = self._attempts.get(request.run_id, 0)
            self._attempts[request.run_id] = index + 1
        script = self.behaviours.get(request.run_id, [Behaviour()])
        return script[min(index, len(script) - 1)]

    def _lose_engine(self, batch_id: str) -> None:
        with self._lock:
            self.up = False
            self.leftovers[batch_id] = self.leftovers.get(batch_id, 0) + 1
        if self.on_lost is not None:
            self.on_lost(self)

    def _running_one(self) -> _Counted:
        return _Counted(self)


class _Counted:
    """Counts attempts in flight, and keeps the peak."""

    def __init__(self, backend: FakeBackend) -> None:
        self.backend = backend

    def __enter__(self) -> None:
        with self.backend._lock:
            self.backend._running += 1
            self.backend.peak = max(self.backend.peak, self.backend._running)

    def __exit__(self, *exc_info: object) -> None:
        with self.backend._lock:
            self.backend._running -= 1


def _chunks(data: bytes, size: int = 512) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def tar_of(files: dict[str, bytes], top: str = "logs") -> bytes:
    """A tar stream like `docker cp` of /safeagents/logs: members under one top directory."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        directory = tarfile.TarInfo(top)
        directory.type = tarfile.DIRTYPE
        directory.mode = 0o1777
        tar.addfile(directory)
        for name, content in files.items():
            member = tarfile.TarInfo(f"{top}/{name}")
            member.size = len(content)
            member.mode = 0o644
            tar.addfile(member, io.BytesIO(content))
    return buffer.getvalue()


def tar_with_special_members(top: str = "logs") -> bytes:
    """A FIFO, links out of the dir and a device node, beside one regular result file."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, kind, target in (
            ("result.json", tarfile.FIFOTYPE, ""),
            ("shadow", tarfile.SYMTYPE, "/etc/shadow"),
            ("root", tarfile.SYMTYPE, "/"),
            ("disk", tarfile.CHRTYPE, ""),
        ):
            member = tarfile.TarInfo(f"{top}/{name}")
            member.type = kind
            member.linkname = target
            tar.addfile(member)
        content = b'{"ok": true}'
        member = tarfile.TarInfo(f"{top}/score.json")
        member.size = len(content)
        tar.addfile(member, io.BytesIO(content))
    return buffer.getvalue()
