"""What `clean` finds and removes on a Docker engine: labelled containers and the tool's images."""

from __future__ import annotations

from typing import Any

import docker
import docker.errors

from safeagents_batch import labels
from safeagents_batch.backends.docker import batch_container_infos, remove_container
from safeagents_batch.clean import Leftover, still_running_because


class DockerCleaner:
    """`clean.Cleanable` on one engine."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client

    def leftover_containers(self) -> list[Leftover]:
        return leftover_containers(self.client)

    def tool_images(
        self, keep_tags: set[str], repositories: set[str] | None = None
    ) -> list[Leftover]:
        return tool_images(self.client, keep_tags, repositories)

    def remove_leftover(self, item: Leftover) -> str | None:
        return remove_leftover(self.client, item)


def leftover_containers(client: docker.DockerClient) -> list[Leftover]:
    """Every labelled container; one whose orchestrator still runs here is kept."""
    found = []
    for info in batch_container_infos(client):
        container_labels: dict[str, str] = info.get("Labels") or {}
        name = (info.get("Names") or ["/" + info["Id"][:12]])[0].lstrip("/")
        kept = still_running_because(container_labels)
        found.append(Leftover("container", info["Id"], name, 0, kept))
    return found


def tool_images(
    client: docker.DockerClient, keep_tags: set[str], repositories: set[str] | None = None
) -> list[Leftover]:
    """The tool's images (by label) except those carrying a tag in `keep_tags`; with
    `repositories`, only images tagged in one of them."""
    found = []
    for image in client.api.images(filters={"label": f"{labels.MANAGED}=true"}):
        tags = [t for t in image.get("RepoTags") or [] if t != "<none>:<none>"]
        if set(tags) & keep_tags:
            continue
        if repositories is not None and not {t.rpartition(":")[0] for t in tags} & repositories:
            continue
        name = ", ".join(tags) or image["Id"][7:19]
        found.append(
            Leftover("image", image["Id"], name, _own_size(client, image), tags=tuple(tags))
        )
    return found


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
        # By tag: the engine refuses an id with tags in several repositories (one configuration
        # built under two image names) unless forced; removing the last tag removes the image.
        for ref in item.tags or (item.ref,):
            client.api.remove_image(ref)
    except docker.errors.APIError as exc:
        return " ".join(str(exc.explanation or exc).split())
    return None
