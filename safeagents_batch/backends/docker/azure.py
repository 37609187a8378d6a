"""The user's ~/.azure in a container, so that the Azure CLI inside works with their login.

The CLI writes its config, session and token cache into its config dir on every call, so a
read-only bind mount breaks it. Instead:

- `ro` (the default): the folder is copied into the container before it starts, through the
  engine API, into a fresh anonymous volume at the container's home. The copy belongs to the
  container's user whatever the host modes are, lives only as long as the container, and the
  host's files are never opened for writing.
- `rw`: the folder is bound in place when the container's user is its owner (the tool run by
  that user), so refreshed tokens persist at once. When it is not (the tool run as root, the
  container as uid 10001) it is copied in as for `ro`, and what the CLI changed is written
  back when the container ends: the host's modes and owners stay as they are.

Nothing here knows batches or sinks: a backend on a cluster node calls the same functions with
its client, the container's id and the node's folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import secrets
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

import docker
from docker.types import Mount

from safeagents_batch.core.tarsafe import extract
from safeagents_batch.staging.images import AZURE_DIR, CONTAINER_HOME

AZURE_CONFIG_ENV = "AZURE_CONFIG_DIR"
Copied = dict[str, str]  # path below ~/.azure -> sha256 of the file copied in
# Up to this much of the tar stays in memory; a bigger folder (CLI extensions) spills to a
# temp file of the tool's, never into the batch dir.
SPOOL_BYTES = 16 * 1024**2
DIR_NAME = PurePosixPath(AZURE_DIR).name


@dataclass(frozen=True)
class AzurePlan:
    """How one container gets the folder: `mounts` at create, `copy_in` before the start,
    `write_back` after the end."""

    folder: Path
    mounts: tuple[Mount, ...]
    copy_in: bool
    write_back: bool


def azure_plan(folder: Path, mode: str, uid: int) -> AzurePlan:
    """`folder` for a container whose user is `uid`, mounted as `mode` (ro or rw)."""
    folder = folder.resolve()
    if mode == "rw" and uid in (0, folder.stat().st_uid):
        bind = Mount(AZURE_DIR, str(folder), type="bind", read_only=False)
        return AzurePlan(folder, (bind,), copy_in=False, write_back=False)
    # A volume, not the image's home: a read-only root filesystem refuses archives, a volume
    # on it does not; and a fresh one is removed with the container (`remove -v`).
    home = Mount(CONTAINER_HOME, None, type="volume")
    return AzurePlan(folder, (home,), copy_in=True, write_back=mode == "rw")


def azure_env(env: dict[str, str]) -> dict[str, str]:
    """The container's env with AZURE_CONFIG_DIR naming the copy (a value the user set wins)."""
    return {AZURE_CONFIG_ENV: AZURE_DIR, **env}


# -- copy in ---------------------------------------------------------------------------------


def copy_azure_dir(
    client: docker.DockerClient, container_id: str, folder: Path, uid: int, gid: int
) -> Copied:
    """Puts `folder` into the created container as `~/.azure`, owned by uid:gid, dirs 0700 and
    files 0600; returns what it put there, for `write_back_azure_dir`. Raises the engine's
    error (a run that cannot get its credentials must not start)."""
    with tempfile.SpooledTemporaryFile(SPOOL_BYTES) as spool:
        copied = write_azure_tar(folder, spool, uid, gid)
        spool.seek(0)
        client.api.put_archive(container_id, CONTAINER_HOME, spool)
    return copied


def write_azure_tar(folder: Path, out: IO[bytes], uid: int, gid: int) -> Copied:
    """A tar of `folder` under `.azure/`: directories and regular files only (links, FIFOs
    and sockets are left out), read without following links. Returns each file's digest."""
    copied: Copied = {}
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_member(DIR_NAME, tarfile.DIRTYPE, 0o700, uid, gid, folder.stat().st_mtime))
        for rel, path, info in _entries(folder):
            name = f"{DIR_NAME}/{rel}"
            if stat.S_ISDIR(info.st_mode):
                tar.addfile(_member(name, tarfile.DIRTYPE, 0o700, uid, gid, info.st_mtime))
                continue
            with _open_regular(path) as handle:
                size = os.fstat(handle.fileno()).st_size
                member = _member(name, tarfile.REGTYPE, 0o600, uid, gid, info.st_mtime, size)
                reader = _Hashing(handle)
                tar.addfile(member, reader)
                copied[rel] = reader.digest.hexdigest()
    return copied


class _Hashing:
    """A reader that digests what passes through it: each file is read once."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.digest.update(data)
        return data


def _entries(folder: Path) -> Iterator[tuple[str, Path, os.stat_result]]:
    for root, dirs, files in os.walk(folder):  # does not descend into linked dirs
        for name in sorted(dirs) + sorted(files):
            path = Path(root) / name
            info = path.lstat()
            if stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode):
                yield path.relative_to(folder).as_posix(), path, info
        dirs.sort()


def _open_regular(path: Path) -> IO[bytes]:
    """Opened without following a link swapped in since the walk: a regular file or nothing."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    return os.fdopen(fd, "rb")


def _member(
    name: str, kind: bytes, mode: int, uid: int, gid: int, mtime: float, size: int = 0
) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type, member.mode, member.uid, member.gid = kind, mode, uid, gid
    member.mtime, member.size = int(mtime), size
    return member


# -- write back ------------------------------------------------------------------------------


def write_back_azure_dir(
    client: docker.DockerClient, container_id: str, folder: Path, copied: Mapping[str, str]
) -> int:
    """Copies what the container's `~/.azure` holds back into `folder` (rw as another uid):
    new and changed regular files, each replaced atomically, keeping the mode and owner of the
    file it replaces (new ones: 0600, the folder's owner). A file the host changed since
    `copied` (what `copy_azure_dir` put in) stays as the host has it: a concurrent run, or the
    user, wrote it first, and a stale copy must not undo that. Files the container deleted
    stay. Returns how many files were written."""
    chunks, _ = client.api.get_archive(container_id, AZURE_DIR)
    with tempfile.SpooledTemporaryFile(SPOOL_BYTES) as spool:
        for chunk in chunks:
            spool.write(chunk)
        spool.seek(0)
        with tarfile.open(fileobj=spool, mode="r|") as tar:
            return sum(_write_back_member(tar, member, folder, copied) for member in tar)


def _write_back_member(
    tar: tarfile.TarFile, member: tarfile.TarInfo, folder: Path, copied: Mapping[str, str]
) -> bool:
    rel = _relative(member.name)
    if rel is None:
        return False
    target = folder.joinpath(*rel.parts)
    if member.isdir():
        _make_dir(folder, rel)
        return False
    handle = tar.extractfile(member) if member.isreg() else None
    if handle is None or not _make_dir(folder, rel.parent):
        return False
    data = handle.read()
    host = _host_digest(target)
    if host == hashlib.sha256(data).hexdigest() or host != copied.get(rel.as_posix()):
        return False  # the same already, or changed on the host since the copy went in
    return _replace_file(target, data, folder)


def _relative(name: str) -> PurePosixPath | None:
    """The member's path below the archive's top dir (`.azure/...`); None for the top dir
    itself and for anything that would leave it."""
    parts = PurePosixPath(name).parts[1:]
    if not parts or any(p in ("..", "") or "/" in p for p in parts):
        return None
    return PurePosixPath(*parts)


def _make_dir(folder: Path, rel: PurePosixPath) -> bool:
    """Creates the dirs of `rel` below `folder`; False where a non-directory (a link) is in
    the way, so nothing is ever written through a link."""
    current = folder
    for part in rel.parts:
        current = current / part
        try:
            info = current.lstat()
        except FileNotFoundError:
            current.mkdir(mode=0o700)
            _own_like(current, folder)
            continue
        if not stat.S_ISDIR(info.st_mode):
            return False
    return True


def _host_digest(target: Path) -> str | None:
    """The digest of the host's file; None when there is none; a link or a FIFO is `-`."""
    try:
        info = target.lstat()
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return "-"
    return hashlib.sha256(target.read_bytes()).hexdigest()


def _replace_file(target: Path, data: bytes, folder: Path) -> bool:
    try:
        old: os.stat_result | None = target.lstat()
    except FileNotFoundError:
        old = None
    if old is not None and not stat.S_ISREG(old.st_mode):
        return False  # a link or a FIFO where the container had a file: left alone
    temp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        if old is not None:
            os.chmod(temp, stat.S_IMODE(old.st_mode))
            _chown(temp, old.st_uid, old.st_gid)
        else:
            _own_like(temp, folder)
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return True


def _own_like(path: Path, folder: Path) -> None:
    info = folder.stat()
    _chown(path, info.st_uid, info.st_gid)


def _chown(path: Path, uid: int, gid: int) -> None:
    if os.geteuid() == 0:  # only root can give a file away; anyone else made it theirs
        os.chown(path, uid, gid, follow_symlinks=False)


@contextlib.contextmanager
def private_copy(tar: bytes, user: str, parent: Path | None, prefix: str) -> Iterator[Path]:
    """The driver's ~/.azure (as `tar`) unpacked for one attempt on a cluster node: a new
    directory under `parent`, mode 0700, owned by the container's `user` (uid:gid) when
    root can give it away, removed after the attempt."""
    target = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        extract(io.BytesIO(tar), target)
        uid, gid = (int(part) for part in user.split(":"))
        if os.getuid() == 0:
            for path in [target, *target.rglob("*")]:
                os.chown(path, uid, gid, follow_symlinks=False)
        yield target
    finally:
        shutil.rmtree(target, ignore_errors=True)
