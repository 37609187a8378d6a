"""`clean` on a Docker engine: what the tool left there (labelled containers and `models`
networks whose batch no longer runs, and with `--images` its images) and their removal, one
line per item."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import docker
import docker.errors

from safeagents_batch.backends.base import CleanRequest
from safeagents_batch.backends.docker.backend import batch_container_infos, remove_container
from safeagents_batch.backends.docker.relay import batch_networks
from safeagents_batch.core import labels


def clean_engine(client: docker.DockerClient, request: CleanRequest) -> list[str]:
    """The leftovers of `request` on this engine, removed (or listed, on a dry run)."""
    items = leftover_containers(client) + leftover_networks(client)  # networks once emptied
    if request.images:
        items += tool_images(client, set(request.keep_tags), request.repositories)
    return clean(client, items, dry_run=request.dry_run).lines


@dataclass(frozen=True)
class Leftover:
    kind: Literal["container", "network", "image"]
    ref: str  # what the engine removes by (an id)
    name: str  # what the user reads
    size_bytes: int = 0
    kept_because: str | None = None
    tags: tuple[str, ...] = ()  # an image's tags: it is removed by them, not by its id


@dataclass(frozen=True)
class CleanResult:
    lines: list[str]
    removed: int
    freed_bytes: int


def clean(client: docker.DockerClient, items: list[Leftover], *, dry_run: bool) -> CleanResult:
    verb = "would remove" if dry_run else "removed"
    lines: list[str] = []
    removed = freed = 0
    for item in items:
        failure = item.kept_because or (None if dry_run else remove_leftover(client, item))
        if failure:
            lines.append(f"kept {item.kind} {item.name}: {failure}")
            continue
        size = f" ({human_size(item.size_bytes)})" if item.size_bytes else ""
        lines.append(f"{verb} {item.kind} {item.name}{size}")
        removed += 1
        freed += item.size_bytes
    lines.append(f"{verb} {removed} item(s), {human_size(freed)} of images")
    return CleanResult(lines, removed, freed)


def still_running_because(container_labels: Mapping[str, str]) -> str | None:
    """Why a labelled container is not a leftover: its orchestrator still runs on this host."""
    pid = container_labels.get(labels.PID, "")
    if container_labels.get(labels.HOST) != socket.gethostname() or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # the process exists; it belongs to another user
    return f"its batch is still running (pid {pid})"


def human_size(size: float) -> str:
    for unit in ("B", "kB", "MB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def leftover_containers(client: docker.DockerClient) -> list[Leftover]:
    """Every labelled container; one whose orchestrator still runs here is kept."""
    found = []
    for info in batch_container_infos(client):
        container_labels: dict[str, str] = info.get("Labels") or {}
        name = (info.get("Names") or ["/" + info["Id"][:12]])[0].lstrip("/")
        kept = still_running_because(container_labels)
        found.append(Leftover("container", info["Id"], name, 0, kept))
    return found


def leftover_networks(client: docker.DockerClient) -> list[Leftover]:
    """The `network: models` networks; one whose orchestrator still runs here is kept."""
    return [
        Leftover("network", info["Id"], info["Name"], 0, still_running_because(info["Labels"]))
        for info in batch_networks(client)
    ]


def tool_images(
    client: docker.DockerClient,
    keep_tags: set[str],
    repositories: frozenset[str] | None = None,
) -> list[Leftover]:
    """The tool's images (by label), dangling ones too (a rebuilt tag's old image that a
    container still used), except those carrying a tag in `keep_tags`; with `repositories`,
    only images of one of them: by their tags, or, with no tag left, by the tagged image of
    the same configuration (digest) that replaced them."""
    listed = client.api.images(filters={"label": f"{labels.MANAGED}=true"})
    tagged = [(image, _tags(image)) for image in listed]
    by_digest: dict[str, set[str]] = {}
    for image, tags in tagged:
        by_digest.setdefault(_digest(image), set()).update(t.rpartition(":")[0] for t in tags)
    found = []
    for image, tags in tagged:
        if set(tags) & keep_tags:
            continue
        digest = _digest(image)
        names = {t.rpartition(":")[0] for t in tags} or (
            by_digest.get(digest, set()) if digest else set()
        )
        if repositories is not None and not names & repositories:
            continue
        name = ", ".join(tags) or image["Id"][7:19]
        found.append(
            Leftover("image", image["Id"], name, _own_size(client, image), tags=tuple(tags))
        )
    return found


def _tags(image: dict[str, Any]) -> list[str]:
    return [t for t in image.get("RepoTags") or [] if t != "<none>:<none>"]


def _digest(image: dict[str, Any]) -> str:
    return str((image.get("Labels") or {}).get(labels.DIGEST, ""))


def _own_size(client: docker.DockerClient, image: dict[str, Any]) -> int:
    """What removing the image frees: its size less the base image's layers, which it shares
    (the base stays). Images built before the base label was added count whole."""
    size = int(image.get("Size", 0))
    base = (image.get("Labels") or {}).get(labels.BASE)
    if not base:
        return size
    try:
        base_size = int(client.api.inspect_image(base).get("Size", 0))
    except docker.errors.ImageNotFound:
        return size
    return size - base_size if 0 < base_size <= size else size


def remove_leftover(client: docker.DockerClient, item: Leftover) -> str | None:
    try:
        if item.kind == "container":
            remove_container(client, item.ref)
            return None
        if item.kind == "network":
            client.api.remove_network(item.ref)
            return None
        # By tag: the engine refuses an id with tags in several repositories (one configuration
        # built under two image names) unless forced; removing the last tag removes the image.
        for ref in item.tags or (item.ref,):
            client.api.remove_image(ref)
    except docker.errors.APIError as exc:
        return " ".join(str(exc.explanation or exc).split())
    return None
