"""The image store: an image exists under its content-hash tag, or it is built exactly once."""

from __future__ import annotations

import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import docker
import docker.errors
import requests

from safeagents_batch import __version__
from safeagents_batch.images import ImageSpec, write_build_context

LABEL_PREFIX = "safeagents-batch"


@dataclass(frozen=True)
class ImageOutcome:
    tag: str
    framework: str
    status: str  # built | cached | failed
    build_seconds: float | None
    build_log: Path | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status != "failed"


class ImageStore:
    """Ensures images by tag. Thread-safe: concurrent asks for one tag share one build, and an
    outcome (also a failure) is remembered for the life of the store."""

    def __init__(
        self, client: docker.DockerClient, log_dir: Path, *, rebuild: bool = False
    ) -> None:
        self.client = client
        self.log_dir = log_dir
        self.rebuild = rebuild
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._outcomes: dict[str, ImageOutcome] = {}

    def ensure(self, spec: ImageSpec) -> ImageOutcome:
        with self._guard:
            lock = self._locks.setdefault(spec.tag, threading.Lock())
        with lock:
            # Checked again under the tag's lock: the first caller may have built it meanwhile.
            if spec.tag not in self._outcomes:
                self._outcomes[spec.tag] = self._ensure_now(spec)
            return self._outcomes[spec.tag]

    def _ensure_now(self, spec: ImageSpec) -> ImageOutcome:
        if not self.rebuild and self._exists(spec.tag):
            return ImageOutcome(spec.tag, spec.config.framework, "cached", None, None)
        return self._build(spec)

    def _exists(self, tag: str) -> bool:
        try:
            self.client.images.get(tag)
        except docker.errors.ImageNotFound:
            return False
        return True

    def _build(self, spec: ImageSpec) -> ImageOutcome:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{spec.tag.replace('/', '_').replace(':', '_')}.log"
        started = time.monotonic()
        with (
            tempfile.TemporaryDirectory(prefix="safeagents-build-") as context,
            log_path.open("w", encoding="utf-8") as log,
        ):
            write_build_context(spec, Path(context))
            error = self._stream_build(spec, Path(context), log)
        seconds = round(time.monotonic() - started, 3)
        if error is not None:
            return ImageOutcome(
                spec.tag,
                spec.config.framework,
                "failed",
                seconds,
                log_path,
                f"image build failed: {error} (log: {log_path})",
            )
        return ImageOutcome(spec.tag, spec.config.framework, "built", seconds, log_path)

    def _stream_build(self, spec: ImageSpec, context: Path, log: IO[str]) -> str | None:
        """Runs the build, writing its output as it comes; returns the error text, if any."""
        log.write(f"# building {spec.tag}\n{spec.dockerfile}\n")
        try:
            stream = self.client.api.build(
                path=str(context),
                tag=spec.tag,
                rm=True,
                forcerm=True,
                decode=True,
                nocache=self.rebuild,
                pull=False,
                labels=image_labels(spec),
            )
            for chunk in stream:
                error = _write_chunk(chunk, log)
                if error:
                    return error
        except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
            log.write(f"\nERROR: {exc}\n")
            return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return None


def _write_chunk(chunk: dict[str, Any], log: IO[str]) -> str | None:
    if "stream" in chunk:
        log.write(str(chunk["stream"]))
    if "status" in chunk:
        log.write(f"{chunk['status']} {chunk.get('progress', '')}\n")
    if "error" in chunk:
        log.write(f"\nERROR: {chunk['error']}\n")
        log.flush()
        return " ".join(str(chunk["error"]).split())
    log.flush()
    return None


def image_labels(spec: ImageSpec) -> dict[str, str]:
    return {
        f"{LABEL_PREFIX}.managed": "true",
        f"{LABEL_PREFIX}.framework": spec.config.framework,
        f"{LABEL_PREFIX}.digest": spec.digest,
        f"{LABEL_PREFIX}.base": spec.config.effective_base_image,
        f"{LABEL_PREFIX}.version": __version__,
    }
