"""Docker images by content-hash tag: found on the engine, or built with a streamed log."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import socket
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import docker
import docker.errors
import requests

from safeagents_batch.backends.base import QUIET_BUILD, BuildProgress
from safeagents_batch.core import labels
from safeagents_batch.core.errors import one_line
from safeagents_batch.core.files import open_log
from safeagents_batch.core.version import VERSION
from safeagents_batch.records.model import ImageRecord
from safeagents_batch.staging.images import AZURE_CLI_VENV, ImageSpec, write_build_context

ERROR_LINES = 3  # of the failing step's output, in a failed build's one-line error
TAIL_LINES = 12  # where they are looked for: the end of its output
ERROR_LINE = re.compile(r"(error|ERROR|Error)\b|E: ")  # `E: ` is apt-get's
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
BUILDER_LINE = re.compile(r"(Step \d+/\d+ : |---> |Removing intermediate container |Successfully )")
# The builder's own lines but its steps: not worth showing while a build goes.
BUILDER_NOISE = re.compile(r"(---> |Removing intermediate container |Successfully )")
NON_ZERO = re.compile(r"returned a non-zero code: (\d+)")
STEP_IMAGE = re.compile(r"---> ([0-9a-f]{12,64})")  # a step's image; not "---> Running in ..."
# Both environments' freeze in one container; the marker line parts them.
AZURE_MARKER = "#safeagents-batch: azure-cli venv"
FREEZE_SCRIPT = (
    "python -m pip freeze --all; "
    f"if [ -x {AZURE_CLI_VENV}/bin/python ]; then echo '{AZURE_MARKER}' && "
    f"{AZURE_CLI_VENV}/bin/python -m pip freeze --all; fi"
)


@dataclass(frozen=True)
class Packages:
    """What `pip freeze --all` says an image holds: its Python's, and the Azure CLI's venv's."""

    python: tuple[str, ...]
    azure_cli: tuple[str, ...] = ()

    def labels(self) -> dict[str, str]:
        return {
            labels.PACKAGES: json.dumps(list(self.python)),
            labels.AZURE_CLI_PACKAGES: json.dumps(list(self.azure_cli)),
        }


def packages_from_labels(found: dict[str, str]) -> Packages | None:
    """The packages an image's labels record; None for an image built before they did."""
    if labels.PACKAGES not in found:
        return None
    try:
        python = json.loads(found[labels.PACKAGES])
        azure_cli = json.loads(found.get(labels.AZURE_CLI_PACKAGES, "[]"))
    except ValueError:
        return None
    return Packages(tuple(map(str, python)), tuple(map(str, azure_cli)))


def parse_freeze(text: str) -> Packages:
    python, _, azure_cli = text.partition(AZURE_MARKER)
    return Packages(_lines(python), _lines(azure_cli))


def _lines(text: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in text.splitlines() if line.strip())


class DockerImages:
    """Ensures images on one engine: found by tag, or built with a streamed log. Holds no
    memory of earlier outcomes; the orchestrator makes concurrent asks for one tag share one."""

    def __init__(
        self,
        client: docker.DockerClient,
        log_dir: Path,
        *,
        rebuild: bool = False,
        progress: BuildProgress = QUIET_BUILD,
    ) -> None:
        self.client = client
        self.log_dir = log_dir
        self.rebuild = rebuild
        self.progress = progress

    def ensure(self, spec: ImageSpec) -> ImageRecord:
        found = None if self.rebuild else self._labels(spec.tag)
        if found is None:
            return self._build(spec)
        packages = packages_from_labels(found) or self._freeze_unlabelled(spec.tag)
        return ImageRecord(
            tag=spec.tag,
            framework=spec.config.framework,
            status="cached",
            build_seconds=None,
            build_log=None,
            packages=packages.python,
            azure_cli_packages=packages.azure_cli,
        )

    def _labels(self, tag: str) -> dict[str, str] | None:
        """The labels of the image tagged `tag`; None when there is none."""
        try:
            image = self.client.images.get(tag)
        except docker.errors.ImageNotFound:
            return None
        return dict(image.labels or {})

    def _freeze_unlabelled(self, tag: str) -> Packages:
        """An image from before packages were recorded (or whose build stopped before it)
        says what it holds when asked, and is labelled with it, so that this costs one batch a
        container once rather than every batch; if it cannot, the run goes ahead without."""
        try:
            packages = self.freeze(tag)
            self._label(tag, packages, io.StringIO())
        except (docker.errors.DockerException, requests.RequestException):
            return Packages(())
        return packages

    def freeze(self, image: str) -> Packages:
        """`pip freeze --all` in a throwaway container of `image`, with no network."""
        output = self.client.containers.run(
            image,
            ["sh", "-c", FREEZE_SCRIPT],
            remove=True,
            stdout=True,
            stderr=False,
            network_mode="none",
            labels=_freeze_labels(),
        )
        return parse_freeze(bytes(output).decode("utf-8", "replace"))

    def _record(self, spec: ImageSpec, log: IO[str]) -> Packages:
        """The built image's packages, frozen and then put on it as labels. Labels are fixed
        at build time, so a second build `FROM` the first adds them: no layer, the same
        content under the same tag. Should this step not happen (a crash), the tag still
        names the right content, and `ensure` freezes it when it finds it."""
        packages = self.freeze(spec.tag)
        log.write(f"\n# resolved packages ({len(packages.python)})\n")
        log.write("".join(f"{line}\n" for line in packages.python))
        if packages.azure_cli:
            log.write(f"# azure-cli venv ({len(packages.azure_cli)})\n")
            log.write("".join(f"{line}\n" for line in packages.azure_cli))
        self._label(spec.tag, packages, log)
        return packages

    def _label(self, tag: str, packages: Packages, log: IO[str]) -> None:
        """Puts the package lists on the image as labels: a build `FROM` it, no new layer."""
        image_id = self.client.images.get(tag).id
        dockerfile = io.BytesIO(f"FROM {image_id}\n".encode())
        stream = self.client.api.build(
            fileobj=dockerfile, tag=tag, rm=True, decode=True, labels=packages.labels()
        )
        for chunk in stream:
            error = _write_chunk(chunk, log)
            if error:
                raise docker.errors.BuildError(error, [])

    def _build(self, spec: ImageSpec) -> ImageRecord:
        self.progress.started(spec.tag)
        record: ImageRecord | None = None
        try:
            record = self._build_now(spec)
            return record
        finally:  # the display's line for the build ends however the build did
            self.progress.finished(record or _stopped(spec))

    def _build_now(self, spec: ImageSpec) -> ImageRecord:
        log_path = self.log_dir / f"{spec.tag.replace('/', '_').replace(':', '_')}.log"
        started = time.monotonic()
        replaced = self._image_id(spec.tag)  # a rebuild's old image, removed once replaced
        with (
            tempfile.TemporaryDirectory(prefix="safeagents-build-") as context,
            open_log(log_path) as log,
        ):
            write_build_context(spec, Path(context))
            error = self._stream_build(spec, Path(context), log)
            packages = Packages(())
            if error is None:
                try:
                    packages = self._record(spec, log)
                except (docker.errors.DockerException, requests.RequestException) as exc:
                    log.write(f"\nERROR recording the packages: {exc}\n")
                    error = f"recording its packages: {one_line(exc)}"
        seconds = round(time.monotonic() - started, 3)
        if error is None and replaced is not None:
            self._remove_if_unused(replaced)
        if error is not None:
            return ImageRecord(
                tag=spec.tag,
                framework=spec.config.framework,
                status="failed",
                build_seconds=seconds,
                build_log=str(log_path),
                error=f"image build failed: {error} (log: {log_path})",
            )
        return ImageRecord(
            tag=spec.tag,
            framework=spec.config.framework,
            status="built",
            build_seconds=seconds,
            build_log=str(log_path),
            packages=packages.python,
            azure_cli_packages=packages.azure_cli,
        )

    def _image_id(self, tag: str) -> str | None:
        try:
            return str(self.client.api.inspect_image(tag)["Id"])
        except docker.errors.ImageNotFound:
            return None

    def _remove_if_unused(self, image_id: str) -> None:
        """An image the build left behind (a rebuilt tag's old image, a failed build's steps),
        removed with its untagged parents unless something still needs it: a tag (another
        image name built the same content), a container, a child image. The engine refuses
        those (409), and then it stays."""
        with contextlib.suppress(docker.errors.APIError):
            if not self.client.api.inspect_image(image_id).get("RepoTags"):
                self.client.api.remove_image(image_id)

    def _stream_build(self, spec: ImageSpec, context: Path, log: IO[str]) -> str | None:
        """Runs the build, writing its output as it comes; returns the error text, if any. A
        failed build's step images are removed: nothing of it is left (a step shared with an
        earlier build stays, as that build's image needs it)."""
        steps: list[str] = []
        error = self._run_build(spec, context, log, steps)
        if error is not None:
            for image_id in reversed(steps):
                self._remove_if_unused(image_id)
        return error

    def _run_build(
        self, spec: ImageSpec, context: Path, log: IO[str], steps: list[str]
    ) -> str | None:
        log.write(f"# building {spec.tag}\n{spec.dockerfile}\n")
        try:
            stream = self.client.api.build(
                path=str(context),
                dockerfile=spec.dockerfile_path,
                tag=spec.tag,
                rm=True,
                forcerm=True,
                decode=True,
                nocache=self.rebuild,
                pull=False,
                labels=image_labels(spec),
            )
            output = StepOutput()
            for chunk in stream:
                steps += _step_image(chunk)
                for line in output.feed(str(chunk.get("stream", ""))):
                    if not BUILDER_NOISE.match(line):
                        self.progress.output(spec.tag, line)
                error = _write_chunk(chunk, log)
                if error:
                    return _real_error(error, output.lines())
        except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
            log.write(f"\nERROR: {exc}\n")
            return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return None


def _stopped(spec: ImageSpec) -> ImageRecord:
    """The record a display gets of a build that raised (the caller gets the exception)."""
    return ImageRecord(
        tag=spec.tag,
        framework=spec.config.framework,
        status="failed",
        build_seconds=None,
        build_log=None,
        error="image build stopped",
    )


class StepOutput:
    """The end of what the build's steps printed, as whole lines: the engine's stream chunks
    are not lines (one may end in the middle of one), and carry colour codes."""

    def __init__(self) -> None:
        self._tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._partial = ""

    def feed(self, text: str) -> list[str]:
        """Takes a chunk; returns the lines it completes (the builder's own among them)."""
        *complete, self._partial = (self._partial + text).split("\n")
        lines = [line for line in (_uncoloured(text) for text in complete) if line]
        self._tail.extend(line for line in lines if not _builders(line))
        return lines

    def lines(self) -> list[str]:
        last = _clean(self._partial)
        return [*self._tail, *([last] if last else [])]


def _clean(line: str) -> str:
    """A line without colour codes, and none at all if the builder itself wrote it."""
    text = _uncoloured(line)
    return "" if _builders(text) else text


def _uncoloured(line: str) -> str:
    """Without colour codes; of a line a progress display rewrote (`\r`), its last state."""
    return ANSI.sub("", line).strip().rsplit("\r", 1)[-1].strip()


def _builders(line: str) -> bool:
    return BUILDER_LINE.match(line) is not None


def _real_error(error: str, lines: list[str]) -> str:
    """What the failing step printed (the resolver's reason: from its first `error` line near
    the end, or its last lines), and how it ended, rather than the builder's "The command
    '...' returned a non-zero code: N" with the whole command."""
    code = NON_ZERO.search(error)
    if not lines or code is None:
        return error
    start = next((i for i, line in enumerate(lines) if ERROR_LINE.match(line)), None)
    shown = lines[start : start + ERROR_LINES] if start is not None else lines[-ERROR_LINES:]
    return f"{' / '.join(shown)} (the step exited {code.group(1)})"


def _step_image(chunk: dict[str, Any]) -> list[str]:
    """The image a build step committed, as the classic builder says it (` ---> 1a2b3c4d5e6f`)."""
    found = STEP_IMAGE.fullmatch(str(chunk.get("stream", "")).strip())
    return [found.group(1)] if found else []


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
        labels.BASE: spec.config.base_label,
        labels.VERSION: VERSION,
    }


def _freeze_labels() -> dict[str, str]:
    # Found by `clean` like a run's container, should a crash leave it.
    return {
        labels.MANAGED: "true",
        labels.BATCH: "image-packages",
        labels.HOST: socket.gethostname(),
        labels.PID: str(os.getpid()),
    }


def stream_error(message: dict[str, Any]) -> str:
    """The text of an error item of the engine's progress stream (push, pull, load)."""
    detail = message.get("errorDetail")
    text = message.get("error") or (detail.get("message") if isinstance(detail, dict) else None)
    return " ".join(str(text or message).split())


def load_archive(api: docker.APIClient, data: bytes | IO[bytes], tag: str) -> None:
    """`docker load` of a `docker save` archive that holds `tag` (a cluster node's copy)."""
    for message in api.load_image(data):
        if "error" in message or "errorDetail" in message:
            raise RuntimeError(f"docker load of {tag}: {stream_error(message)}")
