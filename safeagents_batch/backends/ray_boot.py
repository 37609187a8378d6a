"""How this package reaches a Ray node that lacks it: one zip in Ray's object store per
batch, unpacked once per content digest into the node's cache, then put first on the node
worker's `sys.path` before anything of the package is imported there.

This module is pickled by value (the driver registers it with Ray's cloudpickle), because a
node cannot import it before it has the package: it uses only the standard library and Ray,
and what it hands a node (the agent class, the task trampoline, the shipment) arrives whole.

Why not Ray's `py_modules` runtime env, which does the same: with a runtime env the raylet
starts every worker through a setup process that then execs the real worker, Python and Ray
imported twice. That was a quarter of a second on each node before a batch's first attempt.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import io
import os
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

PACKAGE = "safeagents_batch"
NODE_CACHE_ENV = "SAFEAGENTS_NODE_CACHE"


@dataclass(frozen=True)
class Shipment:
    """The package as a node gets it. The zip's ref sits in a list, so Ray hands it over
    unresolved: a node that has this digest cached never fetches the zip."""

    digest: str
    box: list[Any]


def pack(package_dir: Path) -> tuple[str, bytes]:
    """The package's source files (no bytecode) as a zip rooted at its own name, and the
    digest of their names and contents."""
    digest = hashlib.sha256()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(package_dir.rglob("*")):
            if "__pycache__" in path.parts or not path.is_file():
                continue
            name = f"{PACKAGE}/{path.relative_to(package_dir).as_posix()}"
            data = path.read_bytes()
            digest.update(f"{name}\0{len(data)}\0".encode())
            digest.update(data)
            archive.writestr(name, data)
    return digest.hexdigest()[:32], buffer.getvalue()


def ship(package_dir: Path) -> Shipment:
    digest, data = pack(package_dir)
    return Shipment(digest, [ray.put(data)])


# -- on the node ------------------------------------------------------------------------


def node_cache() -> Path:
    default = Path(tempfile.gettempdir()) / f"safeagents-batch-node-{os.getuid()}"
    path = Path(os.environ.get(NODE_CACHE_ENV) or default)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Serializes the Ray workers of one node (separate processes) on one cache entry."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def install(shipment: Shipment) -> None:
    """The shipped package first on this worker's import path, unpacked on first use."""
    root = node_cache() / "package"
    root.mkdir(exist_ok=True)
    target = root / shipment.digest
    if not (target / PACKAGE).is_dir():
        with file_lock(root / f"{shipment.digest}.lock"):
            if not (target / PACKAGE).is_dir():  # another worker unpacked it meanwhile
                data: bytes = ray.get(shipment.box[0])
                staging = Path(tempfile.mkdtemp(prefix=f".{shipment.digest[:12]}-", dir=root))
                with zipfile.ZipFile(io.BytesIO(data)) as archive:
                    archive.extractall(staging)
                staging.rename(target)
    if str(target) not in sys.path:
        sys.path.insert(0, str(target))
        importlib.invalidate_caches()


def call_function(shipment: Shipment, module: str, name: str, *args: Any) -> Any:
    """A node function of the package, as a Ray task on a node where the batch has no agent
    (`clean`, a node whose agent has not started). Its arguments must be plain values: Ray
    unpickles them before the package is installed."""
    install(shipment)
    return getattr(importlib.import_module(module), name)(*args)


class BootedAgent:
    """The batch's agent on a node (ray_node.NodeAgent), made once the package is installed
    in its worker. Ray unpickles the arguments of later calls (an attempt's request is one of
    the package's classes) after this constructor ran, so they find the package."""

    def __init__(self, shipment: Shipment) -> None:
        install(shipment)
        from safeagents_batch.backends.ray_node import NodeAgent

        self._agent = NodeAgent()

    def ready(self) -> dict[str, str]:
        info: dict[str, str] = self._agent.ready()
        return info

    def run_attempt(
        self, key: str, request: Any, code_box: list[Any], azure_box: list[Any]
    ) -> Iterator[Any]:
        yield from self._agent.run_attempt(key, request, code_box, azure_box)

    def cancel(self, key: str) -> None:
        self._agent.cancel(key)

    def call(self, function: Any, *args: Any) -> Any:
        return self._agent.call(function, *args)
