"""records/safedir.py on a real file system: links at any component, FIFOs and devices where
files are read or written, caps, atomic writes. No engine."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from safeagents_batch.core.errors import UsageError
from safeagents_batch.records.safedir import (
    SafeDir,
    UnsafePath,
    inside,
    read_batch_file,
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    batch = tmp_path / "batch"
    (batch / "runs" / "r" / "attempt-1").mkdir(parents=True)
    (batch / "runs" / "r" / "attempt-1" / "stderr.log").write_bytes(b"one\ntwo\nthree\n")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "key").write_bytes(b"SECRET")
    return batch


def test_a_file_is_read_whole_and_by_its_tail(root: Path) -> None:
    with SafeDir(root) as safe:
        assert safe.read("runs/r/attempt-1/stderr.log", 100) == b"one\ntwo\nthree\n"
        assert safe.read_tail("runs/r/attempt-1/stderr.log", 6) == (b"three\n", 14)


def test_a_read_over_its_limit_is_refused(root: Path) -> None:
    with SafeDir(root) as safe, pytest.raises(OSError) as raised:
        safe.read("runs/r/attempt-1/stderr.log", 5)
    assert raised.value.errno == errno.EFBIG


def test_a_link_at_the_last_component_is_not_followed(root: Path, tmp_path: Path) -> None:
    (root / "result.json").symlink_to(tmp_path / "outside" / "key")
    with SafeDir(root) as safe, pytest.raises(UnsafePath, match="a link, not followed"):
        safe.read("result.json", 100)


def test_a_link_at_a_directory_component_is_not_followed(root: Path, tmp_path: Path) -> None:
    (root / "runs" / "x").symlink_to(tmp_path / "outside")
    with SafeDir(root) as safe:
        with pytest.raises(UnsafePath, match="x is a link or a file, not a directory"):
            safe.read("runs/x/key", 100)
        assert safe.kind("runs/x") == "other"
        assert safe.kind("runs/x/key") is None
        assert safe.files("runs", 10) == (["r/attempt-1/stderr.log"], 1)


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_fifo_or_a_device_is_refused_without_waiting(root: Path, kind: str) -> None:
    target = root / "manifest.json"
    if kind == "fifo":
        os.mkfifo(target)
    else:
        os.mknod(target, 0o600 | 0o020000, os.makedev(1, 5))  # /dev/zero's numbers
    with SafeDir(root) as safe:
        with pytest.raises(UnsafePath, match="not a regular file"):
            safe.read("manifest.json", 100)
        with pytest.raises(UnsafePath, match="not a regular file"):
            safe.open_lock("manifest.json")


def test_a_write_replaces_a_planted_link_and_never_writes_through_it(
    root: Path, tmp_path: Path
) -> None:
    key = tmp_path / "outside" / "key"
    (root / "results.csv").symlink_to(key)
    with SafeDir(root) as safe:
        safe.write("results.csv", b"a,b\n")
    assert key.read_bytes() == b"SECRET"
    assert not (root / "results.csv").is_symlink()
    assert (root / "results.csv").read_bytes() == b"a,b\n"
    assert sorted(p.name for p in root.iterdir()) == ["results.csv", "runs"]  # no temp left


def test_a_write_below_a_linked_directory_is_refused(root: Path, tmp_path: Path) -> None:
    (root / "report").symlink_to(tmp_path / "outside")
    with SafeDir(root) as safe, pytest.raises(UnsafePath):
        safe.write("report/page.html", b"x")
    assert sorted(p.name for p in (tmp_path / "outside").iterdir()) == ["key"]


def test_a_write_makes_the_directories_it_needs(root: Path) -> None:
    with SafeDir(root) as safe:
        safe.write("images/a/b.log", b"built\n", sync=True)
    assert (root / "images" / "a" / "b.log").read_bytes() == b"built\n"


def test_the_lock_file_is_made_and_never_truncated(root: Path) -> None:
    (root / ".lock").write_bytes(b"1234\n")
    with SafeDir(root) as safe:
        fd = safe.open_lock(".lock")
    try:
        assert os.read(fd, 10) == b"1234\n"
    finally:
        os.close(fd)


def test_files_lists_regular_files_only_and_counts_past_the_limit(root: Path) -> None:
    attempt = root / "runs" / "r" / "attempt-1"
    for i in range(5):
        (attempt / f"f{i}").write_bytes(b"")
    os.mkfifo(attempt / "pipe")
    (attempt / "link").symlink_to("/etc/passwd")
    with SafeDir(root) as safe:
        listed, count = safe.files("runs/r/attempt-1", 3)
    assert (listed, count) == (["f0", "f1", "f2"], 6)


@pytest.mark.parametrize(
    ("recorded", "expected"),
    [
        ("runs/r/attempt-1", "runs/r/attempt-1"),
        ("/old/place/batch/runs/r/attempt-1", "runs/r/attempt-1"),  # manifest version 1
        ("./runs//r/", "runs/r"),
    ],
)
def test_a_recorded_path_is_taken_relative_to_the_batch_dir(recorded: str, expected: str) -> None:
    assert inside(recorded, "/old/place/batch") == expected


@pytest.mark.parametrize("recorded", ["/", "/etc", "../x", "runs/../../x", "/old/place/other"])
def test_a_recorded_path_that_leaves_the_batch_dir_is_refused(recorded: str) -> None:
    with pytest.raises(UnsafePath):
        inside(recorded, "/old/place/batch")


def test_a_batch_file_that_is_missing_or_unreadable_is_one_line(root: Path) -> None:
    with pytest.raises(UsageError, match=r"^no manifest here$"):
        read_batch_file(root, "manifest.json", 100, missing="no manifest here")
    os.mkfifo(root / "manifest.json")
    with pytest.raises(UsageError, match=r"manifest\.json: not a regular file"):
        read_batch_file(root, "manifest.json", 100, missing="no manifest here")


def test_a_listing_holds_one_descriptor_per_level_and_stops_within_its_budget(
    root: Path,
) -> None:
    """Many directories, and a chain deeper than the walk goes: bounded work, no fd left."""
    attempt = root / "runs" / "r" / "attempt-1"
    for i in range(300):
        (attempt / f"d{i:03d}").mkdir()
        (attempt / f"d{i:03d}" / "f").write_bytes(b"")
    deep = attempt / "z"
    for level in range(40):
        deep.mkdir()
        (deep / f"at-{level}").write_bytes(b"")
        deep = deep / "z"
    before = len(os.listdir("/proc/self/fd"))
    with SafeDir(root) as safe:
        listed, count = safe.files("runs/r/attempt-1", 10)
        assert len(listed) <= 10 and count <= 100  # 10 x the limit, directories included
        listed, count = safe.files("runs/r/attempt-1/z", 100)
    assert len(os.listdir("/proc/self/fd")) == before
    # The walk enters 32 levels below the directory listed.
    assert count == 33 and "at-0" in listed and not any(n.endswith("at-33") for n in listed)
