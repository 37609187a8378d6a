"""`clean`: find and remove what the tool left on the engine (labelled containers, images)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import docker
import docker.errors

from safeagents_batch.backends.docker import remove_container
from safeagents_batch.image_store import LABEL_PREFIX

MANAGED = f"{LABEL_PREFIX}.managed=true"


@dataclass(frozen=True)
class Leftover:
    kind: str  # container | image
    ref: str  # what the engine removes by (an id)
    name: str  # what the user reads
    size_bytes: int = 0
    kept_because: str | None = None


def leftover_containers(client: docker.DockerClient) -> list[Leftover]:
    """Every labelled container; one whose orchestrator still runs here is kept."""
    found = []
    # The batch label only our backend sets; `managed` also reaches containers users start from
    # our images (Docker copies image labels onto containers).
    for info in client.api.containers(all=True, filters={"label": f"{LABEL_PREFIX}.batch"}):
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


def tool_images(client: docker.DockerClient, keep_tags: set[str]) -> list[Leftover]:
    """The tool's images (by label) except those carrying a tag in `keep_tags`."""
    found = []
    for image in client.api.images(filters={"label": MANAGED}):
        tags = [t for t in image.get("RepoTags") or [] if t != "<none>:<none>"]
        if set(tags) & keep_tags:
            continue
        found.append(Leftover("image", image["Id"], ", ".join(tags) or image["Id"][7:19],
                              int(image.get("Size", 0))))
    return found


def remove_leftover(client: docker.DockerClient, item: Leftover) -> str | None:
    """Removes one item; returns the engine's reason when it refuses (e.g. image in use)."""
    try:
        if item.kind == "container":
            remove_container(client, item.ref)
        else:
            client.api.remove_image(item.ref)
    except docker.errors.APIError as exc:
        return " ".join(str(exc.explanation or exc).split())
    return None


def human_size(size: float) -> str:
    for unit in ("B", "kB", "MB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"
