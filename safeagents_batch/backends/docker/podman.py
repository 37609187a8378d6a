"""Podman as the engine (`--engine podman`): its Docker-compatible API (`podman system
service`) takes every call the tool makes, so the Docker backend runs on it unchanged. This
finds the user's service, or starts one that outlives the command (as dockerd does), and points
DOCKER_HOST at it for this process and the ones it starts."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from safeagents_batch.core.errors import EngineUnavailable

START_SECONDS = 10.0  # a service answers in about 0.15 s here
POLL_SECONDS = 0.05
ROOT_SOCKET = Path("/run/podman/podman.sock")  # rootful Podman's own default


def default_socket() -> Path:
    """Where Podman's service listens by default: root's, or the user's runtime dir's."""
    if os.geteuid() == 0:
        return ROOT_SOCKET
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.geteuid()}"
    return Path(runtime_dir) / "podman" / "podman.sock"


def use_podman(path: Path | None = None) -> str:
    """DOCKER_HOST set to the Podman service at `path` (default: `default_socket`), started
    first if nothing answers there; returns its URL."""
    where = path or default_socket()
    if not answers(where):
        start_service(where)
    url = f"unix://{where}"
    os.environ["DOCKER_HOST"] = url
    return url


def answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def start_service(path: Path) -> None:
    """`podman system service --time=0` on `path`, in a session of its own (it stays when
    the command ends, and a Ctrl-C of the command does not reach it); its log beside the
    socket."""
    podman = shutil.which("podman")
    if podman is None:
        raise EngineUnavailable("--engine podman: podman is not installed (apt-get install podman)")
    path.parent.mkdir(parents=True, exist_ok=True)
    with (path.parent / "safeagents-podman-service.log").open("ab") as log:
        subprocess.Popen(
            [podman, "system", "service", "--time=0", f"unix://{path}"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if answers(path):
            return
        time.sleep(POLL_SECONDS)
    raise EngineUnavailable(
        f"--engine podman: the Podman service did not answer at {path} within "
        f"{START_SECONDS:g} s (its log: {path.parent / 'safeagents-podman-service.log'})"
    )
