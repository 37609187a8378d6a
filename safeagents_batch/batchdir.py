"""Side effects around a batch directory: the exclusive lock and the sweep of its containers."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from types import TracebackType
from typing import Any

import docker
import docker.errors

from safeagents_batch.backends.docker import remove_container
from safeagents_batch.errors import BatchLocked
from safeagents_batch.image_store import LABEL_PREFIX

LOCK_NAME = ".lock"


class BatchLock:
    """An flock on BATCH_DIR/.lock. The kernel drops it when its holder dies, so a lock left by
    a killed process is simply taken over; a live holder is named in the error."""

    def __init__(self, batch_dir: Path) -> None:
        self.path = batch_dir / LOCK_NAME
        self.fd: int | None = None

    def __enter__(self) -> BatchLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise BatchLocked(
                    f"{self.path.parent} is in use by pid {holder}; "
                    "wait for it to finish or stop it first"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self.fd = fd
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.close(self.fd)  # closing releases the flock
            self.fd = None


def batch_container_infos(
    client: docker.DockerClient, batch_id: str | None = None
) -> list[dict[str, Any]]:
    """The engine's listing of containers the tool created (of one batch, when given), running
    or not."""
    # By the batch label, which only our backend sets: image labels (`managed`) are copied onto
    # every container made from our images, also ones a user starts by hand.
    label = f"{LABEL_PREFIX}.batch={batch_id}" if batch_id else f"{LABEL_PREFIX}.batch"
    infos: list[dict[str, Any]] = client.api.containers(all=True, filters={"label": label})
    return infos


def batch_containers(client: docker.DockerClient, batch_id: str | None = None) -> list[str]:
    """Ids of containers the tool created (of one batch, when given), running or not."""
    return [c["Id"] for c in batch_container_infos(client, batch_id)]


def remove_batch_containers(client: docker.DockerClient, batch_id: str) -> list[str]:
    removed = batch_containers(client, batch_id)
    for container_id in removed:
        remove_container(client, container_id)
    return removed
