"""Strict extraction of shipped archives (tarsafe.extract): what tarfile's `data` filter
promises, on every supported Python (Debian 12's 3.11.2 has no filter)."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from safeagents_batch.core.tarsafe import extract


def archive(*members: tuple[tarfile.TarInfo, bytes | None]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    buffer.seek(0)
    return buffer


def member(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode = kind, mode
    return info


@pytest.fixture
def target(tmp_path: Path) -> Path:
    path = tmp_path / "target"
    path.mkdir()
    return path


def test_files_and_dirs_land_with_their_modes_exactly_whatever_the_umask(target: Path) -> None:
    source = archive(
        (member("pkg", tarfile.DIRTYPE, 0o755), None),
        (member("pkg/run.sh", mode=0o755), b"echo\n"),
        (member("pkg/data.txt", mode=0o600), b"secret\n"),
        (member("top.py"), b"print(1)\n"),
    )
    old = os.umask(0o077)
    try:
        extract(source, target)
    finally:
        os.umask(old)
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == [
        "pkg",
        "pkg/data.txt",
        "pkg/run.sh",
        "top.py",
    ]
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in target.rglob("*")}
    assert modes == {"pkg": 0o755, "run.sh": 0o755, "data.txt": 0o600, "top.py": 0o644}
    assert (target / "pkg" / "data.txt").read_bytes() == b"secret\n"


def test_set_id_bits_and_group_or_other_write_are_dropped(target: Path) -> None:
    extract(archive((member("x", mode=0o6777), b"#!/bin/sh\n")), target)
    assert stat.S_IMODE((target / "x").stat().st_mode) == 0o755


@pytest.mark.parametrize(
    ("name", "kind", "why"),
    [
        ("link", tarfile.SYMTYPE, "a symbolic link"),
        ("hard", tarfile.LNKTYPE, "a hard link"),
        ("fifo", tarfile.FIFOTYPE, "a FIFO"),
        ("dev", tarfile.CHRTYPE, "a character device"),
        ("blk", tarfile.BLKTYPE, "a block device"),
    ],
)
def test_anything_but_files_and_dirs_is_refused(
    target: Path, name: str, kind: bytes, why: str
) -> None:
    info = member(name, kind)
    info.linkname = "/etc/passwd"
    with pytest.raises(ValueError, match=f"{name} in the archive is {why}"):
        extract(archive((info, None)), target)
    assert list(target.iterdir()) == []


@pytest.mark.parametrize("name", ["/etc/evil", "../evil", "a/../../evil"])
def test_names_that_leave_the_target_are_refused(target: Path, name: str) -> None:
    with pytest.raises(ValueError, match="unsafe path"):
        extract(archive((member(name), b"x")), target)
    assert not (target.parent / "evil").exists()


def test_a_file_through_a_link_planted_in_the_target_is_never_written(
    target: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (target / "sub").symlink_to(outside)
    with pytest.raises(OSError):
        extract(archive((member("sub/f"), b"x")), target)
    assert list(outside.iterdir()) == []


def test_a_name_given_twice_is_an_error_not_an_overwrite(target: Path) -> None:
    with pytest.raises(FileExistsError):
        extract(archive((member("f"), b"first"), (member("f"), b"second")), target)
    assert (target / "f").read_bytes() == b"first"
