"""A rootful Podman engine for tests: `podman system service` on a socket of the test's own,
with storage of its own (overlay, reset by Podman on close) under one temp root, so the user's
Podman images and containers are neither seen nor touched. Rootful Podman here needs
`nofile`/`nproc` ulimits set for its containers (this VM lacks CAP_SYS_RESOURCE): a
containers.conf of ours gives them. Closing stops the service and deletes the root."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import docker

READY_SECONDS = 30.0  # an upper bound; it answers in about 0.15 s
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
"""


class PodmanEngine:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.socket_path = root / "podman.sock"
        self.socket_url = f"unix://{self.socket_path}"
        self.conf = root / "containers.conf"
        self._proc: subprocess.Popen[bytes] | None = None

    def podman(self, *args: str, stdin: bytes | None = None) -> bytes:
        return subprocess.run(
            [*self._base(), *args], input=stdin, check=True, capture_output=True, env=self._env()
        ).stdout

    def start(self) -> None:
        if shutil.which("podman") is None:
            raise RuntimeError("podman is not installed: run scripts/provision-docker")
        self.root.mkdir(parents=True)
        self.conf.write_text(CONTAINERS_CONF, encoding="utf-8")
        log = (self.root / "service.log").open("wb")
        self._proc = subprocess.Popen(
            [*self._base(), "system", "service", "--time=0", self.socket_url],
            stdout=log,
            stderr=log,
            env=self._env(),
            start_new_session=True,
        )
        deadline = time.monotonic() + READY_SECONDS
        while not self._answers():
            if time.monotonic() > deadline or self._proc.poll() is not None:
                raise RuntimeError(f"podman service did not start: {self.log_tail()}")
            time.sleep(0.05)

    def load_images(self, host: docker.DockerClient, tags: list[str]) -> None:
        """From the host engine, tagged as there (`podman load` names them localhost/...)."""
        for tag in tags:
            archive = b"".join(host.api.get_image(tag, chunk_size=1 << 20))
            self.podman("load", "-q", stdin=archive)
            # A short name would become localhost/NAME again: the full one, as Docker has it.
            self.podman("tag", f"localhost/{tag}", f"docker.io/library/{tag}")

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(subprocess.CalledProcessError):
                self.podman("rm", "--all", "--force")
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(30)
        # Its overlay mounts and storage, undone by Podman itself, then the root.
        with contextlib.suppress(subprocess.CalledProcessError, FileNotFoundError):
            self.podman("system", "reset", "--force")
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self) -> str:
        try:
            return (self.root / "service.log").read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def _base(self) -> list[str]:
        return [
            "podman",
            f"--root={self.root / 'storage'}",
            f"--runroot={self.root / 'run'}",
            "--storage-driver=overlay",
            f"--tmpdir={self.root / 'tmp'}",
        ]

    def _env(self) -> dict[str, str]:
        return {**os.environ, "CONTAINERS_CONF": str(self.conf)}

    def _answers(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(self.socket_path))
            except OSError:
                return False
        return True


@contextmanager
def podman_engine(root: Path) -> Iterator[PodmanEngine]:
    engine = PodmanEngine(root)
    try:
        engine.start()
        yield engine
    finally:
        engine.close()
