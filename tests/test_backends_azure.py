"""backends/azure.py without an engine: the tar that goes in, the plan per mode and uid, and
the write-back of what the CLI changed (from a tar as `get_archive` gives it)."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from safeagents_batch.backends.docker.azure import (
    AZURE_CONFIG_ENV,
    azure_env,
    azure_plan,
    write_azure_tar,
    write_back_azure_dir,
)
from safeagents_batch.staging.images import AZURE_DIR, CONTAINER_HOME


def azure_folder(root: Path) -> Path:
    folder = root / ".azure"
    (folder / "logs").mkdir(parents=True)
    (folder / "azureProfile.json").write_text('{"subscriptions": []}', encoding="utf-8")
    (folder / "logs" / "one.log").write_text("log", encoding="utf-8")
    (folder / "azureProfile.json").chmod(0o400)  # modes the container user could not read
    (folder / "logs").chmod(0o500)
    os.mkfifo(folder / "pipe")
    (folder / "link").symlink_to("/etc/passwd")
    return folder


def members(folder: Path, uid: int = 10001, gid: int = 10001) -> dict[str, tarfile.TarInfo]:
    out = io.BytesIO()
    write_azure_tar(folder, out, uid, gid)
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        return {m.name: m for m in tar.getmembers()}


def test_the_tar_holds_dirs_and_files_for_the_container_user_and_nothing_else(
    tmp_path: Path,
) -> None:
    found = members(azure_folder(tmp_path), 10001, 10002)
    assert sorted(found) == [
        ".azure",
        ".azure/azureProfile.json",
        ".azure/logs",
        ".azure/logs/one.log",
    ]
    for member in found.values():
        assert (member.uid, member.gid) == (10001, 10002)
        assert member.mode == (0o700 if member.isdir() else 0o600)
    assert found[".azure/azureProfile.json"].size == len('{"subscriptions": []}')


def test_the_tar_reads_file_contents_exactly_and_names_their_digests(tmp_path: Path) -> None:
    folder = azure_folder(tmp_path)
    out = io.BytesIO()
    copied = write_azure_tar(folder, out, 1, 1)
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        handle = tar.extractfile(".azure/logs/one.log")
        assert handle is not None and handle.read() == b"log"
    assert copied == {
        "azureProfile.json": sha(b'{"subscriptions": []}'),
        "logs/one.log": sha(b"log"),
    }


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_ro_is_a_copy_into_a_volume_at_home_whatever_the_uid(tmp_path: Path) -> None:
    folder = azure_folder(tmp_path)
    for uid in (0, 10001, folder.stat().st_uid):
        plan = azure_plan(folder, "ro", uid)
        assert plan.copy_in and not plan.write_back
        [mount] = plan.mounts
        assert (mount["Target"], mount["Type"], mount["Source"]) == (CONTAINER_HOME, "volume", None)


def test_rw_binds_in_place_for_the_owner_and_writes_back_for_another_uid(tmp_path: Path) -> None:
    folder = azure_folder(tmp_path)
    owner = folder.stat().st_uid
    [bind] = azure_plan(folder, "rw", owner).mounts
    assert (bind["Target"], bind["Source"], bind["ReadOnly"]) == (AZURE_DIR, str(folder), False)
    other = azure_plan(folder, "rw", owner + 4242)
    assert other.copy_in and other.write_back


def test_azure_config_dir_names_the_copy_unless_the_user_set_it() -> None:
    assert azure_env({"A": "1"}) == {AZURE_CONFIG_ENV: AZURE_DIR, "A": "1"}
    assert azure_env({AZURE_CONFIG_ENV: "/elsewhere"})[AZURE_CONFIG_ENV] == "/elsewhere"


# -- write back --------------------------------------------------------------------------------


class ArchiveClient:
    """Stands in for docker.DockerClient: `api.get_archive` returns a prepared tar."""

    def __init__(self, data: bytes) -> None:
        self.api = self
        self.data = data

    def get_archive(self, container: str, path: str) -> tuple[Iterator[bytes], dict[str, Any]]:
        assert path == AZURE_DIR
        return iter([self.data[:100], self.data[100:]]), {}


def container_tar(files: dict[str, bytes], extra: tuple[tarfile.TarInfo, ...] = ()) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        top = tarfile.TarInfo(".azure")
        top.type = tarfile.DIRTYPE
        tar.addfile(top)
        for name, data in files.items():
            member = tarfile.TarInfo(f".azure/{name}")
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
        for member in extra:
            tar.addfile(member)
    return out.getvalue()


def test_write_back_replaces_changed_files_keeps_modes_and_adds_new_ones(tmp_path: Path) -> None:
    folder = tmp_path / ".azure"
    folder.mkdir()
    profile = folder / "azureProfile.json"
    profile.write_bytes(b"old")
    profile.chmod(0o640)
    same = folder / "same.json"
    same.write_bytes(b"same")
    same_inode = same.stat().st_ino
    data = container_tar({"azureProfile.json": b"new", "same.json": b"same", "sub/new": b"n"})
    copied = {"azureProfile.json": sha(b"old"), "same.json": sha(b"same")}
    written = write_back_azure_dir(ArchiveClient(data), "c", folder, copied)
    assert written == 2
    assert profile.read_bytes() == b"new" and stat.S_IMODE(profile.stat().st_mode) == 0o640
    assert same.stat().st_ino == same_inode  # unchanged content is not rewritten
    assert (folder / "sub" / "new").read_bytes() == b"n"
    assert stat.S_IMODE((folder / "sub" / "new").stat().st_mode) == 0o600
    assert sorted(p.name for p in folder.iterdir()) == ["azureProfile.json", "same.json", "sub"]


def test_write_back_never_writes_through_a_link_or_outside_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / ".azure"
    folder.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (folder / "linked").symlink_to(outside)
    (folder / "file-link").symlink_to(outside / "target")
    escape = tarfile.TarInfo(".azure/../escaped")
    escape.size = 0
    link = tarfile.TarInfo(".azure/made-link")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    data = container_tar({"linked/x": b"x", "file-link": b"y"}, (escape, link))
    assert write_back_azure_dir(ArchiveClient(data), "c", folder, {}) == 0
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "escaped").exists() and not (folder / "made-link").exists()


def test_write_back_as_root_gives_new_files_to_the_folders_owner(tmp_path: Path) -> None:
    folder = tmp_path / ".azure"
    folder.mkdir()
    os.chown(folder, 4321, 4322)
    data = container_tar({"config": b"[defaults]\n"})
    write_back_azure_dir(ArchiveClient(data), "c", folder, {})
    info = (folder / "config").stat()
    assert (info.st_uid, info.st_gid) == (4321, 4322)


def test_write_back_leaves_a_file_the_host_changed_since_the_copy(tmp_path: Path) -> None:
    """Two runs refresh one token: the first to end writes it; the second's copy is stale."""
    folder = tmp_path / ".azure"
    folder.mkdir()
    (folder / "tokens.json").write_bytes(b"first run's")
    (folder / "config").write_bytes(b"user's")  # created on the host after the copy went in
    data = container_tar({"tokens.json": b"second run's", "config": b"run's", "new": b"n"})
    copied = {"tokens.json": sha(b"original")}
    assert write_back_azure_dir(ArchiveClient(data), "c", folder, copied) == 1
    assert (folder / "tokens.json").read_bytes() == b"first run's"
    assert (folder / "config").read_bytes() == b"user's"
    assert (folder / "new").read_bytes() == b"n"
