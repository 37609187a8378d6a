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
import shutil
import stat
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

PACKAGE = "safeagents_batch"
NODE_CACHE_ENV = "SAFEAGENTS_NODE_CACHE"
COMPLETE = ".complete"  # beside a cache entry once it is whole: without it the entry is redone
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
MIN_PYTHON = (3, 11)  # as pyproject.toml's requires-python; kept here: this module ships alone


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
            # A fixed date: the same files make the same zip.
            archive.writestr(zipfile.ZipInfo(name, date_time=ZIP_DATE), data)
    return digest.hexdigest()[:32], buffer.getvalue()


def ship(package_dir: Path) -> Shipment:
    digest, data = pack(package_dir)
    return Shipment(digest, [ray.put(data)])


# -- on the node ------------------------------------------------------------------------


def require_python() -> None:
    """The node's Python is one the package supports (Ray itself insists on the driver's
    minor version; this says so for a driver on an unsupported one too)."""
    if sys.version_info < MIN_PYTHON:
        found = ".".join(map(str, sys.version_info[:3]))
        floor = ".".join(map(str, MIN_PYTHON))
        raise RuntimeError(f"{PACKAGE} needs Python >= {floor}; this node runs {found}")


def node_cache() -> Path:
    """The node's cache of packages, code and locks: mode 0700, this user's own. Its code is
    imported and run there, so every directory from `/` down to it is checked through a
    descriptor (no link followed): owned by root or this user and writable by no one else
    (unless sticky, as /tmp); a cache another user made first, or may write to, is refused."""
    default = Path(tempfile.gettempdir()) / f"safeagents-batch-node-{os.getuid()}"
    path = Path(os.environ.get(NODE_CACHE_ENV) or default).absolute()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    try:
        parts = path.parts[1:]
        for index, part in enumerate(parts):
            parent, fd = fd, -1
            try:
                fd = _open_dir(parent, part, path)
            finally:
                os.close(parent)
            if index < len(parts) - 1:
                _safe_parent(fd, part, path)
        _own_and_closed(fd, path)
    finally:
        if fd >= 0:
            os.close(fd)
    return path


def _open_dir(parent: int, name: str, cache: Path) -> int:
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
    except OSError as exc:
        raise _refused(cache, f"{name} is a link or not a directory ({exc.strerror})") from None


def _safe_parent(fd: int, name: str, cache: Path) -> None:
    """A directory above the cache: root's or this user's, and writable by no one else
    unless sticky (where no one removes another's entries)."""
    seen = os.fstat(fd)
    others_write = seen.st_mode & 0o022 and not seen.st_mode & stat.S_ISVTX
    if seen.st_uid not in (0, os.geteuid()) or others_write:
        mode = f"{stat.S_IMODE(seen.st_mode):o}"
        raise _refused(cache, f"{name} (owner uid {seen.st_uid}, mode {mode}) is not safe")


def _own_and_closed(fd: int, cache: Path) -> None:
    """The cache itself: this user's, and closed to others (an earlier release made it 0755:
    made 0700 now)."""
    seen = os.fstat(fd)
    if seen.st_uid != os.geteuid() or seen.st_mode & 0o022:
        mode = f"{stat.S_IMODE(seen.st_mode):o}"
        raise _refused(cache, f"not this user's own (owner uid {seen.st_uid}, mode {mode})")
    if seen.st_mode & 0o077:
        os.fchmod(fd, 0o700)


def _refused(cache: Path, why: str) -> RuntimeError:
    return RuntimeError(
        f"node cache {cache}: {why}: remove it, or set {NODE_CACHE_ENV} on the node"
    )


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
    require_python()
    root = node_cache() / "package"
    root.mkdir(exist_ok=True)

    def unzip(staging: Path) -> None:
        with zipfile.ZipFile(io.BytesIO(ray.get(shipment.box[0]))) as archive:
            archive.extractall(staging)

    target = unpacked_once(root, shipment.digest, unzip)
    if str(target) not in sys.path:
        sys.path.insert(0, str(target))
        importlib.invalidate_caches()
    imported = sys.modules.get(PACKAGE)
    if imported is not None and not str(imported.__file__).startswith(f"{target}{os.sep}"):
        # A worker that had another copy imported would run that one, not the driver's.
        raise RuntimeError(f"{PACKAGE} is already imported here from {imported.__file__}")


def unpacked_once(root: Path, digest: str, fill: Callable[[Path], None]) -> Path:
    """`root/digest`, made once per node by `fill(dir)` (the package, a code snapshot):
    under a lock the node's workers share, checked again once taken; filled beside its place
    and renamed into it, then marked complete next to it. A copy without its mark (a crash,
    a temp-dir cleaner) is made again."""
    target = root / digest
    done = root / f"{digest}{COMPLETE}"
    if done.is_file():
        return target
    with file_lock(root / f"{digest}.lock"):
        if done.is_file():  # another worker of this node made it meanwhile
            return target
        staging = Path(tempfile.mkdtemp(prefix=f".{digest[:12]}-", dir=root))
        try:
            fill(staging)
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        done.write_bytes(b"")
    return target


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
        # A failure here is kept for ready(), which the driver waits on: raised from the
        # constructor it would reach the driver only inside Ray's text of a dead actor.
        # Raised again there as itself, its traceback (where it was raised) goes along.
        self._agent: Any = None
        self._failure: Exception | None = None
        try:
            install(shipment)
            from safeagents_batch.backends.ray.node import NodeAgent

            self._agent = NodeAgent()
        except Exception as exc:
            self._failure = exc

    def ready(self) -> dict[str, str]:
        if self._failure is not None:
            raise self._failure
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
