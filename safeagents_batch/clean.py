"""`clean`: find and remove what the tool left on the engine (labelled containers, images)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors

from safeagents_batch.backends.docker import remove_container
from safeagents_batch.batchdir import batch_container_infos
from safeagents_batch.image_store import LABEL_PREFIX

MANAGED = f"{LABEL_PREFIX}.managed=true"


@dataclass(frozen=True)
class Leftover:
    kind: str  # container | image
    ref: str  # what the engine removes by (an id)
    name: str  # what the user reads
    size_bytes: int = 0
    kept_because: str | None = None
    tags: tuple[str, ...] = ()  # an image's tags: it is removed by them, not by its id


def leftover_containers(client: docker.DockerClient) -> list[Leftover]:
    """Every labelled container; one whose orchestrator still runs here is kept."""
    found = []
    for info in batch_container_infos(client):
        labels: dict[str, str] = info.get("Labels") or {}
        name = (info.get("Names") or ["/" + info["Id"][:12]])[0].lstrip("/")
        pid = labels.get(f"{LABEL_PREFIX}.pid", "")
        kept = f"its batch is still running (pid {pid})" if _orchestrator_alive(labels) else None
        found.append(Leftover("container", info["Id"], name, 0, kept))
    return found


def _orchestrator_alive(labels: dict[str, str]) -> bool:
    pid = labels.get(f"{LABEL_PREFIX}.pid", "")
    if labels.get(f"{LABEL_PREFIX}.host") != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # the process exists; it belongs to another user
    return True


def tool_images(
    client: docker.DockerClient, keep_tags: set[str], repositories: set[str] | None = None
) -> list[Leftover]:
    """The tool's images (by label) except those carrying a tag in `keep_tags`; with
    `repositories`, only images tagged in one of them."""
    found = []
    for image in client.api.images(filters={"label": MANAGED}):
        tags = [t for t in image.get("RepoTags") or [] if t != "<none>:<none>"]
        if set(tags) & keep_tags:
            continue
        if repositories is not None and not {t.rpartition(":")[0] for t in tags} & repositories:
            continue
        found.append(
            Leftover(
                "image",
                image["Id"],
                ", ".join(tags) or image["Id"][7:19],
                _own_size(client, image),
                tags=tuple(tags),
            )
        )
    return found


def _own_size(client: docker.DockerClient, image: dict[str, Any]) -> int:
    """What removing the image frees: its size less the base image's layers, which it shares
    (the base stays). Images built before the base label was added count whole."""
    size = int(image.get("Size", 0))
    base = (image.get("Labels") or {}).get(f"{LABEL_PREFIX}.base")
    if not base:
        return size
    try:
        base_size = int(client.api.inspect_image(base).get("Size", 0))
    except docker.errors.ImageNotFound:
        return size
    return size - base_size if 0 < base_size <= size else size


def remove_leftover(client: docker.DockerClient, item: Leftover) -> str | None:
    """Removes one item; returns the engine's reason when it refuses (e.g. image in use)."""
    try:
        if item.kind == "container":
            remove_container(client, item.ref)
            return None
        # By tag: the engine refuses an id with tags in several repositories (one configuration
        # built under two image names) unless forced; removing the last tag removes the image.
        for ref in item.tags or (item.ref,):
            client.api.remove_image(ref)
    except docker.errors.APIError as exc:
        return " ".join(str(exc.explanation or exc).split())
    return None


def human_size(size: float) -> str:
    for unit in ("B", "kB", "MB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"
