"""Rootless Podman for tests: a user of the test's own (`useradd`, whose subordinate id ranges
Debian adds), its runtime dir, its `podman system service` on its socket and its storage;
removed whole on exit (its processes, storage, runtime dir and the user). The tool runs as root
and talks to the user's socket, as it would to any engine's; the project it runs lives in a
directory the user can read (its code is bind-mounted into the user's containers)."""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import docker

READY_SECONDS = 30.0  # upper bounds, not timing assertions
GONE_SECONDS = 30.0


class RootlessPodman:
    def __init__(self) -> None:
        self.user = f"sab{secrets.token_hex(3)}"
        self.uid = 0
        self.runtime_dir = Path("/")
        self.socket_path = Path("/")
        self.log = Path("/")

    @property
    def socket_url(self) -> str:
        return f"unix://{self.socket_path}"

    def as_user(self, *args: str, stdin: bytes | None = None) -> bytes:
        command = ["runuser", "-u", self.user, "--", "env", *self._env(), *args]
        return subprocess.run(command, input=stdin, check=True, capture_output=True).stdout

    def start(self) -> None:
        if shutil.which("podman") is None:
            raise RuntimeError("podman is not installed: run scripts/provision-docker")
        subprocess.run(["useradd", "--create-home", self.user], check=True, capture_output=True)
        self.uid = pwd.getpwnam(self.user).pw_uid
        self.runtime_dir = Path(f"/run/user/{self.uid}")
        self.runtime_dir.mkdir(mode=0o700, parents=True)
        shutil.chown(self.runtime_dir, self.user, self.user)
        self.as_user("mkdir", "-p", str(self.runtime_dir / "podman"))
        self.socket_path = self.runtime_dir / "podman" / "podman.sock"
        self.log = self.runtime_dir / "service.log"
        with self.log.open("wb") as log:
            service = subprocess.Popen(
                ["runuser", "-u", self.user, "--", "env", *self._env(), "podman", "system",
                 "service", "--time=0", self.socket_url],
                stdout=log,
                stderr=log,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + READY_SECONDS
        while not self.socket_path.exists():
            if time.monotonic() > deadline or service.poll() is not None:
                tail = self.log.read_text(errors="replace")[-1500:]
                raise RuntimeError(f"rootless podman service did not start: {tail}")
            time.sleep(0.05)

    def load_images(self, host: docker.DockerClient, tags: list[str]) -> None:
        for tag in tags:
            archive = b"".join(host.api.get_image(tag, chunk_size=1 << 20))
            self.as_user("podman", "load", "-q", stdin=archive)
            self.as_user("podman", "tag", f"localhost/{tag}", f"docker.io/library/{tag}")

    def close(self) -> None:
        if self.uid:
            with contextlib.suppress(subprocess.CalledProcessError):
                self.as_user("podman", "system", "reset", "--force")
            self._kill_users_processes()
            subprocess.run(["userdel", "--remove", self.user], capture_output=True)
            shutil.rmtree(self.runtime_dir, ignore_errors=True)

    def _env(self) -> list[str]:
        """`env` arguments: the user's own environment alone (the test session's config dirs
        are root's, and Podman would read its config there)."""
        return [
            "-i",
            "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            f"HOME=/home/{self.user}",
            f"USER={self.user}",
            f"XDG_RUNTIME_DIR={self.runtime_dir}",
        ]

    def _kill_users_processes(self) -> None:
        """SIGTERM, then SIGKILL what is left (conmon, the service, a container's processes)."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self._pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + GONE_SECONDS / 2
            while self._pids() and time.monotonic() < deadline:
                time.sleep(0.1)
            if not self._pids():
                return

    def _pids(self) -> list[int]:
        found = subprocess.run(["pgrep", "-u", str(self.uid)], capture_output=True, text=True)
        return [int(pid) for pid in found.stdout.split()]


@contextmanager
def rootless_podman() -> Iterator[RootlessPodman]:
    engine = RootlessPodman()
    try:
        engine.start()
        yield engine
    finally:
        engine.close()


@contextmanager
def shared_dir() -> Iterator[Path]:
    """A directory the rootless user can read (pytest's are root's alone), removed on exit."""
    path = Path(tempfile.mkdtemp(prefix="sab-rootless-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
