"""Docker images by content-hash tag: found on the engine, or built with a streamed log."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import IO, Any

import docker
import docker.errors
import requests

from safeagents_batch import __version__, labels
from safeagents_batch.backends.base import ImageOutcome
from safeagents_batch.images import ImageSpec, write_build_context


class DockerImages:
    """Ensures images on one engine: found by tag, or built with a streamed log. Holds no
    memory of earlier outcomes; the orchestrator makes concurrent asks for one tag share one."""

    def __init__(
        self, client: docker.DockerClient, log_dir: Path, *, rebuild: bool = False
    ) -> None:
        self.client = client
        self.log_dir = log_dir
        self.rebuild = rebuild

    def ensure(self, spec: ImageSpec) -> ImageOutcome:
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
        labels.MANAGED: "true",
        labels.FRAMEWORK: spec.config.framework,
        labels.DIGEST: spec.digest,
        labels.BASE: spec.config.effective_base_image,
        labels.VERSION: __version__,
    }
